"""The durable queue against real PostgreSQL and a real procrastinate worker."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from provisioner import jobs
from provisioner.errors import PermanentError, TemporaryError
from provisioner.events import ReconcileAccess, ReconcileOutputPort, ReconcileProduct, ResyncAll, Trigger

P1 = "11111111-1111-4111-8111-111111111111"
P2 = "22222222-2222-4222-8222-222222222222"
OP = "33333333-3333-4333-8333-333333333333"


def _jobs(url: str) -> list[tuple[str, str, int, Any]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT task_name, status::text, attempts, args FROM procrastinate_jobs"
            " WHERE task_name <> 'retry_stalled_jobs' ORDER BY id"
        ).fetchall()
    return [(r[0], r[1], r[2], r[3]) for r in rows]


async def _drain(app: Any, url: str, concurrency: int = 1) -> None:
    """Run the worker until no job is waiting (a worker with wait=False stops when all it can fetch is locked)."""
    for _ in range(20):
        await jobs.run_worker(app, concurrency=concurrency, wait=False, install_signal_handlers=False)
        if not any(r[1] == "todo" for r in _jobs(url)):
            return
    raise AssertionError("jobs still waiting after 20 worker runs")


class RecordingHandlers:
    """Handlers for tests of the queue itself: each job writes a ``provisioner_runs`` row (kind ``job``)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def reconcile_product(self, product_id: str) -> None:
        """Record that a product reconcile ran."""
        self._record(product_id, jobs.TASK_PRODUCT)

    def reconcile_access(self, consumer_id: str) -> None:
        """Record that an access reconcile ran."""
        self._record(consumer_id, jobs.TASK_ACCESS)

    def reconcile_output_port(self, producer_id: str, output_port_id: str) -> None:
        """Record that an output-port reconcile ran."""
        self._record(f"{producer_id}/{output_port_id}", jobs.TASK_OUTPUT_PORT)

    def resync(self) -> Sequence[Trigger]:
        """Record that a resync ran; it knows no portal, so it enqueues nothing."""
        self._record("all", jobs.TASK_RESYNC)
        return ()

    def _record(self, subject: str, task: str) -> None:
        with psycopg.connect(self.database_url) as conn:
            conn.execute(
                "INSERT INTO provisioner_runs (kind, subject, status, detail, finished_at)"
                " VALUES ('job', %s, 'success', %s::jsonb, now())",
                (subject, json.dumps({"task": task})),
            )


class Scripted:
    """Handlers whose behaviour each test scripts; records every call."""

    def __init__(self, failures: Sequence[BaseException] = (), resync: Sequence[Trigger] = ()) -> None:
        self.failures = list(failures)
        self.calls: list[tuple[str, ...]] = []
        self.to_resync = list(resync)
        self.lock = threading.Lock()

    def _call(self, *call: str) -> None:
        with self.lock:
            self.calls.append(call)
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            raise failure

    def reconcile_product(self, product_id: str) -> None:
        self._call("product", product_id)

    def reconcile_access(self, consumer_id: str) -> None:
        self._call("access", consumer_id)

    def reconcile_output_port(self, producer_id: str, output_port_id: str) -> None:
        self._call("output_port", producer_id, output_port_id)

    def resync(self) -> Sequence[Trigger]:
        self._call("resync")
        return self.to_resync


def test_enqueue_coalesces_per_entity_and_kind(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        first = jobs.enqueue(conn, [ReconcileProduct(P1), ReconcileAccess(P1), ReconcileOutputPort(P1, OP)])
        second = jobs.enqueue(conn, [ReconcileProduct(P1), ReconcileProduct(P2), ResyncAll(), ResyncAll()])
    assert [o.coalesced for o in first] == [False, False, False]
    assert [o.coalesced for o in second] == [True, False, False, True]
    rows = _jobs(pg_url)
    assert [r[0] for r in rows] == [
        "reconcile_product",
        "reconcile_access",
        "reconcile_output_port",
        "reconcile_product",
        "resync",
    ]
    with psycopg.connect(pg_url) as conn:
        locks = conn.execute("SELECT lock FROM procrastinate_jobs ORDER BY id").fetchall()
    assert [r[0] for r in locks] == [
        f"product:{P1}",
        f"product:{P1}",
        f"output_port:{P1}:{OP}",
        f"product:{P2}",
        "resync",
    ]


def test_enqueue_rolls_back_with_the_callers_transaction(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1)])
        conn.rollback()
    assert _jobs(pg_url) == []


