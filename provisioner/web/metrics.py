"""Prometheus metrics of one app, in its own ``CollectorRegistry`` (never the process-global one)."""

from __future__ import annotations

from typing import Any

import psycopg
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import Response

from provisioner.events import KNOWN_V2_TYPES

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
            cur = await conn.execute("SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY status")
            counts = dict(await cur.fetchall())
        for status in _JOB_STATUSES:
            metrics.queue.labels(status=status).set(counts.get(status, 0))
    except (psycopg.Error, PoolTimeout):
        # A scrape must not fail because the database is down (readyz says so): drop the stale figures.
        metrics.queue.clear()
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
