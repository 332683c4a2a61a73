"""Tokenization policies: which tenant, tables and PII columns, from YAML or a dict.

The policy file maps a producer data product and an output port to a tenant and its tables::

    key_env: PROVISIONER_TOKENIZE_KEY        # optional; where the CLI reads the HMAC key
    policies:
      - producer: sales            # producer data product namespace
        output_port: customers     # output port namespace, or "*" for every port of the producer
        tenant: sales              # connection from PROVISIONER_TENANT_SALES_*
        max_columns: 10            # optional; a run over more columns fails before any write
        residual_pii: warn         # optional; warn (default) or fail: PII left in other columns blocks the grant
        tables:
          - schema: public
            table: customers
            columns: [email, phone]
          - schema: public
            table: contacts
            column_tags: {email: [pii-email], phone: [pii-phone], name: [public]}  # keeps tags pii-*
      - producer: sales
        output_port: daily_totals
        tokenize: none             # a decision too: this port holds no PII, grant it as it is

``producer`` and ``output_port`` are portal namespaces (``^[a-z0-9+=,.@_-]+$``, at most 64 characters). They are
compared with the portal's namespaces exactly, after one normalisation of both sides (Unicode NFKC, surrounding
whitespace removed, lower case); a name that is no portal namespace after it (a Cyrillic U+0441 for ``c``, a
``/``) is refused when the file is loaded. :meth:`PolicyFile.decide` also reports *look-alikes*: entries that differ
from a port only in separators (``customer-segments`` for ``customer_segments``), so a typo makes the grant wait
instead of letting the port fall through to another entry or to none.

A single policy (for the CLI or programmatic use) may also be written flat:
``{tenant: sales, schema: public, table: customers, columns: [email]}`` or with a ``tables`` list.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import InvalidName
from provisioner.names import NAMESPACE_MAX_LENGTH, NAMESPACE_PATTERN, SqlName
from provisioner.tokenize.errors import PolicyError
from provisioner.tokenize.tokens import DEFAULT_KEY_ENV

PII_TAG_PREFIX = "pii-"
_TENANT = re.compile(r"[a-z0-9](?:[a-z0-9_]{0,62})")
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
_SEPARATORS = re.compile(r"[+=,.@_-]+")
WILDCARD = "*"
NO_TOKENIZATION = "none"  # `tokenize: none`: an explicit decision that a port is granted as it is
RESIDUAL_PII_MODES = ("warn", "fail")  # what PII found after tokenization, in columns not tokenized, does to a grant


def normalize_namespace(value: str) -> str:
    """How a policy entry and a portal namespace are compared: Unicode NFKC, trimmed, lower case."""
    return unicodedata.normalize("NFKC", value).strip().lower()


def namespace_skeleton(value: str) -> str:
    """A namespace with its separators folded into one ``-``: names that only look alike share a skeleton."""
    return _SEPARATORS.sub("-", normalize_namespace(value)).strip("-")


def is_pii_tag(tag: str) -> bool:
    """True for tags of the form ``pii-*`` (case-insensitive)."""
    return tag.lower().startswith(PII_TAG_PREFIX) and len(tag) > len(PII_TAG_PREFIX)


@dataclass(frozen=True)
class TableTarget:
    """One table and the PII columns to tokenize in it."""

    schema: SqlName
    table: SqlName
    columns: tuple[SqlName, ...]

    @property
    def name(self) -> str:
        """``schema.table``, for logs, records and progress."""
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class TableSpec:
    """A table as the policy file declares it: explicit columns, or columns with their tags."""

    schema: SqlName
    table: SqlName
    columns: tuple[SqlName, ...] = ()
    column_tags: Mapping[SqlName, tuple[str, ...]] | None = None

    def target(self, port_tags: Sequence[str] = ()) -> TableTarget:
        """The columns to tokenize: explicit ones, or tagged ``pii-*`` ones narrowed by the port's pii tags.

        Narrowing applies only to tagged columns: a column listed without tags is always tokenized.
        """
        if self.column_tags is None:
            return TableTarget(self.schema, self.table, self.columns)
        wanted = {t.lower() for t in port_tags if is_pii_tag(t)}
        kept = []
        for column, tags in self.column_tags.items():
            pii = {t.lower() for t in tags if is_pii_tag(t)}
            if pii and (not wanted or pii & wanted):
                kept.append(column)
        return TableTarget(self.schema, self.table, tuple(kept))


@dataclass(frozen=True)
class TokenizePolicy:
    """What one run tokenizes: a tenant, its tables and columns, and an optional column limit."""

    tenant: str
    tables: tuple[TableTarget, ...]
    max_columns: int | None = None
    name: str = ""
    residual_pii: str = "warn"

    @property
    def column_count(self) -> int:
        """Number of PII columns over every table."""
        return sum(len(t.columns) for t in self.tables)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, tags: Sequence[str] = ()) -> TokenizePolicy:
        """Build a policy from a flat dict (``schema``/``table``/``columns``) or one with a ``tables`` list."""
        where = "policy"
        _require_mapping(data, where)
        tenant = _tenant(data.get("tenant"), where)
        specs = _table_specs(data, where)
        name = str(data.get("name") or f"{tenant}:{','.join(f'{s.schema}.{s.table}' for s in specs)}")
        return cls(
            tenant=tenant,
            tables=tuple(s.target(tags) for s in specs),
            max_columns=_max_columns(data.get("max_columns"), where),
            name=name,
            residual_pii=_residual_pii(data.get("residual_pii"), where),
        )


@dataclass(frozen=True)
class PolicyEntry:
    """One entry of a policy file: a producer's output port (or ``*``) mapped to a tenant and tables.

    ``tokenize`` is False for an entry written ``tokenize: none``: no tenant, no tables, grant as it is.
    """

    producer: str | None
    output_port: str
    tenant: str
    tables: tuple[TableSpec, ...]
    max_columns: int | None = None
    tokenize: bool = True
    residual_pii: str = "warn"

    @property
    def label(self) -> str:
        """``producer/output_port`` as written in the file (after normalisation)."""
        return f"{self.producer}/{self.output_port}"

    def policy(self, tags: Sequence[str] = ()) -> TokenizePolicy:
        """The runnable policy, with tagged columns narrowed by the output port's ``pii-*`` tags."""
        label = f"{self.producer}/{self.output_port}" if self.producer else self.tenant
        return TokenizePolicy(
            tenant=self.tenant,
            tables=tuple(s.target(tags) for s in self.tables),
            max_columns=self.max_columns,
            name=label,
            residual_pii=self.residual_pii,
        )


