"""Run records (``provisioner_runs``, migrations 001 and 006): one row per reconcile or command, and the one way to
write it, ``recording``.

A run is inserted ``running`` (with the owner id of this process's heartbeat, db.ProcessHeartbeat) and closed once:
``success``, ``skipped`` when its detail says ``outcome: skipped``, or ``failure`` with the error. A run left
``running`` by a process that died is failed by the liveness sweep (processes.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from provisioner.errors import classify

#: Run kinds that converge a product; the status table of ``provisioner status`` shows the newest of them.
RECONCILE_KINDS = ("product", "access", "delete", "rotate")

# The newest run of each subject that did something: a run skipped because nothing was left to do (the echo of our
# own finalizer removal after a deletion, a parked product left alone) does not hide the run that mattered. A
# subject with skipped runs only shows its newest one.
_LATEST_PER_SUBJECT = """
SELECT DISTINCT ON (subject) subject, kind, namespace, status, steps, detail, error, started_at, finished_at
FROM provisioner_runs
ORDER BY subject, status = 'skipped', started_at DESC, id DESC
LIMIT 1000
"""


@dataclass
class Run:
    """A run being recorded: the steps that changed something, counts and notes, and (at the end) its status."""

    id: int
    kind: str
    subject: str
    namespace: str | None = None
    steps: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def step(self, name: str) -> None:
        """Note that step ``name`` changed something."""
        self.steps.append(name)

    @property
    def status(self) -> str:
        """How a run that ended without an error is recorded: ``skipped`` when its outcome says so."""
        return "skipped" if self.detail.get("outcome") == "skipped" else "success"


@contextmanager
def recording(
    pool: ConnectionPool, kind: str, subject: str, namespace: str | None = None, *, owner: str | None = None
) -> Iterator[Run]:
    """Record the block as one run: ``running`` at the start, then its steps, detail and outcome at the end.

    An exception ends the run as the error policy says (``errors.classify``: ``failure``, with the error's message) and
    goes on; a normal end records ``run.status``. The run is closed before the caller's own handling of the exception
    (parking, logs) runs. A BaseException (an interrupt) leaves the run open: the process's heartbeat fails it.
    """
    with pool.connection() as conn:
        run = start_run(conn, kind, subject, namespace, owner=owner)
    try:
        yield run
    except Exception as exc:
        failed = classify(exc)
        with pool.connection() as conn:
            finish_run(conn, run, failed.run_status, failed.message)
        raise
    with pool.connection() as conn:
        finish_run(conn, run, run.status)


def start_run(
    conn: psycopg.Connection[Any], kind: str, subject: str, namespace: str | None = None, *, owner: str | None = None
) -> Run:
    """Insert a ``running`` run row owned by ``owner`` (a heartbeat id; None: no owner)."""
    row = conn.execute(
        "INSERT INTO provisioner_runs (kind, subject, namespace, status, owner)"
        " VALUES (%s, %s, %s, 'running', %s) RETURNING id",
        (kind, subject, namespace, owner),
    ).fetchone()
    assert row is not None
    return Run(id=row[0], kind=kind, subject=subject, namespace=namespace)


def finish_run(conn: psycopg.Connection[Any], run: Run, status: str, error: str | None = None) -> None:
    """Close a run with ``status`` (success, failure, skipped), its kind, steps, detail, namespace and error.

    The kind is written again because a run may learn what it is on the way: a product run that finds the product
    deleting becomes a ``delete`` run.
    """
    conn.execute(
        "UPDATE provisioner_runs SET status = %s, kind = %s, steps = %s, detail = %s, error = %s, namespace = %s, "
        "finished_at = now() WHERE id = %s",
        (status, run.kind, json.dumps(run.steps), json.dumps(run.detail, default=str), error, run.namespace, run.id),
    )


def count_runs(conn: psycopg.Connection[Any]) -> int:
    """How many runs are recorded."""
    row = conn.execute("SELECT count(*) FROM provisioner_runs").fetchone()
    return int(row[0]) if row else 0


def last_runs(conn: psycopg.Connection[Any], subject: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    """The newest runs, optionally of one subject."""
    with conn.cursor(row_factory=dict_row) as cur:
        if subject:
            cur.execute("SELECT * FROM provisioner_runs WHERE subject = %s ORDER BY id DESC LIMIT %s", (subject, limit))
        else:
            cur.execute("SELECT * FROM provisioner_runs ORDER BY id DESC LIMIT %s", (limit,))
        return [dict(r) for r in cur.fetchall()]


def last_run_per_subject(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """The newest reconcile run (``RECONCILE_KINDS``) of every subject that did something, for status tables: a
    skipped run, such as the echo of our own finalizer removal after a deletion, does not hide the run before it."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            "SELECT DISTINCT ON (subject) * FROM provisioner_runs WHERE kind = ANY(%s) "
            "ORDER BY subject, status = 'skipped', id DESC",
            (list(RECONCILE_KINDS),),
        )
        return {r["subject"]: dict(r) for r in cur.fetchall()}


async def latest_per_subject(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    """The newest run of every subject, any kind (at most 1,000 subjects), for ``GET /status/products``."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_LATEST_PER_SUBJECT)
    return await cur.fetchall()
