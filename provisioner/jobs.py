"""The durable job queue (procrastinate on PostgreSQL) and the thin tasks that call the job handlers.

One task per trigger kind. Every job carries an entity ``lock`` so two workers never reconcile the same
product at once, and a ``queueing_lock`` so at most one job per entity and kind waits in the queue:
a second trigger while one is waiting is *coalesced* into it (the reconcile is level triggered, so the
waiting job will see the newest state anyway). Deferring goes through the SQL function
``provisioner_defer`` (persistence/queue.py), which inserts into procrastinate's job table with ``ON CONFLICT``
on its queueing-lock index, so it works inside the caller's transaction and never fails on a coalesce.
A periodic task hands the jobs of dead workers (stale heartbeat) back to the queue.

Catching up (migration 005_catch_up): a new trigger for an entity whose job waits for a retry makes that job due
now (``wake``); a job that ends tells the workers when another job of its entity is due, so a job queued behind
an entity's lock starts when the lock is freed rather than at the next poll; ``enqueue_resync`` at start repairs
what the portal sent while nothing was listening (it never retries).

Errors: the error policy (``provisioner.errors.classify``) decides. A permanent failure fails the job at once;
anything else is retried with exponential backoff until ``max_attempts`` attempts have run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import procrastinate
import procrastinate.worker
import psycopg
from procrastinate import JobContext, RetryDecision, signals
from procrastinate.retry import BaseRetryStrategy
from prometheus_client import CollectorRegistry, Counter, Histogram
from psycopg_pool import ConnectionPool

from provisioner.errors import ProvisionerError, classify
from provisioner.events import (
    ReconcileAccess,
    ReconcileOutputPort,
    ReconcileProduct,
    ResyncAll,
    Trigger,
    product_lock,
)
from provisioner.logs import log_event, redact_text
from provisioner.persistence import queue as job_queue
from provisioner.persistence.connections import ConnectionSource, connection
from provisioner.retention import RetentionPolicy, prune

log = logging.getLogger(__name__)

QUEUE = "provisioner"
TASK_PRODUCT = "reconcile_product"
TASK_ACCESS = "reconcile_access"
TASK_OUTPUT_PORT = "reconcile_output_port"
TASK_RESYNC = "resync"
TASK_STALLED = "retry_stalled_jobs"
TASK_RETENTION = "prune_old_records"
#: Retention runs hourly (at a minute no other periodic task uses), so each run has little to delete.
RETENTION_CRON = "41 * * * *"
RESYNC_LOCK = "resync"
#: Backoff of the n-th retry is ``backoff_seconds * 2**(n-1)``, capped here.
MAX_BACKOFF_SECONDS = 3600
#: Connections of the queue connector's async pool (procrastinate's default: LISTEN, job fetches, status updates).
QUEUE_POOL_SIZE = 4


class JobHandlers(Protocol):
    """What the worker calls; sync functions (they run in worker threads). Must be idempotent.

    A reconcile may return follow-up triggers (e.g. the consumers of a deleted producer); they are enqueued
    once the handler succeeded, coalesced like any other trigger.
    """

    def reconcile_product(self, product_id: str) -> Sequence[Trigger] | None:
        """Converge one data product to the portal's current state."""
        ...

    def reconcile_access(self, consumer_id: str) -> Sequence[Trigger] | None:
        """Converge one consumer's grants to the portal's current approvals."""
        ...

    def reconcile_output_port(self, producer_id: str, output_port_id: str) -> Sequence[Trigger] | None:
        """Name the consumers an output-port decision concerns (returned as follow-up triggers)."""
        ...

    def resync(self) -> Sequence[Trigger]:
        """Plan the reconciles that repair drift from the portal (enqueued without waking backed-off jobs)."""
        ...


@dataclass(frozen=True)
class JobSpec:
    """How one trigger becomes one procrastinate job."""

    task_name: str
    lock: str
    queueing_lock: str
    args: dict[str, str]


