"""A small JSON status API over the run records."""

from __future__ import annotations

from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse

_LATEST_PER_SUBJECT = """
SELECT DISTINCT ON (subject) subject, kind, namespace, status, steps, detail, error, started_at, finished_at
FROM provisioner_runs
ORDER BY subject, started_at DESC, id DESC
LIMIT 1000
"""


async def products(request: Request) -> JSONResponse:
    """GET /status/products: the latest run of every subject (product, consumer, job)."""
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(_LATEST_PER_SUBJECT)
        rows = await cur.fetchall()
    for row in rows:
        for key in ("started_at", "finished_at"):
            row[key] = row[key].isoformat() if row[key] is not None else None
    return JSONResponse({"products": rows})
