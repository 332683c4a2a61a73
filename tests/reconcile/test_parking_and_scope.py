"""Issue 12, items 7 and 10: permanent failures are parked, not retried every resync; the scope decides what is ours."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import psycopg
import pytest

from provisioner import jobs
from provisioner.events import ReconcileAccess, ReconcileProduct, ResyncAll
from provisioner.names import Namespace
from provisioner.portal import Named, Product
from provisioner.reconcile import Reconcilers
from provisioner.reconcile.products import NamespaceChanged, NamespaceConflict
from provisioner.reconcile.scope import Scope
from tests.reconcile.conftest import Site


def _scoped(site: Site, scope: Scope) -> Reconcilers:
    site.config = replace(site.config, scope=scope)
    site.reconcilers = Reconcilers(portal=site.client, store=site.store, state=site.state, config=site.config)
    return site.reconcilers


def _users(site: Site) -> set[str]:
    return {u["UserName"] for u in site.s3.client("iam").list_users()["Users"]}


def _product_triggers(site: Site) -> set[str]:
    return {t.product_id for t in site.reconcilers.resync() if isinstance(t, ReconcileProduct)}


def _failed_jobs(url: str, task: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s AND status = 'failed'", (task,)
        ).fetchone()
    return int(row[0]) if row else 0


async def _resync_through_the_queue(site: Site, url: str) -> None:
    """One resync as the periodic job runs it: plan, enqueue, run every job until none waits."""
    with psycopg.connect(url) as conn:
        jobs.enqueue(conn, [ResyncAll()])
    app = jobs.build_app(url, site.reconcilers, max_attempts=3, resync_seconds=0, backoff_seconds=0)
    await jobs.run_worker(app, concurrency=2, wait=False, install_signal_handlers=False)


# -- 7: parking ---------------------------------------------------------------------------------------


async def test_a_namespace_conflict_is_parked_not_retried_by_every_resync(
    site: Site, unique_name: str, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    ns = f"{unique_name}-shared"
    owner = site.provisioned(ns)
    claimant = site.portal_state.create_product("Claimant", ns, notify=False)
    with caplog.at_level(logging.ERROR):
        for _ in range(3):  # resync every 20 s for a minute, in the words
            await _resync_through_the_queue(site, pg_url)
    assert _failed_jobs(pg_url, jobs.TASK_PRODUCT) == 1
    assert len([r for r in caplog.records if getattr(r, "event", None) == "product.parked"]) == 1
    parked = site.reconcilers.products.parking.get(claimant.id)
    assert parked is not None and parked.reason == NamespaceConflict.__name__ and owner in parked.error
    assert claimant.id not in _product_triggers(site)
    # A change in the portal tries it again: here the claimant picks a namespace of its own.
    site.portal_state.products[claimant.id].namespace = f"{unique_name}-own"
    assert claimant.id in _product_triggers(site)
    site.reconcilers.reconcile_product(claimant.id)
    assert site.reconcilers.products.parking.get(claimant.id) is None
    assert site.state.product(claimant.id).state == "provisioned"  # type: ignore[union-attr]


def test_a_changed_namespace_is_parked_until_it_changes_back_or_is_provisioned_by_hand(
    site: Site, unique_name: str
) -> None:
    ns = f"{unique_name}-moving"
    pid = site.provisioned(ns)
    site.portal_state.products[pid].namespace = f"{unique_name}-moved"
    with pytest.raises(NamespaceChanged):
        site.reconcilers.reconcile_product(pid)
    assert pid not in _product_triggers(site)
    # A webhook about it (the portal echoes our writes, say) does not retry it either: nothing changed.
    assert site.reconcilers.reconcile_product(pid) == []
    assert site.state.last_runs(pid, limit=1)[0]["detail"]["parked"] == NamespaceChanged.__name__
    # `provisioner provision` does: it fails the same way and stays parked, with the newest error.
    with pytest.raises(NamespaceChanged):
        site.reconcilers.reconcile_product(pid, force=True)
    assert site.reconcilers.products.parking.get(pid) is not None
    # Changed back in the portal: it converges and is no longer parked.
    site.portal_state.products[pid].namespace = ns
    assert pid in _product_triggers(site)
    site.reconcilers.reconcile_product(pid)
    assert site.reconcilers.products.parking.get(pid) is None


def test_deleting_the_owner_frees_the_namespace_for_the_parked_claimant(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-contested"
    owner = site.provisioned(ns)
    claimant = site.portal_state.create_product("Claimant", ns, notify=False)
    with pytest.raises(NamespaceConflict):
        site.reconcilers.reconcile_product(claimant.id)
    site.portal_state.delete_product(owner, notify=False)
    follow_up = site.reconcilers.reconcile_product(owner)
    assert ReconcileProduct(claimant.id) in follow_up
    site.reconcilers.reconcile_product(claimant.id)
    assert site.state.live_by_namespace(Namespace(ns)).product_id == claimant.id  # type: ignore[union-attr]


def test_a_parked_consumer_gets_no_access_job_retries(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-taken"
    site.provisioned(ns)
    consumer = site.portal_state.create_product("Copycat", ns, notify=False)
    with pytest.raises(NamespaceConflict):
        site.reconcilers.reconcile_product(consumer.id)
    assert site.reconcilers.reconcile_access(consumer.id) == []  # skipped, not GrantNotReady retried 8 times
    run = site.state.last_runs(consumer.id, limit=1)[0]
    assert (run["kind"], run["status"]) == ("access", "skipped") and "parked" in run["detail"]["reason"]


# -- 10: scope -------------------------------------------------------------------------------------------


def _product(**fields: Any) -> Product:
    base: dict[str, Any] = {
        "id": "p",
        "name": "P",
        "namespace": "sales-orders",
        "status": "active",
        "finalizers": (),
        "description": "",
        "tags": ("pii", "Gold"),
        "lifecycle": None,
        "domain": Named("d-1", "Finance"),
        "type": Named("t-1", "Source aligned"),
    }
    return Product(**{**base, **fields})


@pytest.mark.parametrize(
    ("scope", "admitted"),
    [
        (Scope(), True),
        (Scope(domains=("finance",)), True),  # names match case-insensitively
        (Scope(domains=("d-1",)), True),  # or by id
        (Scope(domains=("Marketing", "Finance")), True),  # any value of a dimension
        (Scope(domains=("Marketing",)), False),
        (Scope(types=("source aligned",)), True),
        (Scope(types=("Consumer aligned",)), False),
        (Scope(tags=("gold",)), True),
        (Scope(tags=("silver",)), False),
        (Scope(namespaces=("sales-*",)), True),
        (Scope(namespaces=("finance-*", "*-orders")), True),
        (Scope(namespaces=("sales",)), False),  # a glob matches the whole namespace
        (Scope(domains=("Finance",), tags=("gold",), namespaces=("sales-*",)), True),  # dimensions combine (AND)
        (Scope(domains=("Finance",), tags=("silver",)), False),
    ],
)
def test_the_selector_combines_domain_type_tag_and_namespace_glob(scope: Scope, admitted: bool) -> None:
    assert scope.admits(_product()) is admitted
    assert (scope.excluded_because(_product()) is None) is admitted


def test_a_product_without_a_domain_is_outside_a_domain_scope() -> None:
    assert "(none)" in (Scope(domains=("Finance",)).excluded_because(_product(domain=None)) or "")


def test_products_outside_the_scope_get_no_finalizer_and_no_resource(site: Site, unique_name: str) -> None:
    reconcilers = _scoped(site, Scope(domains=("Finance",)))
    state = site.portal_state
    ours = state.create_product("Ledger", f"{unique_name}-ledger", domain="Finance", notify=False)
    theirs = state.create_product("Campaigns", f"{unique_name}-campaigns", domain="Marketing", notify=False)
    assert _product_triggers(site) == {ours.id}
    for product in (ours, theirs):  # a webhook may name either
        reconcilers.reconcile_product(product.id)
    assert ours.finalizers == ["provisioner"] and theirs.finalizers == []
    assert theirs.status == "pending"  # not even its status is written
    assert Namespace(f"{unique_name}-campaigns").user_name not in _users(site)
    assert not site.project(f"{unique_name}-campaigns").exists()
    assert site.state.product(theirs.id) is None
    run = site.state.last_runs(theirs.id, limit=1)[0]
    assert run["status"] == "skipped" and "out of scope" in run["detail"]["reason"]
    # An access job for it (its input port changed) adopts nothing either.
    assert reconcilers.reconcile_access(theirs.id) == []
    assert site.state.product(theirs.id) is None and theirs.finalizers == []
    assert _product_triggers(site) == set()  # and resync leaves it alone from now on


def test_a_product_that_falls_out_of_scope_is_released_then_cleaned_up_when_deleted(
    site: Site, unique_name: str
) -> None:
    reconcilers = _scoped(site, Scope(domains=("Finance",)))
    ns = f"{unique_name}-ledger"
    product = site.portal_state.create_product("Ledger", ns, domain="Finance", notify=False)
    reconcilers.reconcile_product(product.id)
    keys = site.user_keys(ns)
    # It moves to another domain: released. Our finalizer goes; its user, key, project and data stay as they were.
    product.domain = "Marketing"
    assert _product_triggers(site) == {product.id}
    assert reconcilers.reconcile_product(product.id) == []
    assert product.finalizers == []
    assert site.user_keys(ns) == keys and (site.project(ns) / ".env").exists()
    assert site.state.product(product.id).state == "provisioned"  # type: ignore[union-attr]
    assert site.state.last_runs(product.id, limit=1)[0]["detail"]["outcome"] == "released"
    assert _product_triggers(site) == set()  # released once, then left alone
    # Its read grants still follow the portal (a revocation must reach it): its access job runs, not skipped.
    reconcilers.reconcile_access(product.id)
    assert site.state.last_runs(product.id, limit=1)[0]["status"] != "skipped"
    # Deleted in the portal (gone at once: no finalizer of ours holds it): its user and keys are removed.
    site.portal_state.delete_product(product.id, notify=False)
    assert _product_triggers(site) == {product.id}
    reconcilers.reconcile_product(product.id)
    assert Namespace(ns).user_name not in _users(site)
    assert site.state.product(product.id).state == "deleted"  # type: ignore[union-attr]


def test_widening_the_scope_again_resumes_a_released_product_without_a_new_key(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-ledger"
    product = site.portal_state.create_product("Ledger", ns, domain="Finance", notify=False)
    _scoped(site, Scope(domains=("Finance",))).reconcile_product(product.id)
    keys = site.user_keys(ns)
    _scoped(site, Scope(domains=("Marketing",))).reconcile_product(product.id)
    assert product.finalizers == []
    widened = _scoped(site, Scope())
    assert _product_triggers(site) == {product.id}
    widened.reconcile_product(product.id)
    assert product.finalizers == ["provisioner"] and site.user_keys(ns) == keys


def test_an_out_of_scope_consumer_is_not_reconciled_by_resync(site: Site, unique_name: str) -> None:
    reconcilers = _scoped(site, Scope(namespaces=(f"{unique_name}-in-*",)))
    state = site.portal_state
    producer = state.create_product("Producer", f"{unique_name}-in-producer", notify=False)
    outsider = state.create_product("Outsider", f"{unique_name}-out", notify=False)
    reconcilers.reconcile_product(producer.id)
    port = state.create_output_port(producer.id, "Orders", namespace="orders", access_type="unrestricted", notify=False)
    assert state.request_access(outsider.id, port.id, notify=False).status == "approved"  # unrestricted: at once
    assert ReconcileAccess(outsider.id) not in reconcilers.resync()