@dataclass(frozen=True)
class PolicyFile:
    """A parsed policy file: where the key lives and the entries, in file order."""

    entries: tuple[PolicyEntry, ...]
    key_env: str = DEFAULT_KEY_ENV
    source: str = field(default="<dict>", compare=False)

    def for_output_port(self, producer: str, output_port: str, tags: Sequence[str] = ()) -> TokenizePolicy | None:
        """The policy of a producer's output port: an exact port entry first, then ``*``; None if none.

        None too for an entry that says ``tokenize: none``; :meth:`decide` tells the two apart.
        """
        entry = self.entry_for(producer, output_port)
        return entry.policy(tags) if entry is not None and entry.tokenize else None

    def entry_for(self, producer: str, output_port: str) -> PolicyEntry | None:
        """The entry of a producer's output port, compared after normalisation: the exact port, then ``*``."""
        producer, output_port = normalize_namespace(producer), normalize_namespace(output_port)
        exact = [e for e in self.entries if e.producer == producer and e.output_port == output_port]
        wildcard = [e for e in self.entries if e.producer == producer and e.output_port == WILDCARD]
        for entry in (*exact, *wildcard):
            return entry
        return None

    def decide(self, producer: str, output_port: str) -> PortDecision:
        """The entry that decides a port, and the entries that only look like it (see the module docstring).

        Look-alikes are reported whenever the port has no entry of its own: a wildcard entry of the producer
        must not hide an entry that was meant for this port but misspelt.
        """
        producer_n, port_n = normalize_namespace(producer), normalize_namespace(output_port)
        entry = self.entry_for(producer_n, port_n)
        if entry is not None and entry.output_port == port_n:
            return PortDecision(entry)
        producer_s, port_s = namespace_skeleton(producer_n), namespace_skeleton(port_n)
        lookalikes = tuple(
            e.label
            for e in self.entries
            if e.producer is not None
            and namespace_skeleton(e.producer) == producer_s
            and (e.output_port == WILDCARD or namespace_skeleton(e.output_port) == port_s)
            and e is not entry
            and (e.producer, e.output_port) != (producer_n, port_n)
        )
        return PortDecision(entry, lookalikes)

    def policies(self, tenant: str | None = None) -> list[TokenizePolicy]:
        """Every entry that tokenizes, as a policy (optionally only one tenant's), for the CLI."""
        return [e.policy() for e in self.entries if e.tokenize and (tenant is None or e.tenant == tenant.lower())]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "<dict>") -> PolicyFile:
        """Parse the file shape (``key_env`` + ``policies``) or a single flat policy."""
        _require_mapping(data, source)
        key_env = data.get("key_env", DEFAULT_KEY_ENV)
        if not isinstance(key_env, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key_env):
            raise PolicyError(f"{source}: key_env must be an environment variable name, got {key_env!r}")
        if "policies" not in data:
            single = TokenizePolicy.from_dict(data)
            entry = PolicyEntry(
                producer=None,
                output_port="*",
                tenant=single.tenant,
                tables=_table_specs(data, source),
                max_columns=single.max_columns,
                residual_pii=single.residual_pii,
            )
            return cls(entries=(entry,), key_env=key_env, source=source)
        raw = data["policies"]
        if not isinstance(raw, list) or not raw:
            raise PolicyError(f"{source}: 'policies' must be a non-empty list")
        entries = []
        seen: dict[tuple[str, str], int] = {}
        for i, item in enumerate(raw):
            where = f"{source}: policies[{i}]"
            _require_mapping(item, where)
            producer = _namespace(item.get("producer"), "producer", where, wildcard=False)
            port = _namespace(item.get("output_port", WILDCARD), "output_port", where, wildcard=True)
            if (producer, port) in seen:
                raise PolicyError(
                    f"{where}: {producer}/{port} already has an entry (policies[{seen[producer, port]}]); "
                    "one entry per output port"
                )
            seen[producer, port] = i
            if _no_tokenization(item, where):
                entries.append(PolicyEntry(producer=producer, output_port=port, tenant="", tables=(), tokenize=False))
                continue
            entries.append(
                PolicyEntry(
                    producer=producer,
                    output_port=port,
                    tenant=_tenant(item.get("tenant"), where),
                    tables=_table_specs(item, where),
                    max_columns=_max_columns(item.get("max_columns"), where),
                    residual_pii=_residual_pii(item.get("residual_pii"), where),
                )
            )
        return cls(entries=tuple(entries), key_env=key_env, source=source)


