"""The job queue's table (procrastinate's ``procrastinate_jobs``) as the provisioner writes and counts it.

Jobs are deferred through the SQL function ``provisioner_defer`` (migrations 002 and 005): one row per trigger,
coalesced on procrastinate's queueing-lock index, so it works inside the caller's transaction and never fails on a
coalesce; with ``wake``, a job of the same entity waiting for a retry is made due now.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

_DEFER = "SELECT provisioner_defer(%s::jsonb, %s, %s)"


def defer(conn: psycopg.Connection[Any], jobs: str, queue: str, wake: bool) -> list[int | None] | None:
    """Defer ``jobs`` (a JSON array of ``{"task", "lock", "queueing_lock", "args"}``) into ``queue``; the new job ids
    in order, None where a job was coalesced into one already waiting."""
    row = conn.execute(_DEFER, (jobs, queue, wake)).fetchone()
    return list(row[0]) if row and row[0] is not None else None


def jobs_left(conn: psycopg.Connection[Any]) -> int:
    """How many jobs wait or run (``todo`` or ``doing``), in every queue."""
    row = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')").fetchone()
    return int(row[0]) if row else 0


async def jobs_by_status(conn: psycopg.AsyncConnection[Any]) -> dict[str, int]:
    """How many jobs each status holds (statuses without a job are absent)."""
    cur = await conn.execute("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status")
    return dict(await cur.fetchall())


async def waiting_jobs(conn: psycopg.AsyncConnection[Any], limit: int = 25) -> list[dict[str, Any]]:
    """The jobs that run or wait (``doing`` first, then ``todo`` by id): queue, task, lock (the entity), attempts and
    when it is due, for the status page."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT id, queue_name, task_name, lock, status::text AS status, attempts, scheduled_at"
        " FROM procrastinate_jobs WHERE status IN ('todo', 'doing') ORDER BY status <> 'doing', id LIMIT %s",
        (limit,),
    )
    return await cur.fetchall()
