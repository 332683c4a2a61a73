"""The SQL of the Databricks executor (Databricks SQL and Spark SQL), built from validated parts only.

Tokens are the PostgreSQL engine's, bit for bit: ``prefix || base64url(HMAC-SHA256(key, utf8(value)))[:length]
|| suffix``. ``CAST(value AS BINARY)`` is the value's UTF-8 bytes. The MAC comes from ``hmac()`` where the
runtime has it (Databricks SQL, Databricks Runtime 19+, Spark 4.3+) and otherwise from two ``sha2`` calls over
the RFC 2104 pads: ``sha2`` returns hex, so each digest goes through ``unhex`` before it is hashed again or
encoded. The pads are derived from the key inside the statement (XOR of 4-byte chunks), in scalar subqueries
that Spark evaluates once per statement.

The key itself never travels in a statement or a parameter: a ``KeySource`` names where the warehouse reads it,
either ``secret(scope, key)`` from a Databricks secret scope (the production path: only the scope and key names
are in the statement text and so in the query history) or a session temporary view the caller created without
SQL text (a Spark DataFrame, as the tests and the benchmark do).

The guard (``needs_token``) has the meaning of ``Tokenizer.is_token`` and uses only functions that Spark SQL and
DataFusion (delta-rs) both have, with no anchored regex: Java's ``$`` also matches before a final line break.
String literals are the token's prefix and suffix (a restricted alphabet, no quote or backslash), so they need
no escaping; identifiers are quoted with backticks.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from provisioner.tokenize.errors import TokenizeConfigError
from provisioner.tokenize.tokens import BLOCK_SIZE, TokenFormat

KEY_VIEW = "provisioner_tokenize_key"
PROBE_VALUE = "provisioner tokenize key check"  # a constant, not data: its token shows which key the SQL uses
MacFunction = Literal["hmac", "sha2"]
_SECRET_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,128}")  # Databricks secret scope and key names
_CATALOG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,254}")
_IPAD_WORD = 0x36363636
_OPAD_WORD = 0x5C5C5C5C


def quote(name: str) -> str:
    """A backtick-quoted identifier (backticks inside doubled)."""
    return "`" + name.replace("`", "``") + "`"


def check_catalog(catalog: str) -> str:
    """A Unity Catalog catalog name as a tenant may configure it; TokenizeConfigError otherwise."""
    if not _CATALOG.fullmatch(catalog):
        raise TokenizeConfigError(f"catalog {catalog!r} is invalid: use letters, digits, '_' and '-'")
    return catalog


def table_ref(catalog: str | None, schema: str, table: str) -> str:
    """``catalog.schema.table`` (or ``schema.table``), quoted."""
    parts = [catalog] if catalog else []
    return ".".join(quote(p) for p in [*parts, schema, table])


class KeySource(Protocol):
    """Where the warehouse reads the HMAC key: a relation with one row and one BINARY column ``key``."""

    def relation(self) -> str:
        """SQL usable after FROM."""
        ...

    def describe(self) -> str:
        """Where the key is, for messages (never the key)."""
        ...


@dataclass(frozen=True)
class SecretScopeKey:
    """The key as a Databricks secret: ``secret(scope, key)`` holds the same text as PROVISIONER_TOKENIZE_KEY."""

    scope: str
    key: str

    def __post_init__(self) -> None:
        for what, value in (("secret scope", self.scope), ("secret key", self.key)):
            if not _SECRET_NAME.fullmatch(value):
                raise TokenizeConfigError(f"{what} {value!r} is invalid: use 1 to 128 of letters, digits and _.@-")

    def relation(self) -> str:
        """The secret's UTF-8 bytes, as the Python reference encodes a text key."""
        return f"(SELECT encode(secret('{self.scope}', '{self.key}'), 'UTF-8') AS key)"

    def describe(self) -> str:
        """``secret scope S, key K``."""
        return f"secret scope {self.scope!r}, key {self.key!r}"


@dataclass(frozen=True)
class SessionViewKey:
    """A session temporary view with a BINARY column ``key`` that the caller created without SQL text."""

    view: str = KEY_VIEW

    def relation(self) -> str:
        """The view's name."""
        return quote(self.view)

    def describe(self) -> str:
        """``session view V``."""
        return f"session view {self.view!r}"


def _key(source: KeySource) -> str:
    return f"(SELECT key FROM {source.relation()})"


def _pad(source: KeySource, word: int) -> str:
    """One 64-byte HMAC pad of the key, computed once per statement (RFC 2104: hash long keys, pad with zeros)."""
    hexed = f"rpad(hex(CASE WHEN octet_length(key) > {BLOCK_SIZE} THEN unhex(sha2(key, 256)) ELSE key END), 128, '0')"
    # Spark has no XOR on BINARY: XOR sixteen 4-byte words as BIGINT and put the hex back together.
    words = ", ".join(
        f"lpad(hex(CAST(conv(substr(h, {8 * i + 1}, 8), 16, 10) AS BIGINT) ^ {word}), 8, '0')" for i in range(16)
    )
    return f"(SELECT unhex(concat({words})) FROM (SELECT {hexed} AS h FROM {source.relation()}))"