@dataclass(frozen=True)
class PortDecision:
    """What a policy file says about one output port: its entry (or None) and entries that only look like it."""

    entry: PolicyEntry | None
    lookalikes: tuple[str, ...] = ()


def load_policy_file(path: str | Path) -> PolicyFile:
    """Read and validate a YAML policy file; PolicyError names the file and the entry at fault."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path} is not valid YAML: {exc}") from exc
    return PolicyFile.from_dict(data, source=str(path))


def _namespace(value: object, key: str, where: str, *, wildcard: bool) -> str:
    if isinstance(value, str):
        normal = normalize_namespace(value)
        if wildcard and normal == WILDCARD:
            return WILDCARD
        if len(normal) <= NAMESPACE_MAX_LENGTH and _NAMESPACE.fullmatch(normal):
            return normal
    what = "a portal namespace or '*'" if wildcard else "a portal namespace"
    hint = ""
    if isinstance(value, str) and not value.isascii():
        odd = sorted({f"U+{ord(c):04X}" for c in normalize_namespace(value) if not c.isascii()})
        hint = f" ({', '.join(odd)} look like letters but are not in the portal's alphabet)" if odd else ""
    raise PolicyError(
        f"{where}: '{key}' must be {what} (a-z, 0-9 and + = , . @ _ -; at most {NAMESPACE_MAX_LENGTH}), "
        f"got {value!r}{hint}"
    )


def _no_tokenization(item: Mapping[str, Any], where: str) -> bool:
    """True for ``tokenize: none``; refuses any other ``tokenize`` value and ``none`` beside tables."""
    if "tokenize" not in item:
        return False
    value = item["tokenize"]
    if not isinstance(value, str) or value.strip().lower() != NO_TOKENIZATION:
        raise PolicyError(f"{where}: 'tokenize' can only be 'none' (grant the port untokenized), got {value!r}")
    extra = sorted(k for k in ("tenant", "tables", "table", "columns", "column_tags", "max_columns") if k in item)
    if extra:
        raise PolicyError(f"{where}: 'tokenize: none' takes no {', '.join(extra)}: remove them or the 'tokenize' line")
    return True


def _require_mapping(data: object, where: str) -> None:
    if not isinstance(data, Mapping):
        raise PolicyError(f"{where}: expected a mapping, got {type(data).__name__}")


def _tenant(value: object, where: str) -> str:
    if not isinstance(value, str) or not _TENANT.fullmatch(value.lower()):
        raise PolicyError(f"{where}: 'tenant' must be a tenant id (letters, digits, '_'), got {value!r}")
    return value.lower()


def _max_columns(value: object, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise PolicyError(f"{where}: 'max_columns' must be a whole number above 0, got {value!r}")
    return value


def _residual_pii(value: object, where: str) -> str:
    if value is None:
        return "warn"
    if not isinstance(value, str) or value.strip().lower() not in RESIDUAL_PII_MODES:
        raise PolicyError(f"{where}: 'residual_pii' must be 'warn' or 'fail', got {value!r}")
    return value.strip().lower()


def _ident(value: object, where: str) -> SqlName:
    try:
        return SqlName(value)
    except InvalidName as exc:
        raise PolicyError(f"{where}: {exc}") from None


def _table_specs(data: Mapping[str, Any], where: str) -> tuple[TableSpec, ...]:
    if "tables" in data:
        raw = data["tables"]
        if not isinstance(raw, list) or not raw:
            raise PolicyError(f"{where}: 'tables' must be a non-empty list")
        items = [(f"{where}.tables[{i}]", t) for i, t in enumerate(raw)]
    elif "table" in data:
        items = [(where, data)]
    else:
        raise PolicyError(f"{where}: give 'tables' (a list) or 'schema', 'table' and 'columns'")
    specs = []
    seen: set[tuple[str, str]] = set()
    for at, item in items:
        _require_mapping(item, at)
        schema = _ident(item.get("schema", "public"), at)
        table = _ident(item.get("table"), at)
        if (schema, table) in seen:
            raise PolicyError(f"{at}: table {schema}.{table} is listed twice")
        seen.add((schema, table))
        has_columns, has_tags = "columns" in item, "column_tags" in item
        if has_columns == has_tags:
            raise PolicyError(f"{at}: give exactly one of 'columns' (a list) or 'column_tags' (column: [tags])")
        if has_columns:
            cols = item["columns"]
            if not isinstance(cols, list) or not cols:
                raise PolicyError(f"{at}: 'columns' must be a non-empty list of column names")
            columns = tuple(_ident(c, at) for c in cols)
            if len(set(columns)) != len(columns):
                raise PolicyError(f"{at}: a column is listed twice in {list(columns)}")
            specs.append(TableSpec(schema, table, columns=columns))
        else:
            tags = item["column_tags"]
            if not isinstance(tags, Mapping) or not tags:
                raise PolicyError(f"{at}: 'column_tags' must map column names to lists of tags")
            parsed: dict[SqlName, tuple[str, ...]] = {}
            for col, col_tags in tags.items():
                if isinstance(col_tags, str):
                    col_tags = [col_tags]
                if not isinstance(col_tags, list) or not all(isinstance(t, str) for t in col_tags):
                    raise PolicyError(f"{at}: tags of column {col!r} must be a list of strings")
                parsed[_ident(col, at)] = tuple(col_tags)
            specs.append(TableSpec(schema, table, column_tags=parsed))
    return tuple(specs)
