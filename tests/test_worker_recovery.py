"""The worker loop across a lost database (issue 13 §1), in process, against the real test PostgreSQL.

Restarting the shared test server would disturb every other test, so a restart of *this test's* database is
played by PostgreSQL itself: ``ALLOW_CONNECTIONS false`` plus terminating its sessions looks to the worker
exactly like a server that went away (every connection breaks and new ones are refused), and setting it back
is the server coming back. tests/cli/test_serve.py restarts a real server under a real `provisioner serve`.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Sequence

import psycopg
import pytest
from psycopg import sql

from provisioner import jobs
from provisioner.events import ReconcileProduct, Trigger

P1 = "11111111-1111-4111-8111-111111111111"
P2 = "22222222-2222-4222-8222-222222222222"


class Handlers:
    """Records which products were reconciled and lets a test await one."""

    def __init__(self) -> None:
        self.done: set[str] = set()
        self._cond = threading.Condition()

    def reconcile_product(self, product_id: str) -> None:
        with self._cond:
            self.done.add(product_id)
            self._cond.notify_all()

    def reconcile_access(self, consumer_id: str) -> None:
        raise NotImplementedError

    def reconcile_output_port(self, producer_id: str, output_port_id: str) -> None:
        raise NotImplementedError

    def resync(self) -> Sequence[Trigger]:
        return []

    def wait_for(self, product_id: str, timeout: float = 30) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: product_id in self.done, timeout)


class Outage:
    """Takes this test's database away from everyone (sessions ended, new ones refused) and gives it back."""

    def __init__(self, server_url: str, database_url: str) -> None:
        self.server_url = server_url
        self.name = psycopg.conninfo.conninfo_to_dict(database_url)["dbname"]

    def begin(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS false").format(sql.Identifier(self.name)))
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (self.name,))

    def end(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS true").format(sql.Identifier(self.name)))


@pytest.fixture
def outage(pg_server_url: str, pg_url: str) -> Iterator[Outage]:
    o = Outage(pg_server_url, pg_url)
    yield o
    o.end()  # the fixture drops the database afterwards; it must accept that connection


def _enqueue(url: str, product_id: str) -> None:
    with psycopg.connect(url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(product_id)])


async def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    """Await a state the worker loop reaches on its own (its health flag has no event to wait on)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.02)


@pytest.fixture(autouse=True)
def _short_pool_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lost worker waits 5 s for a pooled connection before it gives up its shutdown; 1 s is enough here."""
    monkeypatch.setattr(jobs, "POOL_WAIT_SECONDS", 1.0)


async def test_the_worker_carries_on_after_its_database_comes_back(pg_url: str, outage: Outage) -> None:
    handlers = Handlers()
    app = jobs.build_app(pg_url, handlers, max_attempts=3, resync_seconds=0)  # type: ignore[arg-type]
    health = jobs.WorkerHealth()
    task = asyncio.create_task(
        jobs.run_worker(app, concurrency=2, install_signal_handlers=False, recover_seconds=60, health=health)
    )
    try:
        await _until(lambda: health.running)
        _enqueue(pg_url, P1)
        assert await asyncio.to_thread(handlers.wait_for, P1)

        outage.begin()
        await _until(lambda: not health.running)  # procrastinate's worker stopped: its listener lost the database
        assert "reconnecting" in health.reason
        await asyncio.sleep(1)  # a second of outage: several restart attempts fail
        assert not task.done()
        outage.end()

        await _until(lambda: health.running)
        _enqueue(pg_url, P2)
        assert await asyncio.to_thread(handlers.wait_for, P2), "the restarted worker runs new jobs"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert not health.running


async def test_a_worker_that_cannot_get_back_raises_worker_stopped(
    pg_url: str, outage: Outage, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Short waits, so that each failed attempt lasts longer than a "healthy run": attempts that never ran a
    # worker must not count as a recovery and restart the clock.
    monkeypatch.setattr(jobs, "RESTART_BACKOFF_CAP_SECONDS", 0.4)
    monkeypatch.setattr(jobs, "HEALTHY_RUN_SECONDS", 0.1)
    app = jobs.build_app(pg_url, Handlers(), max_attempts=3, resync_seconds=0)  # type: ignore[arg-type]
    health = jobs.WorkerHealth()
    task = asyncio.create_task(
        jobs.run_worker(app, concurrency=1, install_signal_handlers=False, recover_seconds=2, health=health)
    )
    try:
        await _until(lambda: health.running)
        outage.begin()
        async with asyncio.timeout(30):
            with pytest.raises(jobs.WorkerStopped, match="PROVISIONER_WORKER_RECOVER_SECONDS"):
                await task
    finally:
        task.cancel()
    assert not health.running and "could not get back within 2 s" in health.reason
