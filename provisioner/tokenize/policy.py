"""Tokenization policies: which tenant, tables and PII columns, from YAML or a dict.

The policy file maps a producer data product and an output port to a tenant and its tables::

    key_env: PROVISIONER_TOKENIZE_KEY        # optional; where the CLI reads the HMAC key
    policies:
      - producer: sales            # producer data product namespace
        output_port: customers     # output port namespace, or "*" for every port of the producer
        tenant: sales              # connection from PROVISIONER_TENANT_SALES_*
        max_columns: 10            # optional; a run over more columns fails before any write
        tables:
          - schema: public
            table: customers
            columns: [email, phone]
          - schema: public
            table: contacts
            column_tags: {email: [pii-email], phone: [pii-phone], name: [public]}  # keeps tags pii-*

A single policy (for the CLI or programmatic use) may also be written flat:
``{tenant: sales, schema: public, table: customers, columns: [email]}`` or with a ``tables`` list.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from provisioner.errors import InvalidName
from provisioner.names import Identifier
from provisioner.tokenize.errors import PolicyError
from provisioner.tokenize.tokens import DEFAULT_KEY_ENV

PII_TAG_PREFIX = "pii-"
_TENANT = re.compile(r"[a-z0-9](?:[a-z0-9_]{0,62})")
_PORT = re.compile(r"\*|[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def is_pii_tag(tag: str) -> bool:
    """True for tags of the form ``pii-*`` (case-insensitive)."""
    return tag.lower().startswith(PII_TAG_PREFIX) and len(tag) > len(PII_TAG_PREFIX)


@dataclass(frozen=True)
class TableTarget:
    """One table and the PII columns to tokenize in it."""

    schema: Identifier
    table: Identifier
    columns: tuple[Identifier, ...]

    @property
    def name(self) -> str:
        """``schema.table``, for logs, records and progress."""
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class TableSpec:
    """A table as the policy file declares it: explicit columns, or columns with their tags."""

    schema: Identifier
    table: Identifier
    columns: tuple[Identifier, ...] = ()
    column_tags: Mapping[Identifier, tuple[str, ...]] | None = None

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
        )


@dataclass(frozen=True)
class PolicyEntry:
    """One entry of a policy file: a producer's output port (or ``*``) mapped to a tenant and tables."""

    producer: str | None
    output_port: str
    tenant: str
    tables: tuple[TableSpec, ...]
    max_columns: int | None = None

    def policy(self, tags: Sequence[str] = ()) -> TokenizePolicy:
        """The runnable policy, with tagged columns narrowed by the output port's ``pii-*`` tags."""
        label = f"{self.producer}/{self.output_port}" if self.producer else self.tenant
        return TokenizePolicy(
            tenant=self.tenant,
            tables=tuple(s.target(tags) for s in self.tables),
            max_columns=self.max_columns,
            name=label,
        )


@dataclass(frozen=True)
class PolicyFile:
    """A parsed policy file: where the key lives and the entries, in file order."""

    entries: tuple[PolicyEntry, ...]
    key_env: str = DEFAULT_KEY_ENV
    source: str = field(default="<dict>", compare=False)

    def for_output_port(self, producer: str, output_port: str, tags: Sequence[str] = ()) -> TokenizePolicy | None:
        """The policy of a producer's output port: an exact port entry first, then ``*``; None if none."""
        exact = [e for e in self.entries if e.producer == producer and e.output_port == output_port]
        wildcard = [e for e in self.entries if e.producer == producer and e.output_port == "*"]
        for entry in (*exact, *wildcard):
            return entry.policy(tags)
        return None

    def policies(self, tenant: str | None = None) -> list[TokenizePolicy]:
        """Every entry as a policy (optionally only one tenant's), for the CLI."""
        return [e.policy() for e in self.entries if tenant is None or e.tenant == tenant.lower()]

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
            )
            return cls(entries=(entry,), key_env=key_env, source=source)
        raw = data["policies"]
        if not isinstance(raw, list) or not raw:
            raise PolicyError(f"{source}: 'policies' must be a non-empty list")
        entries = []
        for i, item in enumerate(raw):
            where = f"{source}: policies[{i}]"
            _require_mapping(item, where)
            producer = item.get("producer")
            if not isinstance(producer, str) or not _PORT.fullmatch(producer) or producer == "*":
                raise PolicyError(f"{where}: 'producer' must be a data product namespace, got {producer!r}")
            port = item.get("output_port", "*")
            if not isinstance(port, str) or not _PORT.fullmatch(port):
                raise PolicyError(f"{where}: 'output_port' must be a namespace or '*', got {port!r}")
            entries.append(
                PolicyEntry(
                    producer=producer,
                    output_port=port,
                    tenant=_tenant(item.get("tenant"), where),
                    tables=_table_specs(item, where),
                    max_columns=_max_columns(item.get("max_columns"), where),
                )
            )
        return cls(entries=tuple(entries), key_env=key_env, source=source)


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


def _ident(value: object, where: str) -> Identifier:
    try:
        return Identifier(value)
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
            parsed: dict[Identifier, tuple[str, ...]] = {}
            for col, col_tags in tags.items():
                if isinstance(col_tags, str):
                    col_tags = [col_tags]
                if not isinstance(col_tags, list) or not all(isinstance(t, str) for t in col_tags):
                    raise PolicyError(f"{at}: tags of column {col!r} must be a list of strings")
                parsed[_ident(col, at)] = tuple(col_tags)
            specs.append(TableSpec(schema, table, column_tags=parsed))
    return tuple(specs)
