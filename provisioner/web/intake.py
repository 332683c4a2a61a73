"""POST /webhooks/portal (and /webhooks/portal/v2): authenticate, parse, then commit inbox row + jobs.

The order of checks is size (413), authentication (401), content type (415) and shape (400); a request
failing any of them stores nothing. A good delivery is recorded and its jobs deferred by ``provisioner_intake``
(persistence/inbox.py) in one transaction, and only then answered: 202 with the inbox id, or 200
for a redelivery. v1 deliveries are always answered 200 (portal v0.7.0 logs any other status as a failed
delivery) and never dropped as redeliveries: they carry no id, and every approve, revoke or remove on one output
port has the same body. Only a delivery id (CloudEvents, Standard Webhooks) proves a redelivery.

Group commit: deliveries that arrive while a commit is in flight are written together by one statement in one
transaction (``provisioner_intake_batch``), so one WAL flush and one round trip serve the whole batch; each
request is still answered only after the commit that holds it. If a batch fails on one bad body, its
deliveries are written one by one so only that one fails.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse

from provisioner import jobs
from provisioner.errors import (
    DatabaseUnavailable,
    Disposition,
    InvalidInput,
    PayloadTooLarge,
    ProvisionerError,
    RequestTimeout,
    classify,
)
from provisioner.events import Delivery, parse_delivery
from provisioner.logs import log_event
from provisioner.persistence import inbox
from provisioner.persistence.inbox import IntakeRow
from provisioner.web.auth import WebhookAuth
from provisioner.web.metrics import WebMetrics

log = logging.getLogger(__name__)

_REJECTED = {400: "invalid", 401: "unauthorized", 408: "timeout", 413: "too_large", 415: "unsupported_media_type"}
#: Digits of a Content-Length the intake reads (10**18 bytes is far past any limit).
_MAX_LENGTH_DIGITS = 18


class GroupCommitter:
    """Writes deliveries in batches: at most ``writers`` transactions in flight, each taking what has queued."""

    def __init__(self, pool: AsyncConnectionPool[Any], *, writers: int = 4, max_batch: int = 128) -> None:
        self.pool = pool
        self.writers = writers
        self.max_batch = max_batch
        self._pending: list[tuple[str, asyncio.Future[IntakeRow]]] = []
        self._active = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def write(self, item: str) -> IntakeRow:
        """Queue one delivery (its ``provisioner_intake`` arguments as a JSON array); return once committed."""
        future: asyncio.Future[IntakeRow] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._active < self.writers:
            # A task, not this request's coroutine: a client that hangs up must not cancel other deliveries' commit.
            self._active += 1
            task = asyncio.create_task(self._drain())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch :]
                await self._flush(batch)
        finally:
            self._active -= 1

    async def _flush(self, batch: list[tuple[str, asyncio.Future[IntakeRow]]]) -> None:
        try:
            async with self.pool.connection() as conn:  # autocommit: one statement is one transaction
                rows = await inbox.record_deliveries(conn, [item for item, _ in batch])
        except (psycopg.DataError, psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
            # One body the database refuses, or a deadlock between two batches taking the same entities' locks
            # in another order: write them one by one, so only a delivery that really fails is refused.
            if len(batch) == 1:
                _fail(batch, exc)
                return
            for one in batch:
                await self._flush([one])
            return
        except Exception as exc:
            _fail(batch, exc)
            return
        except BaseException:
            for _, future in batch:  # shutting down: these deliveries get no answer, and no 202
                future.cancel()
            raise
        for (_, future), row in zip(batch, rows, strict=True):
            if not future.done():
                future.set_result(row)


def _fail(batch: list[tuple[str, asyncio.Future[IntakeRow]]], exc: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(exc)


@dataclass(frozen=True)
class IntakeConfig:
    """What the intake needs, passed in by ``create_app``."""

    pool: AsyncConnectionPool[Any]
    auth: WebhookAuth
    metrics: WebMetrics
    max_body_bytes: int
    committer: GroupCommitter
    #: A body not received in full within this time is answered 408 and its connection closed (slow clients).
    body_timeout_seconds: float = 10.0


async def receive_webhook(request: Request) -> JSONResponse:
    """Handle one delivery; see the module docstring for the order of checks and the answers."""
    config: IntakeConfig = request.app.state.intake
    started = time.perf_counter()
    try:
        body = await read_body(request, config.max_body_bytes, config.body_timeout_seconds)
        mode = config.auth.check(request.headers, request.query_params, body)
        delivery = parse_delivery(body, request.headers)
    except ClientDisconnect:
        # The sender hung up mid-body: nothing to answer, nothing stored, and not an error of ours.
        config.metrics.delivery("unknown", "unknown", "disconnected")
        log_event(log, "webhook.disconnected", path=request.url.path)
        return _answer(classify(InvalidInput("client disconnected")))
    except (ValueError, RecursionError, UnicodeError) as exc:
        # Bad input the checks above should have named; still the sender's fault, so a 400 and never a 500.
        return _rejected(config, request, InvalidInput(f"request cannot be read ({type(exc).__name__})"))
    except ProvisionerError as exc:
        return _rejected(config, request, exc)
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
        return _answer(classify(DatabaseUnavailable("database unavailable; nothing was stored, send again")))
    except psycopg.DataError as exc:
        refused = classify(InvalidInput(f"body cannot be stored: {str(exc).splitlines()[0]}"))
        log_event(
            log,
            "webhook.rejected",
            level=logging.WARNING,
            status=refused.http_status,
            reason="unstorable",
            error=str(exc).splitlines()[0],
            path=request.url.path,
        )
        config.metrics.delivery(delivery.generation, delivery.event_type, "invalid")
        return _answer(refused)
    config.metrics.delivery(delivery.generation, delivery.event_type, outcome)
    config.metrics.latency.observe(time.perf_counter() - started)
    fields: dict[str, Any] = {
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
    # The v1 sender counts anything but 200 as a failed delivery; v2 and Standard Webhooks senders take any 2xx.
    status = 200 if delivery.generation == "v1" else 202
    return JSONResponse({"id": inbox_id, "outcome": outcome, "jobs": job_ids}, status_code=status)


def _rejected(config: IntakeConfig, request: Request, exc: ProvisionerError) -> JSONResponse:
    disposition = classify(exc)
    status = disposition.http_status
    outcome = _REJECTED.get(status, "invalid")
    config.metrics.delivery("unknown", "unknown", outcome)
    log_event(
        log,
        "webhook.rejected",
        level=logging.WARNING,
        status=status,
        reason=outcome,
        error=disposition.message,
        path=request.url.path,
    )
    # After a 408 or 413 the rest of the body may still be on its way: close the connection rather than read it.
    return _answer(disposition, {"Connection": "close"} if status in (408, 413) else None)


def _answer(failure: Disposition, headers: dict[str, str] | None = None) -> JSONResponse:
    """The response to a delivery that failed, as the error policy (``provisioner.errors.classify``) sees it."""
    return JSONResponse({"error": failure.message}, status_code=failure.http_status, headers=headers)


async def read_body(request: Request, limit: int, timeout_seconds: float | None = None) -> bytes:
    """The request body, refusing (413) as soon as it passes ``limit`` bytes; never reads more.

    The whole body must arrive within ``timeout_seconds`` (408 otherwise): a client trickling a byte at a time
    would otherwise hold its connection, and a slot of the server, for as long as it likes.
    """
    declared = request.headers.get("content-length")
    if declared is not None:
        if not (declared.isascii() and declared.isdigit()) or len(declared) > _MAX_LENGTH_DIGITS:
            raise InvalidInput("Content-Length is not a number of bytes")
        if int(declared) > limit:
            raise PayloadTooLarge(f"body of {declared} bytes is over the {limit} byte limit")
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_seconds):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"body is over the {limit} byte limit")
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"body not received within {timeout_seconds:g} s ({size} bytes arrived); send it at once"
        ) from None
    return b"".join(chunks)


async def _record(config: IntakeConfig, delivery: Delivery, raw: str | None) -> IntakeRow:
    entity = jobs.entity_of(delivery.triggers[0]) if delivery.triggers else None
    head = json.dumps(
        [
            delivery.generation,
            delivery.delivery_id,
            delivery.dedup_key,
            None,  # the dedup window, no longer used: only a delivery id proves a redelivery (sql/005)
            delivery.event_type,
            entity,
            delivery.ignored_reason,
        ],
        ensure_ascii=False,
    )
    # The received body is valid JSON (parse_delivery read it), so it is spliced in as it came, not re-encoded.
    body = raw if raw is not None else json.dumps(delivery.body, ensure_ascii=False)
    return await config.committer.write(inbox.delivery_item(head, body, jobs.defer_payload(delivery.triggers)))
