"""act()'s durable queue on the real PostgreSQL: acknowledged only after commit, nothing lost, nothing doubled."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from provisioner.datahub.events import TokenizeRequest
from provisioner.datahub.queue import RequestQueue

pytestmark = pytest.mark.datahub


def request(i: int) -> TokenizeRequest:
    return TokenizeRequest(f"urn:li:dataset:(urn:li:dataPlatform:postgres,shop.public.t{i},PROD)", 1000 + i, "c", "u")


def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait for a state another connection reaches (polled: PostgreSQL gives no event for it)."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "the state was not reached"
        time.sleep(0.005)


def stamps(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT stamp FROM provisioner_datahub_runs ORDER BY stamp")]


def jobs(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'tokenize_dataset'").fetchone()
    return int(row[0]) if row else 0


def _waits_on_lock(url: str) -> bool:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE application_name = 'provisioner-datahub-action' AND wait_event_type = 'Lock'"
        ).fetchone()
    return bool(row and row[0])


def test_enqueue_returns_only_after_its_commit(pg_url: str) -> None:
    # The pipeline acknowledges the event as soon as act() returns: the request must be committed by then.
    queue = RequestQueue(pg_url)
    returned = threading.Event()
    with ThreadPoolExecutor(1) as pool, psycopg.connect(pg_url) as holder:
        holder.execute("LOCK TABLE provisioner_datahub_runs IN SHARE ROW EXCLUSIVE MODE")
        future = pool.submit(lambda: (queue.enqueue(request(1)), returned.set()))
        until(lambda: _waits_on_lock(pg_url))
        assert not returned.is_set() and stamps(pg_url) == []
        holder.rollback()
        future.result(timeout=10)
    assert stamps(pg_url) == [1001]
    queue.close()


def test_concurrent_callers_lose_nothing_and_double_nothing(pg_url: str) -> None:
    queue = RequestQueue(pg_url)
    keys = [request(i % 150) for i in range(400)]  # 150 keys, most delivered more than once
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(queue.enqueue, keys))
    queue.close()
    assert stamps(pg_url) == [1000 + i for i in range(150)]
    assert len([i for i in ids if i is not None]) == 150 == jobs(pg_url), "each key queued once, redeliveries absorbed"


def test_a_lost_connection_is_reopened(pg_url: str) -> None:
    queue = RequestQueue(pg_url)
    assert queue.enqueue(request(1)) is not None
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'provisioner-datahub-action'"
        )
    assert queue.enqueue(request(2)) is not None
    queue.close()
    assert stamps(pg_url) == [1001, 1002]


def test_datahub_actions_without_the_site_refuses_a_lakebase_login(monkeypatch: pytest.MonkeyPatch) -> None:
    # DataHub's own `datahub actions` has no site to keep the token file fresh: one clear line, nothing opened.
    from provisioner.datahub.action import database_url_for
    from provisioner.datahub.config import TokenizeActionConfig
    from provisioner.errors import SettingsError

    monkeypatch.setenv("PROVISIONER_DATABASE_URL", "postgresql://me@lakebase.example.com/databricks_postgres")
    monkeypatch.setenv("PROVISIONER_DATABASE_AUTH", "databricks-oauth")
    monkeypatch.setenv("PROVISIONER_DATABASE_LAKEBASE", "inst")
    config = TokenizeActionConfig.model_validate({"tenants": [{"tenant": "t1"}]})
    with pytest.raises(SettingsError, match="provisioner datahub-actions"):
        database_url_for(config)