async def test_worker_runs_recording_handlers(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1), ReconcileAccess(P2), ReconcileOutputPort(P1, OP), ResyncAll()])
    registry = CollectorRegistry()
    metrics = jobs.JobMetrics(registry)
    app = jobs.build_app(pg_url, RecordingHandlers(pg_url), max_attempts=3, resync_seconds=0, metrics=metrics)
    await _drain(app, pg_url)
    assert {r[1] for r in _jobs(pg_url)} == {"succeeded"}
    with psycopg.connect(pg_url) as conn:
        runs = conn.execute("SELECT kind, subject, status FROM provisioner_runs ORDER BY id").fetchall()
    assert sorted(runs) == sorted(
        [("job", P1, "success"), ("job", P2, "success"), ("job", f"{P1}/{OP}", "success"), ("job", "all", "success")]
    )
    assert registry.get_sample_value("provisioner_jobs_total", {"task": "reconcile_product", "outcome": "succeeded"})


async def test_temporary_failures_retry_until_success(pg_url: str) -> None:
    handlers = Scripted(failures=[TemporaryError("portal timed out"), RuntimeError("boom")])
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1)])
    app = jobs.build_app(pg_url, handlers, max_attempts=5, resync_seconds=0, backoff_seconds=0)
    await _drain(app, pg_url)
    assert handlers.calls == [("product", P1)] * 3
    assert _jobs(pg_url) == [("reconcile_product", "succeeded", 3, {"product_id": P1})]


async def test_retries_stop_at_max_attempts(pg_url: str) -> None:
    handlers = Scripted(failures=[TemporaryError("down")] * 10)
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1)])
    app = jobs.build_app(pg_url, handlers, max_attempts=3, resync_seconds=0, backoff_seconds=0)
    await _drain(app, pg_url)
    assert len(handlers.calls) == 3
    assert [r[1] for r in _jobs(pg_url)] == ["failed"]


async def test_permanent_error_fails_without_retry(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    handlers = Scripted(failures=[PermanentError("namespace 'x y' is invalid")])
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileAccess(P1)])
    app = jobs.build_app(pg_url, handlers, max_attempts=5, resync_seconds=0, backoff_seconds=0)
    with caplog.at_level("INFO", logger="provisioner.jobs"):
        await _drain(app, pg_url)
    assert handlers.calls == [("access", P1)]
    assert _jobs(pg_url) == [("reconcile_access", "failed", 1, {"consumer_id": P1})]
    failed = [r for r in caplog.records if getattr(r, "event", None) == "job.failed"]
    assert failed and failed[0].fields["error"] == "namespace 'x y' is invalid"  # type: ignore[attr-defined]
    assert failed[0].fields["will_retry"] is False  # type: ignore[attr-defined]


async def test_a_retry_merges_with_a_trigger_that_arrived_while_it_ran_and_runs_now(pg_url: str) -> None:
    """A trigger arriving while a job runs queues a second job; when the first fails, the two merge and run at once.

    Both would do the same (level triggered). Kept apart, the older retry would wait out its backoff and hold the
    newer job behind it for as long (procrastinate runs a lock's jobs in id order).
    """

    class FailOnceAndRetrigger(Scripted):
        def reconcile_product(self, product_id: str) -> None:
            first = not self.calls
            self._call("product", product_id)
            if first:
                with psycopg.connect(pg_url) as conn:
                    assert not jobs.enqueue(conn, [ReconcileProduct(product_id)])[0].coalesced
                raise TemporaryError("first attempt fails")

    handlers = FailOnceAndRetrigger()
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1)])
    app = jobs.build_app(pg_url, handlers, max_attempts=3, resync_seconds=0, backoff_seconds=3600)
    await _drain(app, pg_url)  # would find only jobs waiting for an hour without the merge
    assert [r[1] for r in _jobs(pg_url)] == ["succeeded", "cancelled"]
    assert _jobs(pg_url)[0][2] == 2  # the retry kept its attempt count
    assert len(handlers.calls) == 2


class _Signalled(Scripted):
    """Scripted handlers that count calls per entity and let a test await the n-th one without sleeping."""

    def __init__(self, failures: Sequence[BaseException] = ()) -> None:
        super().__init__(failures)
        self.changed = threading.Condition()

    def _call(self, *call: str) -> None:
        try:
            super()._call(*call)
        finally:
            with self.changed:
                self.changed.notify_all()

    def wait_calls(self, n: int, timeout: float = 20.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.calls) >= n, timeout)


