"""`provisioner serve` (webhook receiver, plus a worker by default) and `provisioner worker`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import gc
import ipaddress
import logging
import math
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import uvicorn
from prometheus_client import CollectorRegistry

from provisioner import jobs
from provisioner.errors import SettingsError
from provisioner.logs import log_event, redact_text
from provisioner.settings import Settings
from provisioner.site import Site, configure_process_logging
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
    p.add_argument("--port", type=_port, help="port to bind (default PROVISIONER_PORT, 8090)")
    p.add_argument("--no-worker", action="store_true", help="only receive webhooks; run `provisioner worker` apart")
    p.set_defaults(func=_serve)

    p = subparsers.add_parser(
        "worker",
        help="run queued jobs (reconciles and the periodic resync)",
        description="Run jobs from the PostgreSQL queue until stopped (Ctrl+C or SIGTERM). Start as many workers as "
        "you like, on as many machines: a product is never reconciled by two of them at once.",
    )
    p.add_argument(
        "--concurrency", type=_whole, help="jobs run at once, 1 or more (default PROVISIONER_WORKER_CONCURRENCY, 4)"
    )
    p.set_defaults(func=_worker)


def _whole(raw: str) -> int:
    """An argparse type: a whole number (its range is checked by the command, for one line and exit code 1)."""
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number") from None


def _port(raw: str) -> int:
    value = _whole(raw)
    if not 0 < value < 65536:
        raise argparse.ArgumentTypeError(f"{raw} is not a port (1-65535)")
    return value


def _serve(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    configure_process_logging(settings)
    host, port = args.host or settings.host, args.port or settings.port
    # Before anything starts: a busy port found after PostgreSQL and the store are up left them for nothing.
    require_free_port(host, port)
    if settings.webhook_secret is None and not is_loopback(host):
        log_event(
            log,
            "serve.auth_off",
            level=logging.WARNING,
            warning=f"webhook authentication is OFF while listening on {host}: anyone who reaches port {port} can "
            "trigger provisioning. Turn it on: set PROVISIONER_WEBHOOK_SECRET to a random value (`openssl rand "
            "-hex 32`), then paste the URL `provisioner webhook-url --base http://<this host>:<port>` prints into the "
            "portal; or listen on 127.0.0.1 only (--host)",
        )
    # A process that runs no worker builds no reconcilers (so no store or portal client either).
    with (
        Site.open(settings, reconcile=not args.no_worker, own_store=True) as site,
        asyncio.Runner(loop_factory=_loop_factory()) as runner,
    ):
        site.enqueue_resync()
        runner.run(serve(site, host=host, port=port, worker=not args.no_worker))
    return 0


def require_free_port(host: str, port: int) -> None:
    """SettingsError (one line) when ``host:port`` cannot be bound (in use, or an address not of this machine)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as probe:
        # As uvicorn binds: connections of an earlier run lingering in TIME_WAIT do not count as busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
            raise SettingsError(
                f"{host}:{port} {reason}: stop what listens there (another `provisioner serve`?) or choose "
                "another port with --port or PROVISIONER_PORT"
            ) from None


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _worker(args: argparse.Namespace) -> int:
    if args.concurrency is not None and args.concurrency < 1:
        # A worker of 0 jobs would register, take no job, and look healthy.
        raise SettingsError(f"--concurrency {args.concurrency}: a worker runs 1 or more jobs at once")
    settings = Settings.from_env()
    configure_process_logging(settings)
    with Site.open(settings, own_store=True) as site:
        metrics = None
        if settings.worker_metrics_port is not None:
            # A worker apart from `serve` (serve --no-worker) has no web app: job metrics get their own endpoint.
            registry = CollectorRegistry()
            metrics = jobs.JobMetrics(registry)
            serve_worker_metrics(settings.worker_metrics_port, settings.host, registry, settings.status_token)
        app = site.job_app(metrics)
        site.enqueue_resync()
        concurrency = args.concurrency or settings.worker_concurrency
        log_event(log, "worker.started", concurrency=concurrency)
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(jobs.run_worker(app, concurrency=concurrency, recover_seconds=settings.worker_recover_seconds))
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when it is installed (as uvicorn's "auto" picks it), else asyncio's own."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


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


def where(site: Site, host: str, port: int) -> dict[str, Any]:
    """What an operator needs at start: the data dir, the database, the store and the webhook URLs (no secret)."""
    s = site.settings
    base = f"http://{socket.gethostname() if host in ('0.0.0.0', '::', '') else host}:{port}"
    v2 = f"{base}/webhooks/portal/v2"
    if s.webhook_secret is not None:
        # The URL's token is a credential: never logged; the command that prints it is named instead.
        v2 += f" (with the token that `provisioner webhook-url --base {base}` prints)"
    if site.reconciling is None:
        store = "none in this process (--no-worker)"
    elif s.embedded_store:
        kind = "in-memory moto, LOST at exit" if s.store_in_memory else f"SeaweedFS, data in {s.data_dir / 's3'}"
        store = f"{site.s3_endpoint} (embedded {kind})"
    else:
        store = f"{site.s3_endpoint} ({s.store_kind})"
    return {
        "data_dir": str(s.data_dir.resolve()),
        "database": f"embedded, data in {s.data_dir / 'postgres'}"
        if s.embedded_database
        else redact_text(site.database_url),
        "store": store,
        "webhook_v1": f"{base}/webhooks/portal",
        "webhook_v2": v2,
        "portal": s.portal_url,
    }


def say_if_portal_unreachable(portal_url: str, timeout: float = 3.0) -> bool:
    """Log once, with what to do, when nothing answers at the portal's URL; True when something does.

    Any HTTP answer counts: this is about reaching the portal, not about its API key (`provisioner check`).
    """
    try:
        httpx.get(portal_url, timeout=timeout)
    except httpx.TransportError as exc:
        log_event(
            log,
            "portal.unreachable",
            level=logging.WARNING,
            warning=f"no portal answers at {portal_url} ({type(exc).__name__}): webhooks are still taken and "
            "queued, and provisioning waits until the portal answers. Set PROVISIONER_PORTAL_URL to your portal; "
            "to try the provisioner without one, run `make demo`",
        )
        return False
    return True


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


async def serve(site: Site, *, host: str, port: int, worker: bool) -> None:
    """Serve the site's web app with uvicorn until SIGINT/SIGTERM; run a worker beside it when asked."""
    s = site.settings
    registry = CollectorRegistry()
    worker_health = jobs.WorkerHealth()
    readiness: dict[str, ReadinessCheck] = {}
    store_probe = site.store_probe()
    if store_probe is not None:
        readiness["store"] = blocking_check("object store", store_probe)
    if worker:
        readiness["worker"] = worker_check(worker_health)
    async with site.open_web(registry, readiness) as app:
        server = _Server(uvicorn_config(app, host=host, port=port, body_timeout_seconds=s.body_timeout_seconds))
        log_event(log, "serve.started", host=host, port=port, worker=worker, auth=s.webhook_secret is not None)
        log_event(log, "serve.where", **where(site, host, port))
        if worker:
            probe = asyncio.create_task(asyncio.to_thread(say_if_portal_unreachable, s.portal_url))
            probe.add_done_callback(lambda t: t.cancelled() or t.exception())  # a failed probe only says less
        worker_task = None
        if worker:
            job_app = site.job_app(jobs.JobMetrics(registry))
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
