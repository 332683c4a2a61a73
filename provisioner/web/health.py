"""Liveness and readiness: /healthz says the process is up, /readyz that it can do its job."""

from __future__ import annotations

import asyncio

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse

from provisioner import db
from provisioner.logs import redact_text


async def healthz(request: Request) -> JSONResponse:
    """GET /healthz: 200 while the process serves requests."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """GET /readyz: 200 when PostgreSQL answers and every migration is applied, else 503 saying why."""
    url: str = request.app.state.database_url
    try:
        pending = await asyncio.to_thread(_pending, url)
    except psycopg.Error as exc:
        return JSONResponse(
            {"status": "unavailable", "error": f"database unreachable: {redact_text(str(exc)).strip()}"},
            status_code=503,
        )
    if pending:
        return JSONResponse(
            {"status": "unavailable", "error": "migrations pending", "pending": pending}, status_code=503
        )
    return JSONResponse({"status": "ready"})


def _pending(url: str) -> list[str]:
    with psycopg.connect(url, connect_timeout=3) as conn:
        return db.pending_migrations(conn)
