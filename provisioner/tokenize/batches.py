"""The batched rewrite of a large table: a second connection computes tokens while the first one writes.

PostgreSQL never gives a data-modifying statement parallel workers, so one UPDATE that both hashes and
rewrites every row spends the HMAC's time and the rewrite's time one after the other on one CPU. Here the
writer's transaction locks the table and exports its snapshot; a second connection of the same tenant imports
it, so it sees exactly the rows the writer sees (and the lock keeps anyone else from changing them), and it
computes the tokens of the next range of pages while the writer applies those of the previous range by
``ctid``. The key is loaded into the helper's own temporary table by COPY, as for one statement; the tokens
come back through this process as binary arrays that are passed on unparsed.

Why every row gets exactly its own token: each row the snapshot sees lies in exactly one page range, and a
row the writer has rewritten moves to a new ``ctid`` that the helper's snapshot cannot see. The writer checks
it anyway: a batch that rewrites another number of rows than the helper found fails the table's transaction.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import psycopg
from psycopg import sql
from psycopg.adapt import Buffer, Dumper, Loader
from psycopg.pq import Format, TransactionStatus

from provisioner.tokenize import statements
from provisioner.tokenize.errors import RowCountMismatch, TargetError
from provisioner.tokenize.policy import TableTarget
from provisioner.tokenize.tokens import HmacPads, TokenFormat

_TID_ARRAY_OID = 1010
_TEXT_ARRAY_OID = 1009


class _RawArray(Loader):
    """Keeps an array's binary form as bytes: the writer sends it back as it came."""

    format = Format.BINARY

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


class _TidArray(bytes):
    pass


class _TextArray(bytes):
    pass


class _TidArrayDumper(Dumper):
    format = Format.BINARY
    oid = _TID_ARRAY_OID

    def dump(self, obj: bytes) -> bytes:
        return obj


class _TextArrayDumper(_TidArrayDumper):
    oid = _TEXT_ARRAY_OID


@dataclass(frozen=True)
class Batch:
    """The tokens of one page range: rows with work, values per column, and the binary arrays to write."""

    first_page: int
    end_page: int
    rows: int
    per_column: tuple[int, ...]
    arrays: tuple[bytes, ...]

    def parameters(self) -> tuple[object, ...]:
        """The parameters of ``statements.apply_tokens`` for this batch."""
        ctids, *tokens = self.arrays
        return (
            _TidArray(ctids),
            *(_TextArray(t) for t in tokens),
            statements.page_start(self.first_page),
            statements.page_start(self.end_page),
        )


class TokenSource:
    """A second connection of the tenant that computes tokens under the writer's snapshot, reading only."""

    def __init__(self, conn: psycopg.Connection, pads: HmacPads) -> None:
        self._conn = conn
        conn.autocommit = True
        conn.execute("SET client_encoding TO 'UTF8'")  # as on the writer: the SQL hashes UTF-8 bytes
        conn.execute(statements.create_key_table())
        with conn.cursor() as cur, cur.copy(statements.copy_key()) as copy:
            copy.write_row((pads.ipad, pads.opad))
        conn.adapters.register_loader(_TID_ARRAY_OID, _RawArray)
        conn.adapters.register_loader(_TEXT_ARRAY_OID, _RawArray)

    @contextmanager
    def reading(self, snapshot: str, statement_timeout_ms: int) -> Iterator[None]:
        """A read-only transaction on the writer's exported snapshot; TargetError if the key is missing."""
        self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        try:
            self._conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
            self._conn.execute("SELECT set_config('statement_timeout', %s, true)", (f"{statement_timeout_ms}ms",))
            row = self._conn.execute(sql.SQL("SELECT {}").format(statements.key_loaded())).fetchone()
            if not (row and row[0]):
                raise TargetError("the helper connection has no key loaded; nothing was changed")
            yield
        finally:
            self._end()

    def compute(self, query: sql.Composed, columns: int, first_page: int, end_page: int) -> Batch:
        """The tokens of the rows in pages ``first_page`` to ``end_page - 1`` that need one (``token_batch``)."""
        with self._conn.cursor(binary=True) as cur:
            row = cur.execute(query, (statements.page_start(first_page), statements.page_start(end_page))).fetchone()
        assert row is not None  # an aggregate always returns a row
        rows, counts, arrays = row[0], row[1 : columns + 1], row[columns + 1 :]
        return Batch(first_page, end_page, int(rows), tuple(map(int, counts)), tuple(arrays) if rows else ())

    def cancel(self) -> None:
        """Stop the statement in progress, if any (called from the writer's thread, already failing)."""
        try:
            self._conn.cancel_safe(timeout=5)
        except psycopg.Error:
            self._conn.close()  # then nothing runs on it any more either

    def _end(self) -> None:
        # The transaction wrote nothing: a connection that cannot roll back is closed instead.
        if self._conn.closed or self._conn.info.transaction_status == TransactionStatus.IDLE:
            return
        try:
            self._conn.execute("ROLLBACK")
        except psycopg.Error:
            self._conn.close()

    def close(self) -> None:
        """Close the connection; its temporary key table goes with the session."""
        self._conn.close()


