"""Group commit of act()'s requests: concurrent callers share one transaction, and each returns only after it.

The provisioner's real PostgreSQL; a test connection holding a lock on the request table keeps the first caller's
transaction in flight, so the callers that arrive meanwhile are known to wait for the next one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest

pytest.importorskip("datahub_actions", reason="the datahub extra is not installed")

from datahub_actions.pipeline.pipeline_context import PipelineContext

from provisioner.datahub import TokenizeAction
from provisioner.datahub.events import TokenizeRequest
from provisioner.datahub.queue import RequestQueue

pytestmark = pytest.mark.datahub


def request(i: int) -> TokenizeRequest:
    return TokenizeRequest(f"urn:li:dataset:(urn:li:dataPlatform:postgres,shop.public.t{i},PROD)", 1000 + i, "c", "u")


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a state another thread reaches (polled: it has no event of its own)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the state was not reached"
        time.sleep(0.005)


@contextmanager
def table_locked(url: str) -> Iterator[None]:
    """Hold a lock that makes every insert into the request table wait until the block ends."""
    with psycopg.connect(url) as conn:
        conn.execute("LOCK TABLE provisioner_datahub_runs IN SHARE ROW EXCLUSIVE MODE")
        yield
        conn.rollback()


def rows(url: str) -> dict[int, tuple[int, int | None]]:
    """stamp -> (xmin: the transaction that wrote the row, job id) of every request."""
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT stamp, xmin::text::bigint, job_id FROM provisioner_datahub_runs").fetchall()
    return {stamp: (xmin, job) for stamp, xmin, job in found}


def jobs(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'tokenize_dataset'").fetchone()
    return int(row[0]) if row else 0


def blocked_first(
    url: str, queue: RequestQueue, pool: ThreadPoolExecutor, later: list[Callable[[], Any]]
) -> tuple[Future[int | None], list[Future[Any]]]:
    """The first caller's transaction waits on the lock while ``later`` callers arrive and wait for the next one."""
    first = pool.submit(queue.enqueue, request(0))
    until(lambda: queue.waiting() == 0 and _waits_on_lock(url))
    rest = [pool.submit(call) for call in later]
    until(lambda: queue.waiting() == len(later))
    return first, rest


def _waits_on_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'provisioner-datahub-action' AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def test_callers_arriving_during_a_commit_share_the_next_one(pg_url: str) -> None:
    queue = RequestQueue(pg_url)
    with ThreadPoolExecutor(8) as pool:
        with table_locked(pg_url):
            first, rest = blocked_first(
                pg_url, queue, pool, [lambda i=i: queue.enqueue(request(i)) for i in range(1, 7)]
            )
            assert not first.done() and not any(f.done() for f in rest), "nobody returns before its commit"
        ids = [first.result(timeout=10)] + [f.result(timeout=10) for f in rest]
    queue.close()
    written = rows(pg_url)
    assert sorted(written) == [1000 + i for i in range(7)]
    assert all(job is not None for job in ids) and len(set(ids)) == 7
    assert [written[1000 + i][1] for i in range(7)] == ids, "each caller got its own request's job"
    assert len({written[1000 + i][0] for i in range(1, 7)}) == 1, "the six waiting requests: one transaction"
    assert written[1000][0] != written[1001][0]
    assert jobs(pg_url) == 7


def test_a_failure_in_a_batch_fails_every_caller_in_it_and_commits_none_of_it(pg_url: str) -> None:
    queue = RequestQueue(pg_url)
    bad = TokenizeRequest(request(3).dataset_urn, 1003, "c", "u")
    later: list[Callable[[], Any]] = [lambda i=i: queue.enqueue(request(i)) for i in (1, 2, 4, 5)]
    later.insert(2, lambda: queue.enqueue(bad, origin="bogus"))  # type: ignore[arg-type]  # violates a CHECK
    with ThreadPoolExecutor(8) as pool:
        with table_locked(pg_url):
            first, rest = blocked_first(pg_url, queue, pool, later)
        assert first.result(timeout=10) is not None  # its own transaction, before the failing one
        errors = [f.exception(timeout=10) for f in rest]
    assert all(isinstance(e, psycopg.errors.CheckViolation) for e in errors), errors
    assert sorted(rows(pg_url)) == [1000], "the failed batch left nothing behind"
    # Nothing lost: the pipeline retries the events it was not told were queued; the queue works on.
    assert all(queue.enqueue(request(i)) is not None for i in (1, 2, 3, 4, 5))
    queue.close()
    assert sorted(rows(pg_url)) == [1000 + i for i in range(6)]
    assert jobs(pg_url) == 6


def test_many_threads_nothing_lost_nothing_doubled(pg_url: str) -> None:
    queue = RequestQueue(pg_url)
    keys = [request(i % 150) for i in range(400)]  # 150 keys, most delivered more than once
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(queue.enqueue, keys))
    queue.close()
    assert sorted(rows(pg_url)) == [1000 + i for i in range(150)]
    assert len([i for i in ids if i is not None]) == 150, "each key queued once, every redelivery absorbed"
    assert {job for _, job in rows(pg_url).values()} == {i for i in ids if i is not None}
    assert jobs(pg_url) == 150


def test_a_lost_connection_is_reopened_and_its_batch_committed(pg_url: str) -> None:
    queue = RequestQueue(pg_url)
    assert queue.enqueue(request(1)) is not None
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'provisioner-datahub-action'"
        )
    assert queue.enqueue(request(2)) is not None
    queue.close()
    assert sorted(rows(pg_url)) == [1001, 1002]


def test_pipelines_of_one_process_share_the_queue(pg_url: str) -> None:
    config = {"tenants": [{"platform": "postgres", "tenant": "t1"}], "database_url": pg_url}
    a = TokenizeAction.create(config, PipelineContext("a", None))
    b = TokenizeAction.create(config, PipelineContext("b", None))
    other = TokenizeAction.create({**config, "synchronous_commit": "off"}, PipelineContext("c", None))
    assert a.queue is b.queue and other.queue is not a.queue
    a.queue.enqueue(request(1))
    a.close()
    assert b.queue.enqueue(request(2)) is not None, "the first pipeline's close left the shared queue open"
    b.close()
    other.close()
    assert TokenizeAction.create(config, PipelineContext("d", None)).queue is not a.queue, "the last close ended it"


def test_enqueue_waits_for_the_commit_before_returning(pg_url: str) -> None:
    queue = RequestQueue(pg_url)
    returned = threading.Event()
    with ThreadPoolExecutor(1) as pool, table_locked(pg_url):
        future = pool.submit(lambda: (queue.enqueue(request(1)), returned.set()))
        until(lambda: _waits_on_lock(pg_url))
        assert not returned.is_set()
    future.result(timeout=10)
    queue.close()
    assert sorted(rows(pg_url)) == [1001]
