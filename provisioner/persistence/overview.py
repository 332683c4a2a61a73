"""What the status page (``GET /``) shows, read in one go from the provisioner's own tables (async, read only).

Ids and outcomes only, as everywhere in these tables: key ids, never a secret. Each list is bounded, so a large
site still renders a page a browser can hold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from provisioner.persistence import parked, queue

#: The most rows of each list the page shows.
LIMIT = 500
RECENT_RUNS = 25

_PRODUCTS = """
SELECT product_id, namespace, name, state, access_key_id, updated_at
FROM provisioner_products ORDER BY state <> 'provisioned', namespace LIMIT %s
"""
_GRANTS = """
SELECT coalesce(c.namespace, g.consumer_id) AS consumer, g.producer_namespace, g.output_port_namespace,
       g.output_port_id, g.tokenize_note
FROM provisioner_grants g LEFT JOIN provisioner_products c ON c.product_id = g.consumer_id
ORDER BY 1, g.producer_namespace, g.output_port_namespace LIMIT %s
"""
_WAITS = """
SELECT coalesce(c.namespace, w.consumer_id) AS consumer, w.producer_namespace, w.output_port_namespace, w.reason,
       w.since
FROM provisioner_grant_waits w LEFT JOIN provisioner_products c ON c.product_id = w.consumer_id
ORDER BY w.since, 1 LIMIT %s
"""
_RUNS = """
SELECT id, kind, subject, namespace, status, steps, error, started_at, finished_at
FROM provisioner_runs ORDER BY id DESC LIMIT %s
"""


@dataclass(frozen=True)
class Overview:
    """Rows for each section of the status page (dicts keyed by column name), the queue's counts by status and the
    jobs that run or wait."""

    products: list[dict[str, Any]]
    grants: list[dict[str, Any]]
    waits: list[dict[str, Any]]
    runs: list[dict[str, Any]]
    parked: list[dict[str, Any]]
    queue: dict[str, int]
    jobs: list[dict[str, Any]]


async def overview(conn: psycopg.AsyncConnection[Any]) -> Overview:
    """Everything the status page shows, read on one connection."""
    return Overview(
        products=await _rows(conn, _PRODUCTS, LIMIT),
        grants=await _rows(conn, _GRANTS, LIMIT),
        waits=await _rows(conn, _WAITS, LIMIT),
        runs=await _rows(conn, _RUNS, RECENT_RUNS),
        parked=await parked.parked_for_status(conn),
        queue=await queue.jobs_by_status(conn),
        jobs=await queue.waiting_jobs(conn, RECENT_RUNS),
    )


async def _rows(conn: psycopg.AsyncConnection[Any], query: str, limit: int) -> list[dict[str, Any]]:
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(query, (limit,))
    return await cur.fetchall()