def rewrite_in_batches(
    writer: psycopg.Connection,
    source: TokenSource,
    table: TableTarget,
    fmt: TokenFormat,
    *,
    pages: int,
    batch_pages: int,
    statement_timeout_ms: int,
) -> tuple[int, list[int], int]:
    """Rewrite the locked table in page ranges inside the writer's open transaction.

    Returns rows changed, values changed per column and the number of batches. Raises TargetError when a
    batch changes another number of rows than it should, or when the run outlasts ``statement_timeout_ms``.
    """
    snapshot = writer.execute(statements.EXPORT_SNAPSHOT).fetchone()
    assert snapshot is not None
    query = statements.token_batch(table.schema, table.table, table.columns, fmt)
    update = statements.apply_tokens(table.schema, table.table, table.columns)
    ranges = [(first, min(first + batch_pages, pages)) for first in range(0, pages, batch_pages)]
    # The whole table answers to statement_timeout, as its single UPDATE would.
    deadline = time.monotonic() + statement_timeout_ms / 1000 if statement_timeout_ms else None
    width = len(table.columns)
    rows, per_column = 0, [0] * width
    if not ranges:  # emptied (TRUNCATE) between the choice of this path and the lock
        return rows, per_column, 0
    with (
        source.reading(str(snapshot[0]), statement_timeout_ms),
        writer.cursor() as cur,
        ThreadPoolExecutor(1, thread_name_prefix="tokenize-helper") as pool,
    ):
        cur.adapters.register_dumper(_TidArray, _TidArrayDumper)
        cur.adapters.register_dumper(_TextArray, _TextArrayDumper)
        pending: Future[Batch] = pool.submit(source.compute, query, width, *ranges[0])
        try:
            for following in [*ranges[1:], None]:
                batch = pending.result()
                if following is not None:
                    pending = pool.submit(source.compute, query, width, *following)
                if deadline is not None and time.monotonic() > deadline:
                    raise TargetError(
                        f"table {table.name}: cancelled after statement_timeout={statement_timeout_ms}ms; "
                        "nothing in it was changed"
                    )
                if batch.rows:
                    changed = cur.execute(update, batch.parameters()).rowcount
                    if changed != batch.rows:
                        where = f"in pages {batch.first_page}-{batch.end_page - 1}, "
                        raise RowCountMismatch(table.name, batch.rows, changed, where)
                rows += batch.rows
                per_column = [a + b for a, b in zip(per_column, batch.per_column, strict=True)]
        except BaseException:
            source.cancel()  # the next batch may still be computing; the pool waits for it to stop
            raise
    return rows, per_column, len(ranges)


def page_count(conn: psycopg.Connection, oid: int) -> int:
    """Pages of the table's main fork."""
    row = conn.execute(statements.TABLE_PAGES, (oid,)).fetchone()
    return int(row[0]) if row else 0