@dataclass(frozen=True)
class EnqueueOutcome:
    """The result of enqueueing one trigger: a new job id, or coalesced into a waiting job."""

    trigger: Trigger
    job_id: int | None

    @property
    def coalesced(self) -> bool:
        """True when a job for the same entity and kind was already waiting."""
        return self.job_id is None


def job_spec(trigger: Trigger) -> JobSpec:
    """The task, entity lock, queueing lock and arguments of ``trigger``."""
    match trigger:
        case ReconcileProduct(product_id=pid):
            return JobSpec(TASK_PRODUCT, product_lock(pid), f"{TASK_PRODUCT}:{pid}", {"product_id": pid})
        case ReconcileAccess(consumer_id=cid):
            # Access grants live on the consumer product: serialise with its product reconcile.
            return JobSpec(TASK_ACCESS, product_lock(cid), f"{TASK_ACCESS}:{cid}", {"consumer_id": cid})
        case ReconcileOutputPort(producer_id=pid, output_port_id=opid):
            return JobSpec(
                TASK_OUTPUT_PORT,
                f"output_port:{pid}:{opid}",
                f"{TASK_OUTPUT_PORT}:{pid}:{opid}",
                {"producer_id": pid, "output_port_id": opid},
            )
        case ResyncAll():
            return JobSpec(TASK_RESYNC, RESYNC_LOCK, RESYNC_LOCK, {})
    raise TypeError(f"not a trigger: {trigger!r}")


def entity_of(trigger: Trigger) -> str:
    """The entity a trigger is about (its lock key), for the inbox and logs."""
    return job_spec(trigger).lock


def defer_payload(triggers: Sequence[Trigger]) -> str:
    """The JSON array ``provisioner_defer``/``provisioner_intake`` take: one job per trigger, in order."""
    specs = [job_spec(t) for t in triggers]
    return json.dumps(
        [{"task": s.task_name, "lock": s.lock, "queueing_lock": s.queueing_lock, "args": s.args} for s in specs]
    )


def enqueue(conn: psycopg.Connection[Any], triggers: Sequence[Trigger], *, wake: bool = True) -> list[EnqueueOutcome]:
    """Enqueue ``triggers`` inside the caller's transaction; coalesced per entity and kind.

    With ``wake``, a job of the same entity waiting for a retry runs now: a trigger is news, and the retry's
    backoff was waiting for something to change. (The web intake defers in the same SQL, ``provisioner_intake``.)
    """
    if not triggers:
        return []
    return _outcomes(triggers, job_queue.defer(conn, defer_payload(triggers), QUEUE, wake))


def enqueue_resync(connections: ConnectionSource) -> bool:
    """Queue one resync (coalesced with a waiting one); True when a new job was queued.

    ``serve`` and ``worker`` call it at start: the portal neither retries nor replays, so whatever it sent while
    the provisioner was down is only found by comparing with its API.
    """
    with connection(connections) as conn:
        (outcome,) = enqueue(conn, [ResyncAll()])
    log_event(log, "job.resync_at_start", enqueued=not outcome.coalesced)
    return not outcome.coalesced


def _outcomes(triggers: Sequence[Trigger], deferred: list[int | None] | None) -> list[EnqueueOutcome]:
    ids: list[int | None] = deferred if deferred is not None else [None] * len(triggers)
    return [EnqueueOutcome(t, i) for t, i in zip(triggers, ids, strict=True)]


