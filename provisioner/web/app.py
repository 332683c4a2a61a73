"""The Starlette application: webhook intake, health, metrics, the status API and page, wired from explicit inputs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import CollectorRegistry
from psycopg_pool import AsyncConnectionPool
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from provisioner.errors import ProvisionerError, classify
from provisioner.web import health, page, status
from provisioner.web.auth import StatusTokenGuard, WebhookAuth
from provisioner.web.intake import GroupCommitter, IntakeConfig, receive_webhook
from provisioner.web.metrics import WebMetrics, metrics_endpoint


def create_app(
    *,
    pool: AsyncConnectionPool[Any],
    database_url: str,
    auth: WebhookAuth,
    registry: CollectorRegistry,
    max_body_bytes: int = 1024 * 1024,
    readiness: Mapping[str, health.ReadinessCheck] | None = None,
    body_timeout_seconds: float = 10.0,
    status_token: str | None = None,
) -> Starlette:
    """Build the app; the caller owns ``pool`` (open it before serving, close it after).

    ``readiness`` adds named checks to /readyz beside the database (``serve`` adds its store and worker).
    """
    metrics = WebMetrics(registry)
    routes = [
        Route("/webhooks/portal", receive_webhook, methods=["POST"]),
        Route("/webhooks/portal/v2", receive_webhook, methods=["POST"]),
        Route("/healthz", health.healthz, methods=["GET"]),
        Route("/readyz", health.readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/status/products", status.products, methods=["GET"]),
        Route("/", page.status_page, methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={ProvisionerError: _provisioner_error},
        # With a status token, everything but /healthz, /readyz and the webhooks needs it (see web/auth.py).
        middleware=[Middleware(StatusTokenGuard, token=status_token)],
    )
    app.state.pool = pool
    app.state.database_url = database_url
    app.state.readiness = dict(readiness or {})
    app.state.metrics = metrics
    app.state.intake = IntakeConfig(
        pool=pool,
        auth=auth,
        metrics=metrics,
        max_body_bytes=max_body_bytes,
        committer=GroupCommitter(pool),
        body_timeout_seconds=body_timeout_seconds,
    )
    return app


#: Longest wait of a request for a pooled connection.
POOL_WAIT_SECONDS = 3.0


async def open_pool(database_url: str, *, min_size: int = 2, max_size: int = 16) -> AsyncConnectionPool[Any]:
    """The intake's pool: autocommit connections, so one intake call is one round trip and one transaction."""
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        open=False,
        kwargs={"autocommit": True},
        # After a database restart every pooled connection is broken: replace it before use, not on a 503.
        check=AsyncConnectionPool.check_connection,
        # While the database is down, answer 503 ("send again") within the portal's 5 s webhook timeout instead
        # of queueing for psycopg's default 30 s.
        timeout=POOL_WAIT_SECONDS,
    )
    await pool.open(wait=True, timeout=15)
    return pool


async def _provisioner_error(request: Request, exc: Exception) -> Response:
    disposition = classify(exc)  # the error policy: the status of a ProvisionerError's class, its message
    return JSONResponse({"error": disposition.message}, status_code=disposition.http_status)