async def _background_worker(app: Any, concurrency: int = 1) -> asyncio.Task[None]:
    """A worker that learns of work by NOTIFY only: its fallback poll is an hour away."""
    return asyncio.create_task(
        jobs.run_worker(app, concurrency=concurrency, install_signal_handlers=False, polling_interval=3600)
    )


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _until(condition: Any, timeout: float = 20.0) -> None:
    """Wait for a condition on the database to hold (the queue announces no retry), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_a_new_trigger_runs_a_job_waiting_for_its_retry_now(pg_url: str) -> None:
    handlers = _Signalled(failures=[TemporaryError("portal down")])
    app = jobs.build_app(pg_url, handlers, max_attempts=5, resync_seconds=0, backoff_seconds=3600)
    worker = await _background_worker(app)
    try:
        with psycopg.connect(pg_url) as conn:
            jobs.enqueue(conn, [ReconcileProduct(P1)])
        await _until(lambda: _jobs(pg_url) == [("reconcile_product", "todo", 1, {"product_id": P1})])
        # The portal is back and says so: the trigger coalesces into the waiting retry, which must run now, not in
        # an hour.
        with psycopg.connect(pg_url) as conn:
            assert jobs.enqueue(conn, [ReconcileProduct(P1)])[0].coalesced
        assert await asyncio.to_thread(handlers.wait_calls, 2), "the retry still waits for its backoff"
        await _until(lambda: [r[1] for r in _jobs(pg_url)] == ["succeeded"])
    finally:
        await _stop(worker)


async def test_a_trigger_notified_while_the_worker_fetches_is_not_lost(pg_url: str) -> None:
    """procrastinate clears its new-job event after each fetch: a NOTIFY landing during a fetch must still wake it."""
    handlers = _Signalled(failures=[TemporaryError("portal down")])
    app = jobs.build_app(pg_url, handlers, max_attempts=5, resync_seconds=0, backoff_seconds=3600)
    fetch, armed, sent = app.job_manager.fetch_job, False, asyncio.Event()

    async def fetch_then_trigger(*args: Any, **kwargs: Any) -> Any:
        nonlocal armed
        job = await fetch(*args, **kwargs)  # its snapshot: the retry an hour away, nothing due
        if armed and job is None:
            armed = False
            with psycopg.connect(pg_url) as conn:  # the portal is back: pulled forward, committed, NOTIFY sent
                assert jobs.enqueue(conn, [ReconcileProduct(P1)])[0].coalesced
            await asyncio.sleep(0.5)  # the notification reaches the worker before this fetch returns
            sent.set()
        return job

    app.job_manager.fetch_job = fetch_then_trigger  # type: ignore[method-assign]
    worker = await _background_worker(app)
    try:
        with psycopg.connect(pg_url) as conn:
            jobs.enqueue(conn, [ReconcileProduct(P1)])
        await _until(lambda: _jobs(pg_url) == [("reconcile_product", "todo", 1, {"product_id": P1})])
        armed = True
        with psycopg.connect(pg_url) as conn:  # wake the worker for one fetch that finds nothing due
            conn.execute("SELECT provisioner_notify_job_ready(queue_name, id) FROM procrastinate_jobs")
        await asyncio.wait_for(sent.wait(), 20)
        assert await asyncio.to_thread(handlers.wait_calls, 2, 10), "the notification during the fetch was lost"
    finally:
        await _stop(worker)


async def test_a_resync_trigger_does_not_shorten_a_retrys_backoff(pg_url: str) -> None:
    handlers = _Signalled(failures=[TemporaryError("store down")])
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1)])
    app = jobs.build_app(pg_url, handlers, max_attempts=5, resync_seconds=0, backoff_seconds=3600)
    await jobs.run_worker(app, concurrency=1, wait=False, install_signal_handlers=False)
    with psycopg.connect(pg_url) as conn:
        assert jobs.enqueue(conn, [ReconcileProduct(P1)], wake=False)[0].coalesced
        # Only the product's job: the worker may also have deferred a periodic task (a row with no schedule).
        (due,) = conn.execute(
            "SELECT scheduled_at > now() + interval '30 minutes' FROM procrastinate_jobs WHERE task_name = %s",
            (jobs.TASK_PRODUCT,),
        ).fetchone()
    assert due, "a resync pulled the retry forward"


async def test_a_job_behind_its_entitys_lock_starts_when_the_lock_is_freed(pg_url: str) -> None:
    release = threading.Event()

    class HoldTheProduct(_Signalled):
        def reconcile_product(self, product_id: str) -> None:
            super().reconcile_product(product_id)
            assert release.wait(20)

    handlers = HoldTheProduct()
    app = jobs.build_app(pg_url, handlers, max_attempts=1, resync_seconds=0)
    # Observe (only) the worker's fetches, to know when it has seen the waiting job, found it locked, and gone idle.
    fetch, access_queued, went_idle = app.job_manager.fetch_job, False, asyncio.Event()

    async def observed_fetch(*args: Any, **kwargs: Any) -> Any:
        job = await fetch(*args, **kwargs)
        # Read after the fetch: a fetch already under way when the job was inserted counts too (the worker may not
        # fetch again before the lock is freed; waiting for a later fetch made this test flaky).
        if access_queued and job is None:
            went_idle.set()
        return job

    app.job_manager.fetch_job = observed_fetch  # type: ignore[method-assign]
    worker = await _background_worker(app, concurrency=2)
    try:
        with psycopg.connect(pg_url) as conn:
            jobs.enqueue(conn, [ReconcileProduct(P1)])
        assert await asyncio.to_thread(handlers.wait_calls, 1)
        with psycopg.connect(pg_url) as conn:
            jobs.enqueue(conn, [ReconcileAccess(P1)])  # same product lock: it must wait its turn
        access_queued = True
        await asyncio.wait_for(went_idle.wait(), 20)
        release.set()
        assert await asyncio.to_thread(handlers.wait_calls, 2, 10), "the access job waited for the next poll"
        assert handlers.calls == [("product", P1), ("access", P1)]
    finally:
        release.set()
        await _stop(worker)


def test_enqueue_resync_queues_one_resync(pg_url: str) -> None:
    assert jobs.enqueue_resync(pg_url) is True
    assert jobs.enqueue_resync(pg_url) is False  # coalesced with the one waiting
    assert [r[0] for r in _jobs(pg_url)] == ["resync"]


async def test_entity_lock_serialises_jobs_of_one_product(pg_url: str) -> None:
    """Product and access jobs of one product never overlap, while other products run in parallel."""
    active: dict[str, int] = {}
    overlap: list[str] = []
    both_others_running = threading.Barrier(2, timeout=10)
    guard = threading.Lock()

    class Slow(Scripted):
        def _call(self, *call: str) -> None:
            super()._call(*call)
            entity = call[1]
            if entity == P2 or call[0] == "output_port":
                both_others_running.wait()  # raises BrokenBarrierError unless both run at once
                return
            with guard:
                active[entity] = active.get(entity, 0) + 1
                if active[entity] > 1:
                    overlap.append(entity)
            time.sleep(0.2)  # give a second worker slot the chance to break the lock
            with guard:
                active[entity] -= 1

    handlers = Slow()
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1), ReconcileAccess(P1)])
        jobs.enqueue(conn, [ReconcileProduct(P2), ReconcileOutputPort(P2, OP)])
    app = jobs.build_app(pg_url, handlers, max_attempts=1, resync_seconds=0)
    await _drain(app, pg_url, concurrency=4)
    assert overlap == []
    assert [r[1] for r in _jobs(pg_url)] == ["succeeded"] * 4


async def test_resync_enqueues_what_the_handler_returns(pg_url: str) -> None:
    handlers = Scripted(resync=[ReconcileProduct(P1), ReconcileProduct(P2)])
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ResyncAll()])
    app = jobs.build_app(pg_url, handlers, max_attempts=1, resync_seconds=0)
    await _drain(app, pg_url)
    assert handlers.calls[0] == ("resync",)
    assert sorted(handlers.calls[1:]) == [("product", P1), ("product", P2)]


def test_resync_cron_follows_the_period() -> None:
    assert jobs.resync_cron(300) == "*/5 * * * *"
    assert jobs.resync_cron(30) == "* * * * * */30"
    assert jobs.resync_cron(7200) == "0 */2 * * *"


def test_periodic_resync_is_registered_only_when_enabled(pg_url: str) -> None:
    on = jobs.build_app(pg_url, RecordingHandlers(pg_url), max_attempts=1, resync_seconds=300)
    off = jobs.build_app(pg_url, RecordingHandlers(pg_url), max_attempts=1, resync_seconds=0)
    names = lambda app: sorted(t.task.name for t in app.periodic_registry.periodic_tasks.values())  # noqa: E731
    assert names(on) == ["resync", "retry_stalled_jobs"]
    assert names(off) == ["retry_stalled_jobs"]


async def test_a_dead_workers_job_is_handed_back_and_converges(pg_url: str) -> None:
    handlers = Scripted(failures=[])
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1)])
        # A worker took the job and was killed -9: its heartbeat stopped a minute ago, its job stays "doing".
        worker = conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '60 seconds') RETURNING id"
        ).fetchone()
        assert worker is not None
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s", (worker[0],))
    app = jobs.build_app(pg_url, handlers, max_attempts=5, resync_seconds=0, backoff_seconds=0)
    async with app.open_async():
        assert await jobs.retry_stalled_jobs(app, stalled_after_seconds=30) == 1
        assert await jobs.retry_stalled_jobs(app, stalled_after_seconds=30) == 0
    await _drain(app, pg_url)
    assert handlers.calls == [("product", P1)]
    assert [(t, status) for t, status, *_ in _jobs(pg_url)] == [("reconcile_product", "succeeded")]