class JobMetrics:
    """Job outcomes and durations, registered in the given (per-app) registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.outcomes = Counter(
            "provisioner_jobs", "Jobs finished, by task and outcome", ["task", "outcome"], registry=registry
        )
        self.durations = Histogram(
            "provisioner_job_duration_seconds",
            "Run time of a job, by task",
            ["task"],
            registry=registry,
            buckets=(0.01, 0.05, 0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )


class _Backoff(BaseRetryStrategy):
    """Exponential backoff for what the error policy retries; none for a permanent failure."""

    def __init__(self, max_attempts: int, backoff_seconds: float) -> None:
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds

    def get_retry_decision(self, *, exception: BaseException, job: procrastinate.jobs.Job) -> RetryDecision | None:
        if not classify(exception).retries(job.attempts + 1, self.max_attempts):
            return None
        wait = min(self.backoff_seconds * 2**job.attempts, MAX_BACKOFF_SECONDS)
        return RetryDecision(retry_in={"seconds": wait})


def build_app(
    database_url: str,
    handlers: JobHandlers,
    *,
    max_attempts: int,
    resync_seconds: int,
    backoff_seconds: float = 2.0,
    metrics: JobMetrics | None = None,
    stalled_after_seconds: float = 30.0,
    retention: RetentionPolicy | None = None,
    pool: ConnectionPool | None = None,
    queue_pool_size: int = QUEUE_POOL_SIZE,
) -> procrastinate.App:
    """A procrastinate App whose four tasks call ``handlers``; resync runs periodically unless 0.

    Follow-ups and retention borrow from ``pool`` (the process's sync pool) when given, else connect to
    ``database_url``; the queue's connector keeps its own async pool of ``queue_pool_size`` connections.
    """
    app, retry = _queue_app(database_url, queue_pool_size, max_attempts, backoff_seconds)
    connections: ConnectionSource = pool if pool is not None else database_url

    def enqueue_logged(event: str, triggers: Sequence[Trigger], *, wake: bool = True, **fields: object) -> None:
        with connection(connections) as conn:
            outcomes = enqueue(conn, triggers, wake=wake)
        # level given, so that no key of ``fields`` can be taken for it (mypy checks the call).
        coalesced = sum(o.coalesced for o in outcomes)
        log_event(log, event, level=logging.INFO, triggers=len(outcomes), coalesced=coalesced, **fields)

    def follow_up(triggers: Sequence[Trigger]) -> None:
        enqueue_logged("job.follow_up_enqueued", triggers, entities=[entity_of(t) for t in triggers])

    runner = _Runner(max_attempts, metrics, follow_up)

    @app.task(name=TASK_PRODUCT, queue=QUEUE, retry=retry, pass_context=True)
    def reconcile_product(context: JobContext, product_id: str) -> None:
        runner.run(context, TASK_PRODUCT, lambda: handlers.reconcile_product(product_id), product_id=product_id)

    @app.task(name=TASK_ACCESS, queue=QUEUE, retry=retry, pass_context=True)
    def reconcile_access(context: JobContext, consumer_id: str) -> None:
        runner.run(context, TASK_ACCESS, lambda: handlers.reconcile_access(consumer_id), consumer_id=consumer_id)

    @app.task(name=TASK_OUTPUT_PORT, queue=QUEUE, retry=retry, pass_context=True)
    def reconcile_output_port(context: JobContext, producer_id: str, output_port_id: str) -> None:
        runner.run(
            context,
            TASK_OUTPUT_PORT,
            lambda: handlers.reconcile_output_port(producer_id, output_port_id),
            producer_id=producer_id,
            output_port_id=output_port_id,
        )

    def resync_and_enqueue() -> None:
        # No wake: resync names every product that is not converged, a failing one too, and must not shorten its
        # backoff to the resync period (a webhook about it does).
        enqueue_logged("job.resync_enqueued", list(handlers.resync()), wake=False)

    @app.task(
        name=TASK_RESYNC, queue=QUEUE, retry=retry, pass_context=True, lock=RESYNC_LOCK, queueing_lock=RESYNC_LOCK
    )
    def resync(context: JobContext, timestamp: int | None = None) -> None:
        runner.run(context, TASK_RESYNC, resync_and_enqueue)

    _add_stalled_repair(app, TASK_STALLED, QUEUE, "retry_stalled", stalled_after_seconds)
    if resync_seconds > 0:
        app.periodic(cron=resync_cron(resync_seconds), periodic_id="resync")(resync)
    if retention is not None:
        add_retention_task(app, connections, retention)
    return app


def _queue_app(
    database_url: str, pool_size: int, max_attempts: int, backoff_seconds: float
) -> tuple[procrastinate.App, _Backoff]:
    """A procrastinate App on its own connector, and the retry strategy its retried tasks share (both queues)."""
    return procrastinate.App(connector=_connector(database_url, pool_size)), _Backoff(max_attempts, backoff_seconds)


def _connector(database_url: str, pool_size: int) -> procrastinate.PsycopgConnector:
    """The queue's connector: its own async pool (``run_worker`` closes and reopens it after a lost database).

    A bounded wait for a pooled connection: while the database is away, the worker's calls fail after seconds (and
    run_worker restarts it) instead of hanging for psycopg's default 30 s each.
    """
    return procrastinate.PsycopgConnector(
        conninfo=database_url, timeout=POOL_WAIT_SECONDS, min_size=pool_size, max_size=pool_size
    )


def _add_stalled_repair(
    app: procrastinate.App, task: str, queue: str, periodic_id: str, stalled_after_seconds: float
) -> None:
    """Register the every-minute task that requeues the jobs of ``queue``'s dead workers (``retry_stalled_jobs``)."""

    @app.periodic(cron="* * * * *", periodic_id=periodic_id)
    @app.task(name=task, queue=queue, queueing_lock=task, pass_context=True)
    async def retry_stalled(context: JobContext, timestamp: int) -> None:
        await retry_stalled_jobs(app, stalled_after_seconds)


