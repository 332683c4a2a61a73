"""A small JSON status API over the run records and the parked products."""

from __future__ import annotations

from typing import Any

from psycopg_pool import AsyncConnectionPool
from starlette.requests import Request
from starlette.responses import JSONResponse

from provisioner.persistence import parked as parked_products
from provisioner.persistence import runs


async def products(request: Request) -> JSONResponse:
    """GET /status/products: the latest run of every subject (product, consumer, job), and the parked products.

    A parked product failed permanently (persistence/parked.py); its row carries ``parked`` with the reason, and the
    top-level ``parked`` list names them all.
    """
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    async with pool.connection() as conn:
        rows = await runs.latest_per_subject(conn)
        parked = await parked_products.parked_for_status(conn)
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