def token_expr(value: str, fmt: TokenFormat, key: KeySource | None, mac: MacFunction = "hmac") -> str:
    """The token of the STRING expression ``value``, as ``Tokenizer.token`` computes it."""
    data = f"CAST({value} AS BINARY)"
    if fmt.mode == "base64":
        # Databricks documents base64() as RFC 2045 (lines of 76); Spark does not wrap, Python does not either.
        body = f"replace(replace(base64({data}), chr(13), ''), chr(10), '')"
    else:
        if key is None:
            raise TokenizeConfigError("hmac tokens need a key source (a secret scope or a session view)")
        if mac == "hmac":
            digest = f"hmac({_key(key)}, {data}, 'SHA-256')"
        else:
            inner = f"unhex(sha2(concat({_pad(key, _IPAD_WORD)}, {data}), 256))"
            digest = f"unhex(sha2(concat({_pad(key, _OPAD_WORD)}, {inner}), 256))"
        body = f"translate(left(base64({digest}), {fmt.length}), '+/', '-_')"
    return f"concat('{fmt.prefix}', {body}, '{fmt.suffix}')"


def needs_token(column: str, fmt: TokenFormat) -> str:
    """True when the column's value must be tokenized: not NULL, not empty, not already a token.

    Same meaning as ``Tokenizer.is_token`` (and the PostgreSQL guard), so a rerun changes 0 rows. Written with
    functions Spark SQL and DataFusion share (``character_length``, ``left``, ``right``, ``substr``,
    ``regexp_like``): the Delta tests run this very text in delta-rs.
    """
    c = quote(column)
    p, s = len(fmt.prefix), len(fmt.suffix)
    checks = [f"left({c}, {p}) = '{fmt.prefix}'"]
    if s:
        checks.append(f"right({c}, {s}) = '{fmt.suffix}'")
    if fmt.mode == "hmac":
        checks.insert(0, f"character_length({c}) = {p + fmt.length + s}")
        checks.append(f"NOT regexp_like(substr({c}, {p + 1}, {fmt.length}), '[^A-Za-z0-9_-]')")
    else:
        # Quads of the base64 alphabet, '=' only at the end and at most two: what the Python pattern allows.
        n = f"character_length({c}) - {p + s}"
        body = f"substr({c}, {p + 1}, {n})"
        checks.insert(0, f"character_length({c}) >= {p + s}")
        checks += [
            f"({n}) % 4 = 0",
            f"NOT regexp_like({body}, '[^A-Za-z0-9+/=]')",
            f"NOT regexp_like({body}, '=[^=]')",
            f"NOT regexp_like({body}, '===')",
        ]
    return f"({c} <> '' AND NOT ({' AND '.join(checks)}))"


def new_value(column: str, fmt: TokenFormat, key: KeySource | None, mac: MacFunction = "hmac") -> str:
    """The value a column gets: its token where it needs one, else the value itself."""
    c = quote(column)
    return f"CASE WHEN {needs_token(column, fmt)} THEN {token_expr(c, fmt, key, mac)} ELSE {c} END"


def update_statement(
    table: str, columns: Sequence[str], fmt: TokenFormat, key: KeySource | None, mac: MacFunction = "hmac"
) -> str:
    """One UPDATE of every PII column of the table: on Delta, one commit; rows without work are not touched."""
    sets = ", ".join(f"{quote(c)} = {new_value(c, fmt, key, mac)}" for c in columns)
    where = " OR ".join(needs_token(c, fmt) for c in columns)
    return f"UPDATE {table} SET {sets} WHERE {where}"


def count_statement(table: str, columns: Sequence[str], fmt: TokenFormat) -> str:
    """One scan: rows with a value to tokenize, then values to tokenize per column (before, after, dry run)."""
    needs = [needs_token(c, fmt) for c in columns]
    per_column = ", ".join(f"count_if({n})" for n in needs)
    return f"SELECT count_if({' OR '.join(needs)}), {per_column} FROM {table}"


def select_statement(
    table: str, columns: Sequence[str], fmt: TokenFormat, key: KeySource | None, mac: MacFunction = "hmac"
) -> str:
    """The UPDATE's new values as a query (same expressions), for previews and the golden tests on Spark."""
    values = ", ".join(f"{new_value(c, fmt, key, mac)} AS {quote(c)}" for c in columns)
    return f"SELECT {values} FROM {table}"


def probe_statement(fmt: TokenFormat, key: KeySource, mac: MacFunction = "hmac") -> str:
    """The token of ``PROBE_VALUE``: equal to Python's only if the warehouse reads the same key and computes alike."""
    return "SELECT " + token_expr(f"'{PROBE_VALUE}'", fmt, key, mac)


def describe_statement(table: str) -> str:
    """Columns, types and the table's provider (``DESCRIBE TABLE EXTENDED``)."""
    return f"DESCRIBE TABLE EXTENDED {table}"