def add_retention_task(app: procrastinate.App, connections: ConnectionSource, policy: RetentionPolicy) -> None:
    """Register the hourly task that deletes old inbox rows, finished jobs and run records (provisioner.retention).

    One at a time (a queueing lock and a lock), so two workers never prune at once; with ``days`` 0 it is not
    scheduled at all.
    """

    @app.task(name=TASK_RETENTION, queue=QUEUE, queueing_lock=TASK_RETENTION, lock=TASK_RETENTION, pass_context=True)
    def prune_old_records(context: JobContext, timestamp: int | None = None) -> None:
        prune(connections, policy)

    if policy.enabled:
        app.periodic(cron=RETENTION_CRON, periodic_id="retention")(prune_old_records)


#: The queue of the DataHub plugin's jobs (migration 011 fills it): its own worker, with its own clients, takes them.
DATAHUB_QUEUE = "datahub"
TASK_TOKENIZE_DATASET = "tokenize_dataset"
TASK_DATAHUB_SCAN = "datahub_scan"
TASK_DATAHUB_STALLED = "datahub_retry_stalled_jobs"


class DatasetHandlers(Protocol):
    """What the DataHub worker calls (``provisioner.datahub.handler.DatasetTokenizer``); sync, idempotent."""

    def tokenize_dataset(self, dataset_urn: str, stamp: int) -> None:
        """Tokenize the dataset as requested at ``stamp`` and report the run to DataHub."""
        ...

    def scan(self) -> int:
        """Queue the tagged datasets that have no run since the tag was set (lost events); return how many."""
        ...


