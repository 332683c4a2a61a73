"""A small JSON status API over the run records and the parked products."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse

# The newest run of each subject that did something: a run skipped because nothing was left to do (the echo of our
# own finalizer removal after a deletion, a parked product left alone) does not hide the run that mattered. A
# subject with skipped runs only shows its newest one.
_LATEST_PER_SUBJECT = """
SELECT DISTINCT ON (subject) subject, kind, namespace, status, steps, detail, error, started_at, finished_at
FROM provisioner_runs
ORDER BY subject, status = 'skipped', started_at DESC, id DESC
LIMIT 1000
"""

_PARKED = "SELECT product_id, namespace, reason, error, parked_at FROM provisioner_parked ORDER BY parked_at"


async def products(request: Request) -> JSONResponse:
    """GET /status/products: the latest run of every subject (product, consumer, job), and the parked products.

    A parked product failed permanently (sql/005_catch_up.sql); its row carries ``parked`` with the reason, and the
    top-level ``parked`` list names them all.
    """
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_LATEST_PER_SUBJECT)
        rows = await cur.fetchall()
        await cur.execute(_PARKED)
        parked = await cur.fetchall()
    for item in parked:
        item["parked_at"] = item["parked_at"].isoformat()
    by_product = {p["product_id"]: p for p in parked}
    for row in rows:
        for key in ("started_at", "finished_at"):
            row[key] = row[key].isoformat() if row[key] is not None else None
        held = by_product.get(row["subject"])
        row["parked"] = (
            None if held is None else {"reason": held["reason"], "error": held["error"], "since": held["parked_at"]}
        )
    return JSONResponse({"products": rows, "parked": parked})
