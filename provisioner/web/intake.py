"""POST /webhooks/portal (and /webhooks/portal/v2): authenticate, parse, then commit inbox row + jobs.

The order of checks is size (413), authentication (401), content type (415) and shape (400); a request
failing any of them stores nothing. A good delivery is recorded and its jobs deferred by one SQL call
(``provisioner_intake``, sql/002_inbox.sql) in one transaction, and only then answered: 202 with the
inbox id, or 200 for a redelivery.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import JSONResponse

from provisioner import jobs
from provisioner.errors import InvalidInput, PayloadTooLarge, ProvisionerError
from provisioner.events import Delivery, parse_delivery
from provisioner.logs import log_event
from provisioner.web.auth import WebhookAuth
from provisioner.web.metrics import WebMetrics

log = logging.getLogger(__name__)

_INTAKE_SQL = (
    "SELECT inbox_id, outcome, job_ids, coalesced FROM provisioner_intake("
    "%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb)"
)
_REJECTED = {400: "invalid", 401: "unauthorized", 413: "too_large", 415: "unsupported_media_type"}


@dataclass(frozen=True)
class IntakeConfig:
    """What the intake needs, passed in by ``create_app``."""

    pool: AsyncConnectionPool[Any]
    auth: WebhookAuth
    metrics: WebMetrics
    max_body_bytes: int
    dedup_seconds: int


async def receive_webhook(request: Request) -> JSONResponse:
    """Handle one delivery; see the module docstring for the order of checks and the answers."""
    config: IntakeConfig = request.app.state.intake
    started = time.perf_counter()
    try:
        body = await read_body(request, config.max_body_bytes)
        mode = config.auth.check(request.headers, request.query_params, body)
        delivery = parse_delivery(body, request.headers)
    except ProvisionerError as exc:
        outcome = _REJECTED.get(exc.http_status, "invalid")
        config.metrics.delivery("unknown", "unknown", outcome)
        log_event(
            log,
            "webhook.rejected",
            level=logging.WARNING,
            status=exc.http_status,
            reason=outcome,
            error=exc.message,
            path=request.url.path,
        )
        return JSONResponse({"error": exc.message}, status_code=exc.http_status)
    try:
        # A structured body is stored as received (already checked to be storable JSON); a binary-mode
        # CloudEvent is stored as the envelope rebuilt from its ce-* headers.
        raw = None if "ce-specversion" in request.headers else body.decode("utf-8")
        inbox_id, outcome, job_ids, coalesced = await _record(config, delivery, raw)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        log_event(
            log,
            "webhook.failed",
            level=logging.ERROR,
            error_type=type(exc).__name__,
            generation=delivery.generation,
            type=delivery.event_type,
        )
        return JSONResponse({"error": "database unavailable; nothing was stored, send again"}, status_code=503)
    except psycopg.DataError as exc:
        log_event(
            log,
            "webhook.rejected",
            level=logging.WARNING,
            status=400,
            reason="unstorable",
            error=str(exc).splitlines()[0],
            path=request.url.path,
        )
        config.metrics.delivery(delivery.generation, delivery.event_type, "invalid")
        return JSONResponse({"error": f"body cannot be stored: {str(exc).splitlines()[0]}"}, status_code=400)
    config.metrics.delivery(delivery.generation, delivery.event_type, outcome)
    config.metrics.latency.observe(time.perf_counter() - started)
    fields = {
        "inbox_id": inbox_id,
        "generation": delivery.generation,
        "type": delivery.event_type,
        "delivery_id": delivery.delivery_id,
        "outcome": outcome,
        "auth": mode,
    }
    if outcome == "duplicate":
        log_event(log, "webhook.duplicate", **fields)
        return JSONResponse({"id": inbox_id, "outcome": outcome}, status_code=200)
    log_event(
        log, "webhook.accepted", jobs=job_ids, coalesced=coalesced, ignored_reason=delivery.ignored_reason, **fields
    )
    return JSONResponse({"id": inbox_id, "outcome": outcome, "jobs": job_ids}, status_code=202)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) as soon as it passes ``limit`` bytes; never reads more."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise InvalidInput("Content-Length is not a number")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body of {declared} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"body is over the {limit} byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


async def _record(config: IntakeConfig, delivery: Delivery, raw: str | None) -> tuple[int, str, list[int], int]:
    window = config.dedup_seconds if delivery.delivery_id is None else None  # ids never expire; v1 digests do
    entity = jobs.entity_of(delivery.triggers[0]) if delivery.triggers else None
    params = (
        delivery.generation,
        delivery.delivery_id,
        delivery.dedup_key,
        window,
        delivery.event_type,
        entity,
        delivery.ignored_reason,
        raw if raw is not None else json.dumps(delivery.body, ensure_ascii=False),
        jobs.defer_payload(delivery.triggers),
    )
    async with config.pool.connection() as conn:
        cur = await conn.execute(_INTAKE_SQL, params)
        row = await cur.fetchone()
    assert row is not None  # the function always returns one row
    return int(row[0]), str(row[1]), list(row[2]), int(row[3])
