"""The composition root (provisioner/site.py): pools sized by one rule, and no connection outside the process's pool."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from provisioner import jobs
from provisioner.errors import SettingsError
from provisioner.persistence.connections import connection
from provisioner.retention import RetentionPolicy, prune
from provisioner.settings import Settings
from provisioner.site import Site, pool_sizes


def test_pool_sizes_follow_one_rule() -> None:
    settings = Settings.from_env({"PROVISIONER_WORKER_CONCURRENCY": "4"})
    assert pool_sizes(settings, reconcile=True).sync_max == 2 * 4 + 2  # each job: its lock and its state, plus 2
    assert pool_sizes(settings, reconcile=False).sync_max == 2
    assert pool_sizes(settings, reconcile=False, datahub_concurrency=3).sync_max == 2 * 3 + 2
    sizes = pool_sizes(settings, reconcile=True)
    assert (sizes.sync_min, sizes.web_min, sizes.web_max, sizes.queue) == (1, 2, 8, jobs.QUEUE_POOL_SIZE)


@pytest.fixture
def direct_connects(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Records every connection opened with ``psycopg.connect`` (the pool opens its own by another door)."""
    opened: list[str] = []
    real = psycopg.connect

    def recording(*args: Any, **kwargs: Any) -> Any:
        opened.append(str(args[0]) if args else str(kwargs.get("conninfo")))
        return real(*args, **kwargs)

    monkeypatch.setattr(psycopg, "connect", recording)
    yield opened


def test_heartbeat_run_records_resync_and_retention_borrow_from_the_sites_pool(
    pg_url: str, direct_connects: list[str]
) -> None:
    with Site.open(Settings(), reconcile=False, heartbeat=True, database_url=pg_url) as site:
        assert site.pool.max_size == 2 and site.owner is not None
        recorder = site.run_recorder()
        recorder.start(
            run_id="00000000-0000-4000-8000-000000000001",
            tenant="t",
            policy="p",
            dry_run=True,
            tables=[],
            started_at=datetime.now(UTC),
        )
        assert site.enqueue_resync() is True
        prune(site.pool, RetentionPolicy(days=1))
        with site.pool.connection() as conn:
            owners = [r[0] for r in conn.execute("SELECT owner FROM provisioner_processes")]
            run_owner = conn.execute("SELECT owner FROM tokenize_runs").fetchone()
        assert owners == [site.owner] and run_owner == (site.owner,)
    assert direct_connects == []
    with psycopg.connect(pg_url) as conn:  # leaving took the process out, through the pool before it closed
        assert conn.execute("SELECT count(*) FROM provisioner_processes").fetchone() == (0,)


def test_a_site_without_reconcilers_has_no_store_and_says_so(pg_url: str) -> None:
    with Site.open(Settings(), reconcile=False, database_url=pg_url) as site:
        assert site.owner is None and site.store_probe() is None
        with pytest.raises(SettingsError, match="without its reconcilers"):
            site.reconcilers  # noqa: B018


def test_a_pooled_connection_used_in_autocommit_goes_back_as_it_came(pg_url: str) -> None:
    with Site.open(Settings(), reconcile=False, database_url=pg_url) as site:
        with connection(site.pool, autocommit=True) as conn:
            assert conn.autocommit
            first = conn
        with site.pool.connection() as conn:
            assert conn is first and not conn.autocommit