def build_datahub_app(
    database_url: str,
    handlers: DatasetHandlers,
    *,
    max_attempts: int,
    scan_seconds: int = 0,
    backoff_seconds: float = 2.0,
    metrics: JobMetrics | None = None,
    stalled_after_seconds: float = 30.0,
) -> procrastinate.App:
    """A procrastinate App for the ``datahub`` queue: ``tokenize_dataset`` jobs (queued by the plugin's act(),
    locked per dataset), the lost-event scan every ``scan_seconds`` (0: never) and the stalled-job repair."""
    app, retry = _queue_app(database_url, QUEUE_POOL_SIZE, max_attempts, backoff_seconds)
    runner = _Runner(max_attempts, metrics)

    @app.task(name=TASK_TOKENIZE_DATASET, queue=DATAHUB_QUEUE, retry=retry, pass_context=True)
    def tokenize_dataset(context: JobContext, dataset_urn: str, stamp: int) -> None:
        runner.run(
            context,
            TASK_TOKENIZE_DATASET,
            lambda: handlers.tokenize_dataset(dataset_urn, stamp),
            dataset_urn=dataset_urn,
            stamp=str(stamp),
        )

    @app.task(
        name=TASK_DATAHUB_SCAN,
        queue=DATAHUB_QUEUE,
        pass_context=True,
        lock=TASK_DATAHUB_SCAN,
        queueing_lock=TASK_DATAHUB_SCAN,
    )
    def datahub_scan(context: JobContext, timestamp: int | None = None) -> None:
        runner.run(context, TASK_DATAHUB_SCAN, handlers.scan)

    _add_stalled_repair(app, TASK_DATAHUB_STALLED, DATAHUB_QUEUE, "datahub_retry_stalled", stalled_after_seconds)
    if scan_seconds > 0:
        app.periodic(cron=resync_cron(scan_seconds), periodic_id="datahub_scan")(datahub_scan)
    return app


async def retry_stalled_jobs(app: procrastinate.App, stalled_after_seconds: float = 30.0) -> int:
    """Requeue the jobs of workers whose heartbeat is older than ``stalled_after_seconds``; return how many.

    A worker killed mid-job (kill -9, OOM, a lost machine) leaves its job "doing" forever; reconciles are
    idempotent, so handing the job to another worker is always safe.
    """
    stalled = list(await app.job_manager.get_stalled_jobs(seconds_since_heartbeat=stalled_after_seconds))
    for job in stalled:
        await app.job_manager.retry_job(job)
        log_event(log, "job.stalled_retried", job_id=job.id, task=job.task_name, lock=job.lock)
    return len(stalled)


def resync_cron(seconds: int) -> str:
    """A cron expression close to "every ``seconds``" (procrastinate schedules periodic jobs by cron)."""
    if seconds < 60:
        return f"* * * * * */{seconds}"  # croniter's sixth field is seconds
    minutes = max(1, round(seconds / 60))
    if minutes < 60:
        return f"*/{minutes} * * * *"
    hours = max(1, round(minutes / 60))
    return f"0 */{hours} * * *" if hours < 24 else "0 0 * * *"


class _Runner:
    """Logs job.started / job.succeeded / job.failed and records metrics around one handler call."""

    def __init__(
        self,
        max_attempts: int,
        metrics: JobMetrics | None,
        follow_up: Callable[[Sequence[Trigger]], None] | None = None,
    ) -> None:
        self.max_attempts = max_attempts
        self.metrics = metrics
        self.follow_up = follow_up

    def run(self, context: JobContext, task: str, call: Callable[[], object], **ids: str) -> None:
        job = context.job
        attempt = job.attempts + 1
        log_event(log, "job.started", level=logging.INFO, job_id=job.id, task=task, attempt=attempt, **ids)
        started = time.perf_counter()
        try:
            result = call()
            if result and self.follow_up is not None:
                self.follow_up(list(result))  # type: ignore[call-overload]
        except Exception as exc:
            retry = classify(exc).retries(attempt, self.max_attempts)  # what _Backoff decides, from the same policy
            self._observe(task, "retried" if retry else "failed", started)
            log_event(
                log,
                "job.failed",
                level=logging.WARNING if retry else logging.ERROR,
                job_id=job.id,
                task=task,
                attempt=attempt,
                max_attempts=self.max_attempts,
                will_retry=retry,
                error_type=type(exc).__name__,
                error=str(exc),
                **ids,
            )
            raise
        self._observe(task, "succeeded", started)
        log_event(log, "job.succeeded", level=logging.INFO, job_id=job.id, task=task, attempt=attempt, **ids)

    def _observe(self, task: str, outcome: str, started: float) -> None:
        if self.metrics is not None:
            self.metrics.outcomes.labels(task=task, outcome=outcome).inc()
            self.metrics.durations.labels(task=task).observe(time.perf_counter() - started)


