"""Run records in PostgreSQL: one row per run, RUNNING then COMPLETE with SUCCESS or FAILURE.

The table ``tokenize_runs`` belongs to this library. Inside the provisioner it is created by a versioned migration
of the provisioner's database (``persistence/migrations/012_*``); used on its own, the library creates it on first
use when it is missing or lacks a column (``SCHEMA``, idempotent, under an advisory lock), so it needs no migration
tool. Both make the same table (tests/test_persistence.py compares them). Records hold counts, timings and error
messages; never values or keys. ``kind`` tells tokenization runs (``tokenize``) from the runs of tools built on the
engine (``profile``, the residual-PII ``gate``), whose counts go in ``detail``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from provisioner.logs import redact_text
from provisioner.tokenize.errors import RecorderError

_LOCK = 7_341_020_004  # any constant: serialises CREATE TABLE IF NOT EXISTS across processes

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokenize_runs (
    run_id         uuid PRIMARY KEY,
    tenant         text NOT NULL,
    policy         text NOT NULL DEFAULT '',
    dry_run        boolean NOT NULL,
    state          text NOT NULL CHECK (state IN ('RUNNING', 'COMPLETE')),
    result         text CHECK (result IN ('SUCCESS', 'FAILURE')),
    tables         jsonb NOT NULL DEFAULT '[]'::jsonb,
    rows_by_column jsonb NOT NULL DEFAULT '{}'::jsonb,
    total_rows     bigint NOT NULL DEFAULT 0,
    error          text,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    duration_ms    double precision
);
CREATE INDEX IF NOT EXISTS tokenize_runs_started ON tokenize_runs (started_at DESC);
ALTER TABLE tokenize_runs ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'tokenize';
ALTER TABLE tokenize_runs ADD COLUMN IF NOT EXISTS detail jsonb NOT NULL DEFAULT '{}'::jsonb;
-- The process running the run, as its host application names it: a RUNNING run whose process stopped
-- is completed as FAILURE ("worker died") by that application (the provisioner: db.fail_dead_runs).
ALTER TABLE tokenize_runs ADD COLUMN IF NOT EXISTS owner text;
"""


@dataclass(frozen=True)
class RunRecord:
    """One row of ``tokenize_runs`` as ``provisioner runs`` shows it."""

    run_id: str
    tenant: str
    policy: str
    dry_run: bool
    state: str
    result: str | None
    tables: list[str]
    rows_by_column: dict[str, int]
    total_rows: int
    error: str | None
    started_at: datetime
    finished_at: datetime | None
    duration_ms: float | None
    kind: str = "tokenize"
    detail: dict[str, Any] = field(default_factory=dict)


class RunRecorder:
    """Writes and reads run records in the database at ``conninfo`` (the provisioner's own, usually).

    ``conninfo`` is a connection string (each record connects anew) or a pool to borrow from (the provisioner's).
    """

    def __init__(self, conninfo: str | ConnectionPool, owner: str | None = None) -> None:
        """``owner``: the id of the process's heartbeat, written on every run it starts (None: no owner)."""
        self._conninfo = conninfo
        self._owner = owner
        self._ready = False

    @contextmanager
    def _connect(self, purpose: str = "write the tokenization run record") -> Iterator[psycopg.Connection]:
        """A connection to the records' database; its errors become a RecorderError saying what could not be done."""
        try:
            with self._connection() as conn:
                if not self._ready:
                    if not _table_ready(conn):  # no DDL (and its table lock) where the table is complete
                        with conn.transaction():
                            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK,))
                            conn.execute(SCHEMA)
                    self._ready = True
                yield conn
        except psycopg.Error as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RecorderError(f"cannot {purpose}: {redact_text(first)}") from None

    def _connection(self) -> AbstractContextManager[psycopg.Connection]:
        """A new autocommit connection, or one borrowed from the pool (its work commits when given back)."""
        if isinstance(self._conninfo, str):
            return psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10)
        return self._conninfo.connection(timeout=10)

    def start(
        self,
        *,
        run_id: str,
        tenant: str,
        policy: str,
        dry_run: bool,
        tables: list[str],
        started_at: datetime,
        kind: str = "tokenize",
    ) -> None:
        """Record a run as RUNNING."""
        with self._connect() as conn:
            conn.execute(
                "INSERT INTO tokenize_runs (run_id, tenant, policy, dry_run, state, tables, started_at, kind, owner)"
                " VALUES (%s, %s, %s, %s, 'RUNNING', %s, %s, %s, %s)",
                (run_id, tenant, policy, dry_run, json.dumps(tables), started_at, kind, self._owner),
            )

    def finish(
        self,
        *,
        run_id: str,
        result: str,
        rows_by_column: Mapping[str, int],
        total_rows: int,
        error: str | None,
        finished_at: datetime,
        duration_ms: float,
        detail: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark a run COMPLETE with its result, counts, error and timing (``detail``: counts of other kinds)."""
        with self._connect() as conn:
            conn.execute(
                "UPDATE tokenize_runs SET state = 'COMPLETE', result = %s, rows_by_column = %s, total_rows = %s,"
                " error = %s, finished_at = %s, duration_ms = %s, detail = COALESCE(%s, detail) WHERE run_id = %s",
                (
                    result,
                    json.dumps(dict(rows_by_column)),
                    total_rows,
                    error,
                    finished_at,
                    duration_ms,
                    None if detail is None else json.dumps(dict(detail)),
                    run_id,
                ),
            )

    def get(self, run_id: str) -> RunRecord | None:
        """One run by id, or None."""
        with self._connect("read the tokenization run records") as conn:
            row = conn.execute(f"SELECT {_COLUMNS} FROM tokenize_runs WHERE run_id = %s", (run_id,)).fetchone()
        return _record(row) if row else None

    def last(self, n: int = 20) -> list[RunRecord]:
        """The ``n`` most recent runs, newest first."""
        with self._connect("read the tokenization run records") as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM tokenize_runs ORDER BY started_at DESC, run_id LIMIT %s", (n,)
            ).fetchall()
        return [_record(r) for r in rows]


_COLUMNS = (
    "run_id::text, tenant, policy, dry_run, state, result, tables, rows_by_column, total_rows, error,"
    " started_at, finished_at, duration_ms, kind, detail"
)

#: Every column ``SCHEMA`` makes: when the table has them all, nothing is left to create.
TABLE_COLUMNS = (
    "run_id",
    "tenant",
    "policy",
    "dry_run",
    "state",
    "result",
    "tables",
    "rows_by_column",
    "total_rows",
    "error",
    "started_at",
    "finished_at",
    "duration_ms",
    "kind",
    "detail",
    "owner",
)


def _table_ready(conn: psycopg.Connection) -> bool:
    row = conn.execute(
        "SELECT count(*) FROM pg_attribute WHERE attrelid = to_regclass('tokenize_runs') AND attname = ANY(%s)"
        " AND NOT attisdropped",
        (list(TABLE_COLUMNS),),
    ).fetchone()
    return bool(row and row[0] == len(TABLE_COLUMNS))


def _record(row: tuple[Any, ...]) -> RunRecord:
    return RunRecord(
        run_id=row[0],
        tenant=row[1],
        policy=row[2],
        dry_run=row[3],
        state=row[4],
        result=row[5],
        tables=list(row[6]),
        rows_by_column={k: int(v) for k, v in row[7].items()},
        total_rows=int(row[8]),
        error=row[9],
        started_at=row[10],
        finished_at=row[11],
        duration_ms=row[12],
        kind=row[13],
        detail=dict(row[14]),
    )
