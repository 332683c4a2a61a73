"""Liveness and readiness: /healthz says the process is up, /readyz that it can do its job.

/readyz always checks the provisioner's PostgreSQL (reachable, every migration applied). The process adds
the checks that apply to it (``create_app(readiness=...)``): ``serve`` with its worker adds the object store
and the worker itself, so a process whose worker stopped or whose store is away leaves the load balancer
instead of taking webhooks nobody works on. Every check has a time bound, so a hung dependency answers 503,
not a probe timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor

import psycopg
from starlette.requests import Request
from starlette.responses import JSONResponse

from provisioner import db
from provisioner.jobs import WorkerHealth
from provisioner.logs import redact_text

#: A readiness condition: returns None when it holds, else the reason (shown in /readyz; never a secret).
ReadinessCheck = Callable[[], Awaitable[str | None]]

#: The longest one check may take before /readyz calls it failed.
CHECK_TIMEOUT_SECONDS = 3.0


async def healthz(request: Request) -> JSONResponse:
    """GET /healthz: 200 while the process serves requests (liveness: restart the process only if this fails)."""
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> JSONResponse:
    """GET /readyz: 200 when the database is ready and every added check holds, else 503 saying why."""
    url: str = request.app.state.database_url
    checks: Mapping[str, ReadinessCheck] = request.app.state.readiness
    # Two awaitables, so the result is typed: (the database's answer, the added checks' answers in order).
    (db_problem, pending), others = await asyncio.gather(
        _database(url), asyncio.gather(*(_bounded(check) for check in checks.values()))
    )
    problems = {"database": db_problem, **dict(zip(checks, others, strict=True))}
    failed = {name: reason for name, reason in problems.items() if reason is not None}
    if not failed:
        return JSONResponse({"status": "ready"})
    body: dict[str, object] = {"status": "unavailable", "error": "; ".join(failed.values())}
    if pending:
        body["pending"] = pending
    body["checks"] = {name: reason or "ok" for name, reason in problems.items()}
    return JSONResponse(body, status_code=503)


async def _database(url: str) -> tuple[str | None, list[str]]:
    try:
        pending = await asyncio.wait_for(asyncio.to_thread(_pending, url), CHECK_TIMEOUT_SECONDS + 1)
    except (psycopg.Error, OSError) as exc:
        first = (redact_text(str(exc)).strip().splitlines() or [type(exc).__name__])[0]
        return f"database unreachable: {first}", []
    except TimeoutError:
        return f"database did not answer within {CHECK_TIMEOUT_SECONDS + 1:g} s", []
    return ("migrations pending", pending) if pending else (None, [])


def _pending(url: str) -> list[str]:
    with psycopg.connect(url, connect_timeout=int(CHECK_TIMEOUT_SECONDS)) as conn:
        return db.pending_migrations(conn)


async def _bounded(check: ReadinessCheck) -> str | None:
    try:
        return await asyncio.wait_for(check(), CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_SECONDS:g} s"
    except Exception as exc:  # a readiness probe answers 503 with a reason, never 500
        return f"check failed: {type(exc).__name__}: {redact_text(str(exc)).strip()}"


def worker_check(health: WorkerHealth) -> ReadinessCheck:
    """Ready while the worker of this process runs (it stops when it lost the database and is reconnecting)."""

    async def check() -> str | None:
        return None if health.running else f"worker not running: {health.reason}"

    return check


def blocking_check(what: str, probe: Callable[[], object], timeout: float = CHECK_TIMEOUT_SECONDS) -> ReadinessCheck:
    """A check that calls the blocking ``probe`` (raising when ``what`` is unreachable) in its own thread.

    One probe runs at a time: a probe that hangs is awaited again by the next request instead of piling up
    threads (the shared executor also runs the jobs).
    """
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"readyz-{what}")
    inflight: asyncio.Future[object] | None = None

    async def check() -> str | None:
        nonlocal inflight
        if inflight is None or inflight.done():
            inflight = asyncio.get_running_loop().run_in_executor(executor, probe)
        try:
            await asyncio.wait_for(asyncio.shield(inflight), timeout)
        except TimeoutError:
            return f"{what} did not answer within {timeout:g} s"
        except Exception as exc:  # whatever the probe raises means "unreachable"; say what it was
            return f"{what} unreachable: {redact_text(str(exc)).strip() or type(exc).__name__}"
        return None

    return check