@dataclass
class WorkerHealth:
    """Whether the worker of this process is running now; written by ``run_worker``, read by /readyz."""

    running: bool = False
    reason: str = "the worker has not started yet"


class WorkerStopped(ProvisionerError):
    """The worker lost PostgreSQL and could not get back within its recovery time: the process should exit."""


#: How long the worker's database calls wait for a pooled connection.
POOL_WAIT_SECONDS = 5.0
#: First wait before a worker restarts after losing its database; doubled up to the cap.
RESTART_BACKOFF_SECONDS = 0.5
RESTART_BACKOFF_CAP_SECONDS = 10.0
#: A worker that ran this long before it stopped counts as recovered (its failure streak starts again).
HEALTHY_RUN_SECONDS = 10.0


async def run_worker(
    app: procrastinate.App,
    *,
    concurrency: int,
    wait: bool = True,
    install_signal_handlers: bool = True,
    name: str = "provisioner-worker",
    polling_interval: float = 5.0,
    recover_seconds: float = 300.0,
    health: WorkerHealth | None = None,
    queues: Sequence[str] = (QUEUE,),
) -> None:
    """Run a worker until stopped (or, with ``wait=False``, until the queue is empty); ``queues`` it takes jobs from.

    Workers learn of due jobs by LISTEN/NOTIFY (inserts, and migration 005's notices when a lock is freed or a retry is
    pulled forward); ``polling_interval`` is only the fallback for jobs that become due by the clock (retries).

    procrastinate's worker stops for good when its connection to PostgreSQL breaks (a database restart, a
    failover): its listener or heartbeat task fails and it shuts down, or fetching a job raises. So this runs
    it in a loop: after such a stop it reopens the app and starts a new worker, waiting 0.5 s, 1 s, 2 s … 10 s
    between tries, and first hands the jobs the old worker had taken back to the queue. When no worker runs
    again within ``recover_seconds`` of the first failure, ``WorkerStopped`` is raised, so the process exits
    non-zero and a supervisor restarts it. ``health`` says at every moment whether a worker runs (for /readyz).
    """
    health = health if health is not None else WorkerHealth()
    stop = asyncio.Event()
    failing_since: float | None = None
    delay = RESTART_BACKOFF_SECONDS
    previous_worker_id: int | None = None
    with signals.on_stop(stop.set) if install_signal_handlers else contextlib.nullcontext():
        while not stop.is_set():
            ran_since: float | None = None
            worker = _Worker(
                app,
                queues=list(queues),
                name=name,
                concurrency=concurrency,
                wait=wait,
                install_signal_handlers=False,
                fetch_job_polling_interval=polling_interval,
            )
            try:
                await _open_app(app, timeout=min(RESTART_BACKOFF_CAP_SECONDS, max(1.0, recover_seconds)))
                try:
                    await _release_jobs_of(app, previous_worker_id)
                    previous_worker_id = None
                    health.running, health.reason = True, ""
                    if failing_since is not None:
                        log_event(log, "worker.recovered", down_seconds=round(time.monotonic() - failing_since, 1))
                    ran_since = time.monotonic()
                    await _run_until_stopped(worker, stop)
                finally:
                    # Say why before anyone can see "not running": closing the connector yields to the event loop,
                    # and readiness must never read a stopped worker with no reason. The paths below refine it.
                    health.running, health.reason = False, "the worker lost the database and is reconnecting"
                    await app.connector.close_async()
            except asyncio.CancelledError:
                health.reason = "the worker was stopped"
                raise
            except TimeoutError:
                reason = "PostgreSQL did not answer"
            except Exception as exc:  # a broken connection surfaces as many types; any failure gets a restart
                reason = _reason(exc)
            else:
                if stop.is_set() or not wait:
                    break
                reason = "procrastinate's worker stopped by itself (its listener or heartbeat lost the database)"
            if worker.worker_id is not None:
                previous_worker_id = worker.worker_id  # not unregistered: its jobs may still be marked as running
            now = time.monotonic()
            if failing_since is None or (ran_since is not None and now - ran_since >= HEALTHY_RUN_SECONDS):
                failing_since, delay = now, RESTART_BACKOFF_SECONDS
            if now - failing_since + delay > recover_seconds:
                health.reason = f"the worker could not get back within {recover_seconds:g} s: {reason}"
                log_event(log, "worker.gave_up", level=logging.ERROR, recover_seconds=recover_seconds, reason=reason)
                raise WorkerStopped(
                    f"the worker lost PostgreSQL and could not get back within {recover_seconds:g} s "
                    f"(PROVISIONER_WORKER_RECOVER_SECONDS): {reason}"
                )
            health.reason = f"the worker lost the database and is reconnecting: {reason}"
            log_event(log, "worker.restarting", level=logging.WARNING, reason=reason, in_seconds=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, RESTART_BACKOFF_CAP_SECONDS)
    health.reason = "the worker was stopped"


