"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (never the process-global one)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import psycopg
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.exposition import ThreadingWSGIServer
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from provisioner.events import KNOWN_V2_TYPES
from provisioner.persistence import queue
from provisioner.web.auth import bearer_matches

#: v1 route names from provisioner.events; other types count as "other" ("unknown" = rejected before parsing).
_V1_TYPES = frozenset(
    {
        "data_product.created",
        "data_product.changed",
        "data_product.deleted",
        "output_port.created",
        "input_port.requested",
        "input_port.removed",
        "input_port.decided",
        "dataset_link.decided",
    }
)
_JOB_STATUSES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborted")


class WebMetrics:
    """Webhook deliveries by generation/type/outcome, intake latency, and the queue depth read at scrape."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.deliveries = Counter(
            "provisioner_webhook_deliveries",
            "Webhook deliveries by generation, event type and outcome",
            ["generation", "type", "outcome"],
            registry=registry,
        )
        self.latency = Histogram(
            "provisioner_webhook_duration_seconds",
            "Time to answer one webhook delivery",
            registry=registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        self.queue = Gauge(
            "provisioner_queue_jobs", "Jobs in the queue by status (read at scrape time)", ["status"], registry=registry
        )

    def delivery(self, generation: str, event_type: str, outcome: str) -> None:
        """Count one delivery; unknown event types share the label ``other``."""
        known = event_type in KNOWN_V2_TYPES or event_type in _V1_TYPES or event_type == "unknown"
        self.deliveries.labels(generation=generation, type=event_type if known else "other", outcome=outcome).inc()


async def metrics_endpoint(request: Request) -> Response:
    """GET /metrics: refresh the queue gauge from the database, then render the app's registry."""
    metrics: WebMetrics = request.app.state.metrics
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    try:
        async with pool.connection(timeout=2) as conn:
            counts = await queue.jobs_by_status(conn)
        for status in _JOB_STATUSES:
            metrics.queue.labels(status=status).set(counts.get(status, 0))
    except (psycopg.Error, PoolTimeout):
        # A scrape must not fail because the database is down (readyz says so): drop the stale figures.
        metrics.queue.clear()
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serve_worker_metrics(port: int, addr: str, registry: CollectorRegistry, token: str | None = None) -> WSGIServer:
    """Serve ``registry`` on ``addr:port`` from a daemon thread (``provisioner worker``); stop with ``shutdown()``.

    prometheus_client's ``start_http_server`` has no authentication; this is the same server with the status token
    checked first (``Authorization: Bearer <token>``, 401 otherwise) when one is set.
    """
    app: WsgiApp = make_wsgi_app(registry)
    if token is not None:
        app = _guarded(app, token)

    class Server(ThreadingWSGIServer):
        address_family = socket.getaddrinfo(addr, port, type=socket.SOCK_STREAM)[0][0]

    httpd = make_server(addr, port, app, Server, handler_class=_QuietHandler)
    threading.Thread(target=httpd.serve_forever, name="worker-metrics", daemon=True).start()
    return httpd


def _guarded(app: WsgiApp, token: str) -> WsgiApp:
    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if bearer_matches(environ.get("HTTP_AUTHORIZATION"), token):
            return app(environ, start_response)
        start_response(
            "401 Unauthorized",
            [("Content-Type", "text/plain; charset=utf-8"), ("WWW-Authenticate", 'Bearer realm="provisioner"')],
        )
        return [b"this endpoint needs Authorization: Bearer <PROVISIONER_STATUS_TOKEN>\n"]

    return guarded


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr (prometheus_client's own server is silent too)."""

    def log_message(self, format: str, *args: Any) -> None:
        pass
