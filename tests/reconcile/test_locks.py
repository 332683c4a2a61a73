"""Commands and workers take turns on a product: the advisory lock both paths hold while they change it."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor

import psycopg
import pytest

from provisioner.events import product_lock
from provisioner.persistence.locks import EntityBusy
from tests.reconcile.conftest import Site

HOLD = "SELECT pg_advisory_lock(hashtextextended(%s, 0))"
FREE = "SELECT pg_advisory_unlock(hashtextextended(%s, 0))"
#: Sessions of this database (other than the asking one) whose last or current statement asks for an advisory lock
#: (tried and refused, or waiting: either way the change has reached the lock).
TRIED = (
    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
    " AND query ~ 'pg_(try_)?advisory_(xact_)?lock\\('"
)


def _wait_until_it_asks_for_the_lock(conn: psycopg.Connection, waiting: Future[object], timeout: float = 30.0) -> None:
    """Return once another session has asked for an advisory lock (and, as we hold it, been refused)."""
    deadline = time.monotonic() + timeout
    while not (row := conn.execute(TRIED).fetchone()) or not row[0]:
        assert not waiting.done(), "it ran while the product was held"
        assert time.monotonic() < deadline, "the change never asked for the product's lock"
        time.sleep(0.01)  # polls a condition in another session; no event to wait on


@pytest.mark.parametrize("action", ["rotate", "reconcile_product", "reconcile_access"])
def test_a_change_waits_while_another_process_holds_the_product(
    site: Site, unique_name: str, pg_url: str, action: str
) -> None:
    ns = f"{unique_name}-turns"
    pid = site.provisioned(ns)
    runs_before = len(site.state.last_runs(pid, limit=100))
    call = {
        "rotate": lambda: site.reconcilers.rotate(ns),
        "reconcile_product": lambda: site.reconcilers.reconcile_product(pid),
        "reconcile_access": lambda: site.reconcilers.reconcile_access(pid),
    }[action]
    with psycopg.connect(pg_url, autocommit=True) as other, ThreadPoolExecutor(1) as pool:
        other.execute(HOLD, (product_lock(pid),))  # as a worker's job would, in another process
        waiting = pool.submit(call)
        _wait_until_it_asks_for_the_lock(other, waiting)
        assert not waiting.done(), "it ran while the product was held"
        assert len(site.state.last_runs(pid, limit=100)) == runs_before
        other.execute(FREE, (product_lock(pid),))
        waiting.result(timeout=30)
    assert len(site.state.last_runs(pid, limit=100)) == runs_before + 1


def test_a_product_held_too_long_fails_retryably(site: Site, unique_name: str, pg_url: str) -> None:
    entity = product_lock(f"{unique_name}-busy")
    with psycopg.connect(pg_url, autocommit=True) as other:
        other.execute(HOLD, (entity,))
        with pytest.raises(EntityBusy, match="being changed by another process"), site.state.entity_lock(entity, 0.2):
            pass
    with site.state.entity_lock(entity, 0.2):  # free again once the holder's session ended
        pass