class _Worker(procrastinate.worker.Worker):
    """procrastinate's worker, saying so when the end of a job could not be written, and losing no wake-up.

    When the database goes away while a job ends, writing its status fails inside procrastinate's job task,
    whose exception nobody awaits: asyncio would report it only when the task is garbage collected. The job
    stays marked as running; ``run_worker`` hands it back to the queue when the worker restarts.

    procrastinate clears its new-job event after every fetch. A NOTIFY that arrives while a fetch is under way
    (the fetch's snapshot taken before that job's commit: a coalesced trigger pulling a retry forward, a job freed
    by its entity's lock) was therefore lost until the next poll. The worker fetches again when one came.
    """

    _notified = 0

    async def _handle_notification(self, *, channel: str, notification: Any) -> None:
        if notification.get("type") == "job_inserted":
            self._notified += 1
        await super()._handle_notification(channel=channel, notification=notification)

    async def _fetch_and_process_jobs(self) -> None:
        while True:
            seen = self._notified
            await super()._fetch_and_process_jobs()  # type: ignore[no-untyped-call]  # unannotated upstream
            if self._notified == seen or self._stop_event.is_set():
                return

    async def _process_job(self, context: JobContext) -> None:
        try:
            await super()._process_job(context)
        except Exception as exc:
            job = context.job
            log_event(
                log,
                "job.status_not_saved",
                level=logging.WARNING,
                job_id=job.id,
                task=job.task_name,
                error=_reason(exc),
            )


def _reason(exc: BaseException) -> str:
    """The root cause of a failure, in one line (procrastinate wraps psycopg's errors in a vague one)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = redact_text(str(exc)).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


async def _open_app(app: procrastinate.App, timeout: float) -> None:
    """Open the app's pool, giving up after ``timeout`` (psycopg's pool would wait 30 s for a database that is down)."""
    try:
        await asyncio.wait_for(app.connector.open_async(), timeout)
    except BaseException:
        await app.connector.close_async()  # the pool a timeout left half open
        raise


async def _release_jobs_of(app: procrastinate.App, worker_id: int | None) -> None:
    """Hand the jobs of this process's previous worker back to the queue.

    That worker waited for its running jobs before it stopped, so none of them runs any more; but a job whose
    end could not be written while the database was away is still marked as running by that worker.
    Unregistering the worker detaches its jobs, and ``retry_stalled_jobs`` requeues jobs without a worker.
    """
    if worker_id is not None:
        await app.job_manager.unregister_worker(worker_id)
    await retry_stalled_jobs(app)


async def _run_until_stopped(worker: procrastinate.worker.Worker, stop: asyncio.Event) -> None:
    """Run ``worker`` until it returns, stopping it gracefully once ``stop`` is set."""

    async def stop_when_asked() -> None:
        await stop.wait()
        worker.stop()

    watcher = asyncio.create_task(stop_when_asked())
    try:
        await worker.run()
    finally:
        watcher.cancel()
