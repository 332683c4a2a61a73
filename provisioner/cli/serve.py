"""`provisioner serve` (webhook receiver, plus a worker by default) and `provisioner worker`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry

from provisioner import jobs
from provisioner.cli.runtime import Runtime, open_runtime, reconcile_handlers
from provisioner.logs import log_event
from provisioner.retention import RetentionPolicy
from provisioner.settings import Settings
from provisioner.web import create_app, open_pool
from provisioner.web.auth import WebhookAuth
from provisioner.web.health import ReadinessCheck, blocking_check, worker_check
from provisioner.web.metrics import serve_worker_metrics

log = logging.getLogger(__name__)


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add `serve` and `worker`."""
    p = subparsers.add_parser(
        "serve",
        help="receive portal webhooks (and run one worker in the same process)",
        description="Start the webhook receiver (POST /webhooks/portal and /webhooks/portal/v2, /healthz, /readyz, "
        "/metrics, /status/products). Without PROVISIONER_DATABASE_URL an embedded PostgreSQL is started with its "
        "data under PROVISIONER_DATA_DIR/postgres. A worker runs in the same process unless --no-worker is given.",
    )
    p.add_argument("--host", help="address to bind (default PROVISIONER_HOST, 0.0.0.0)")
    p.add_argument("--port", type=int, help="port to bind (default PROVISIONER_PORT, 8090)")
    p.add_argument("--no-worker", action="store_true", help="only receive webhooks; run `provisioner worker` apart")
    p.set_defaults(func=_serve)

    p = subparsers.add_parser(
        "worker",
        help="run queued jobs (reconciles and the periodic resync)",
        description="Run jobs from the PostgreSQL queue until stopped (Ctrl+C or SIGTERM). Start as many workers as "
        "you like, on as many machines: a product is never reconciled by two of them at once.",
    )
    p.add_argument("--concurrency", type=int, help="jobs run at once (default PROVISIONER_WORKER_CONCURRENCY, 4)")
    p.set_defaults(func=_worker)


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    handlers = None if args.no_worker else reconcile_handlers
    with open_runtime(settings, handlers) as runtime, asyncio.Runner(loop_factory=_loop_factory()) as runner:
        _resync_at_start(runtime)
        runner.run(
            serve(runtime, host=args.host or settings.host, port=args.port or settings.port, worker=not args.no_worker)
        )
    return 0


def _worker(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    with open_runtime(settings) as runtime:
        metrics = None
        if settings.worker_metrics_port is not None:
            # A worker apart from `serve` (serve --no-worker) has no web app: job metrics get their own endpoint.
            registry = CollectorRegistry()
            metrics = jobs.JobMetrics(registry)
            serve_worker_metrics(settings.worker_metrics_port, settings.host, registry, settings.status_token)
        app = _job_app(runtime, metrics)
        _resync_at_start(runtime)
        concurrency = args.concurrency or settings.worker_concurrency
        log_event(log, "worker.started", concurrency=concurrency)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(jobs.run_worker(app, concurrency=concurrency, recover_seconds=settings.worker_recover_seconds))
    return 0


def _resync_at_start(runtime: Runtime) -> None:
    """Queue a resync now (unless resync is off): events the portal sent while we were down are lost."""
    if runtime.settings.resync_seconds > 0:
        jobs.enqueue_resync(runtime.database_url)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (as uvicorn's "auto" picks it), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _job_app(runtime: Runtime, metrics: jobs.JobMetrics | None) -> Any:
    s = runtime.settings
    assert runtime.handlers is not None, "a worker needs handlers"
    return jobs.build_app(
        runtime.database_url,
        runtime.handlers,
        max_attempts=s.job_max_attempts,
        resync_seconds=s.resync_seconds,
        metrics=metrics,
        retention=RetentionPolicy(days=s.retention_days, keep_runs=s.retention_keep_runs),
    )


def _tune_gc() -> None:
    """Keep the garbage collector's pauses out of webhook latency (bench/intake.py: p99 35-38 ms -> ~20 ms).

    Everything alive once the app is built lives as long as the process: freezing it spares every full
    collection a walk over those objects, and a larger first generation runs collections less often.
    Reference cycles are still collected.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 1_000)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM/SIGINT after its graceful exit, which would kill the process before the worker
    and the pool are stopped; swallow that so ``serve`` returns and cleans up."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()


def uvicorn_config(app: Any, *, host: str, port: int, body_timeout_seconds: float) -> uvicorn.Config:
    """uvicorn's settings for ``serve``: no access log (a v2 URL carries its token), bounded waits.

    The intake answers a body that takes longer than ``body_timeout_seconds`` with 408; idle keep-alive
    connections close after 5 s; a graceful stop waits for requests in flight as long as one body may take
    (plus a commit), then closes what is left rather than wait forever for a slow client.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        log_config=None,
        lifespan="off",
        timeout_keep_alive=5,
        timeout_graceful_shutdown=math.ceil(body_timeout_seconds) + 5,
    )


async def serve(runtime: Runtime, *, host: str, port: int, worker: bool) -> None:
    """Serve the web app with uvicorn until SIGINT/SIGTERM; run a worker beside it when asked."""
    s = runtime.settings
    registry = CollectorRegistry()
    pool = await open_pool(runtime.database_url, min_size=2, max_size=8)
    worker_health = jobs.WorkerHealth()
    readiness: dict[str, ReadinessCheck] = {}
    if runtime.store_probe is not None:
        readiness["store"] = blocking_check("object store", runtime.store_probe)
    if worker:
        readiness["worker"] = worker_check(worker_health)
    try:
        app = create_app(
            pool=pool,
            database_url=runtime.database_url,
            auth=WebhookAuth(
                s.webhook_secret, token_max_age=s.webhook_token_max_age, tolerance_seconds=s.webhook_tolerance_seconds
            ),
            registry=registry,
            max_body_bytes=s.max_body_bytes,
            readiness=readiness,
            body_timeout_seconds=s.body_timeout_seconds,
            status_token=s.status_token,
        )
        server = _Server(uvicorn_config(app, host=host, port=port, body_timeout_seconds=s.body_timeout_seconds))
        log_event(log, "serve.started", host=host, port=port, worker=worker, auth=s.webhook_secret is not None)
        worker_task = None
        if worker:
            job_app = _job_app(runtime, jobs.JobMetrics(registry))
            worker_task = asyncio.create_task(
                jobs.run_worker(
                    job_app,
                    concurrency=s.worker_concurrency,
                    install_signal_handlers=False,
                    recover_seconds=s.worker_recover_seconds,
                    health=worker_health,
                )
            )
            # A worker that gave up ends the process (exit 1, so a supervisor restarts it): never a live web
            # that accepts work nobody will do.
            worker_task.add_done_callback(lambda _: setattr(server, "should_exit", True))
        _tune_gc()
        try:
            await server.serve()
        finally:
            if worker_task is not None:
                worker_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await worker_task  # re-raises WorkerStopped when the worker gave up
    finally:
        await pool.close()
