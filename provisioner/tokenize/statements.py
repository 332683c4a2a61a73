"""The SQL of the PostgreSQL executor, composed with ``psycopg.sql`` (identifiers are never formatted by hand).

The HMAC is computed in the database from core ``sha256()`` (pgcrypto is not installed everywhere):
``HMAC(k, m) = sha256(opad || sha256(ipad || m))`` with ``ipad``/``opad`` read from a session temporary
table filled by ``COPY … FROM STDIN``, so no key byte is ever part of a statement or its parameters.
The pads are read by scalar subqueries, which PostgreSQL evaluates once per statement (InitPlans) and hands
to parallel workers, so a SELECT of tokens can run in parallel; a join against the temporary table could not.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from psycopg import sql

from provisioner.names import SqlName
from provisioner.tokenize.tokens import TokenFormat

KEY_TABLE = "provisioner_tokenize_key"
_BODY_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-")  # of an hmac token, base64url
_KEY = sql.Identifier("pg_temp", KEY_TABLE)
_ROW = sql.Identifier("t")  # the alias of the target table in every statement


def create_key_table() -> sql.Composed:
    """A session temporary table for the padded key; only this session can read it."""
    return sql.SQL(
        "DROP TABLE IF EXISTS {k}; CREATE TEMPORARY TABLE {k} (ipad bytea NOT NULL, opad bytea NOT NULL)"
    ).format(k=_KEY)


def copy_key() -> sql.Composed:
    """COPY statement that loads the pads; the data travels in the COPY stream, never in the statement."""
    return sql.SQL("COPY {} (ipad, opad) FROM STDIN").format(_KEY)


def drop_key_table() -> sql.Composed:
    """Remove the pads as soon as the run is over (the session would drop them at disconnect anyway)."""
    return sql.SQL("DROP TABLE IF EXISTS {}").format(_KEY)


def table_ref(schema: SqlName, table: SqlName) -> sql.Identifier:
    """The quoted ``schema.table``."""
    return sql.Identifier(schema, table)


def needs_token(column: SqlName, fmt: TokenFormat) -> sql.Composed:
    """True when the column's value must be tokenized: not NULL, not empty, not already a token.

    Same meaning as ``Tokenizer.is_token``, ordered for speed: the byte length and a LIKE of the token's
    shape reject ordinary values cheaply, so a regex only runs on values that look like tokens. In hmac mode
    that regex looks for one character outside the token alphabet, which is three times cheaper than
    matching the anchored pattern (whose ``_`` both in the class and after it makes the engine try every split).
    """
    col = sql.SQL('{} COLLATE "C"').format(sql.Identifier("t", column))
    shape = _like_escape(fmt.prefix) + ("_" * fmt.length if fmt.mode == "hmac" else "%") + _like_escape(fmt.suffix)
    checks = [sql.SQL("{c} LIKE {s}").format(c=col, s=sql.Literal(shape))]
    if fmt.token_length is not None:
        # Length and LIKE leave only ASCII values of the right shape: what remains is the body's alphabet.
        checks.insert(0, sql.SQL("octet_length({c}) = {n}").format(c=col, n=sql.Literal(fmt.token_length)))
        body = col
        if not set(fmt.prefix + fmt.suffix) <= _BODY_CHARACTERS:
            body = sql.SQL("substr({c}, {start}, {n})").format(
                c=col, start=sql.Literal(len(fmt.prefix) + 1), n=sql.Literal(fmt.length)
            )
        checks.append(sql.SQL("{b} !~ '[^A-Za-z0-9_-]'").format(b=body))
    else:
        checks.append(sql.SQL("{c} ~ {g}").format(c=col, g=sql.Literal(fmt.guard_pattern)))
    return sql.SQL("({c} <> '' AND NOT ({checks}))").format(c=col, checks=sql.SQL(" AND ").join(checks))


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def token_expr(column: SqlName, fmt: TokenFormat) -> sql.Composed:
    """The token of the column's value, computed in the database exactly as ``Tokenizer.token`` does.

    The value's UTF-8 bytes come from ``textsend()``, which converts to the session's client encoding: the
    engine sets ``client_encoding`` to UTF8 on its connections (``convert_to`` looks its encoding up by name
    for every value). Only the digest bytes the token shows are base64-encoded, and the URL-safe alphabet is
    applied with ``replace``: less character-by-character work on text than ``translate``.
    """
    col = sql.Identifier("t", column)
    if fmt.mode == "base64":
        # encode() wraps base64 at 76 characters; Python's b64encode does not.
        data = sql.SQL("convert_to({}, 'UTF8')").format(col)
        body = sql.SQL("replace(encode({d}, 'base64'), E'\\n', '')").format(d=data)
    else:
        data = sql.SQL("textsend({})").format(col)
        mac = sql.SQL("sha256({o} || sha256({i} || {d}))").format(o=_pad("opad"), i=_pad("ipad"), d=data)
        shown = -(-fmt.length * 6 // 8)  # digest bytes behind the first `length` base64 characters
        if shown < 32:
            mac = sql.SQL("substring({m} FROM 1 FOR {n})").format(m=mac, n=sql.Literal(shown))
        body = sql.SQL("replace(replace(left(encode({m}, 'base64'), {n}), '+', '-'), '/', '_')").format(
            m=mac, n=sql.Literal(fmt.length)
        )
    return sql.SQL("{p} || {b} || {s}").format(p=sql.Literal(fmt.prefix), b=body, s=sql.Literal(fmt.suffix))


def _pad(name: str) -> sql.Composed:
    return sql.SQL("(SELECT {} FROM {})").format(sql.Identifier(name), _KEY)


def key_loaded() -> sql.Composed:
    """True when the key table holds exactly one pair of pads; guards every statement that writes tokens.

    Without it, an empty key table would make every pad NULL and so every token NULL. PostgreSQL evaluates
    it once per statement, before reading the table.
    """
    return sql.SQL("(SELECT count(*) FROM {}) = 1").format(_KEY)


def update_statement(schema: SqlName, table: SqlName, columns: Sequence[SqlName], fmt: TokenFormat) -> sql.Composed:
    """One set-based UPDATE rewriting every PII column of the table; rows without work are not touched."""
    sets = sql.SQL(", ").join(
        sql.SQL("{c} = CASE WHEN {n} THEN {e} ELSE {tc} END").format(
            c=sql.Identifier(c), n=needs_token(c, fmt), e=token_expr(c, fmt), tc=sql.Identifier("t", c)
        )
        for c in columns
    )
    where = sql.SQL("({})").format(sql.SQL(" OR ").join(needs_token(c, fmt) for c in columns))
    if fmt.mode == "hmac":
        where = sql.SQL("{} AND {}").format(key_loaded(), where)
    return sql.SQL("UPDATE {tbl} AS t SET {sets} WHERE {where}").format(
        tbl=table_ref(schema, table), sets=sets, where=where
    )


def count_statement(schema: SqlName, table: SqlName, columns: Sequence[SqlName], fmt: TokenFormat) -> sql.Composed:
    """One scan counting rows that would change, then values per column that would change (the dry run)."""
    needs = [needs_token(c, fmt) for c in columns]
    per_column = sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(n) for n in needs)
    return sql.SQL("SELECT count(*) FILTER (WHERE {any}), {per} FROM {tbl} AS t").format(
        any=sql.SQL(" OR ").join(needs), per=per_column, tbl=table_ref(schema, table)
    )


def remaining_statement(schema: SqlName, table: SqlName, columns: Sequence[SqlName], fmt: TokenFormat) -> sql.Composed:
    """Values per column that are still not tokens: the check after a rewrite, one scan for all columns.

    The guard is ``needs_token``, the one that decides what the rewrite skips. Only rows that fail it reach the
    per-column counts, so after a good rewrite each row costs the guard once per column and nothing more.
    """
    needs = [needs_token(c, fmt) for c in columns]
    per_column = sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(n) for n in needs)
    return sql.SQL("SELECT {per} FROM {tbl} AS t WHERE {any}").format(
        per=per_column, tbl=table_ref(schema, table), any=sql.SQL(" OR ").join(needs)
    )


def token_batch(schema: SqlName, table: SqlName, columns: Sequence[SqlName], fmt: TokenFormat) -> sql.Composed:
    """The tokens of one page range, for the batched rewrite: rows, values per column, then the arrays.

    Parameters: ``page_start`` of the first page and of the page after the last. Returns one row: rows with
    work, values to tokenize per column, ``array_agg`` of their ``ctid`` and, per column, of the token (NULL
    where the value stays). With no key loaded every row is left out, so the caller checks ``key_loaded()``.
    """
    needs = [needs_token(c, fmt) for c in columns]
    counts = sql.SQL(", ").join(sql.SQL("count(*) FILTER (WHERE {})").format(n) for n in needs)
    tokens = sql.SQL(", ").join(
        sql.SQL("array_agg(CASE WHEN {n} THEN {e} END)").format(n=n, e=token_expr(c, fmt))
        for n, c in zip(needs, columns, strict=True)
    )
    return sql.SQL(
        "SELECT count(*), {counts}, array_agg(t.ctid), {tokens} FROM {tbl} AS t WHERE {pages} AND {key} AND ({any})"
    ).format(
        counts=counts,
        tokens=tokens,
        tbl=table_ref(schema, table),
        pages=_page_range(),
        key=key_loaded(),
        any=sql.SQL(" OR ").join(needs),
    )


def apply_tokens(schema: SqlName, table: SqlName, columns: Sequence[SqlName]) -> sql.Composed:
    """Write one batch of tokens by ``ctid``; parameters: the ctid array, one token array per column, the pages.

    A NULL token keeps the column's value. The page range lets PostgreSQL read only those pages (TID Range Scan).
    """
    names = [sql.Identifier(f"v{i}") for i in range(len(columns))]
    arrays = sql.SQL(", ").join([sql.SQL("%s::tid[]")] + [sql.SQL("%s::text[]")] * len(columns))
    sets = sql.SQL(", ").join(
        sql.SQL("{c} = coalesce(x.{v}, t.{c})").format(c=sql.Identifier(c), v=v)
        for c, v in zip(columns, names, strict=True)
    )
    return sql.SQL(
        "UPDATE {tbl} AS t SET {sets} FROM unnest({arrays}) AS x(tid, {names}) WHERE t.ctid = x.tid AND {pages}"
    ).format(
        tbl=table_ref(schema, table), sets=sets, arrays=arrays, names=sql.SQL(", ").join(names), pages=_page_range()
    )


def _page_range() -> sql.SQL:
    return sql.SQL("t.ctid >= %s::tid AND t.ctid < %s::tid")


def page_start(page: int) -> str:
    """The first tuple id of a page, as text (a tid bound of the batched statements)."""
    return f"({page},0)"


def lock_statement(schema: SqlName, table: SqlName) -> sql.Composed:
    """SHARE ROW EXCLUSIVE: readers go on, writers (and other tokenizer runs) wait until commit."""
    return sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(table_ref(schema, table))


# Pages of the table's main fork: the batched rewrite covers them all.
TABLE_PAGES = "SELECT pg_relation_size(%s::oid) / current_setting('block_size')::bigint"

EXPORT_SNAPSHOT = "SELECT pg_export_snapshot()"

# The relation a name points to now, and whether row-level security applies to the session's role there
# (``row_security_active`` is PostgreSQL's own test: enabled, and neither BYPASSRLS nor an owner without FORCE).
# Run again under the table's lock: that statement's snapshot is taken after the lock was granted.
FIND_TABLE = """
SELECT c.oid, c.relkind, c.relhassubclass, row_security_active(c.oid::regclass), c.relforcerowsecurity, current_user
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relname = %s
"""

# One row per requested column that exists: its base type (domains resolved), varchar limit,
# generated flag and the session role's privileges on it.
DESCRIBE_COLUMNS = """
SELECT a.attname,
       format_type(a.atttypid, a.atttypmod),
       format_type(COALESCE(NULLIF(ty.typbasetype, 0), a.atttypid), NULL),
       CASE WHEN COALESCE(NULLIF(ty.typbasetype, 0), a.atttypid) = 'varchar'::regtype
            THEN NULLIF(COALESCE(NULLIF(ty.typtypmod, -1), a.atttypmod), -1) - 4 END,
       a.attgenerated <> '',
       has_column_privilege(a.attrelid, a.attnum, 'SELECT'),
       has_column_privilege(a.attrelid, a.attnum, 'UPDATE')
FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type ty ON ty.oid = a.atttypid
WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped AND a.attname = ANY(%s)
"""

TABLE_PRIVILEGES = "SELECT current_user, has_table_privilege(%s::oid, 'UPDATE')"
