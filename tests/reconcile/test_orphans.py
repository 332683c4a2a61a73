"""Issue 12 item 9: resync reports store users named like products that belong to no product, and removes them
once they have been orphans for PROVISIONER_ORPHAN_GRACE_SECONDS.

The moto server is shared by the whole session, so other tests' users are orphans here too: each test backdates
only its own orphan, and the grace (an hour) keeps everyone else's users in place.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from provisioner.events import ReconcileProduct
from provisioner.names import Namespace
from provisioner.reconcile import Reconcilers
from tests.reconcile.conftest import Site

HOUR = 3600


def _with_grace(site: Site, grace: int | None) -> Reconcilers:
    site.config = replace(site.config, orphan_grace_seconds=grace)
    site.reconcilers = Reconcilers(portal=site.client, store=site.store, state=site.state, config=site.config)
    return site.reconcilers


def _leftover_user(site: Site, namespace: str) -> str:
    """A product user with a key, as a crashed first provisioning of a since deleted product leaves it."""
    user = Namespace(namespace).user_name
    iam = site.s3.client("iam")
    iam.create_user(UserName=user)
    iam.create_access_key(UserName=user)
    return user


def _users(site: Site) -> set[str]:
    iam = site.s3.client("iam")
    return {u["UserName"] for page in iam.get_paginator("list_users").paginate() for u in page["Users"]}


def _orphans(site: Site) -> dict[str, object]:
    with site.state.pool.connection() as conn:
        return dict(conn.execute("SELECT user_name, first_seen FROM provisioner_orphan_users").fetchall())


def _backdate(site: Site, user: str, seconds: int) -> None:
    with site.state.pool.connection() as conn:
        conn.execute(
            "UPDATE provisioner_orphan_users SET first_seen = now() - make_interval(secs => %s) WHERE user_name = %s",
            (seconds, user),
        )


def test_an_orphan_user_is_reported_then_removed_after_the_grace(
    site: Site, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    reconcilers = _with_grace(site, HOUR)
    orphan = _leftover_user(site, f"{unique_name}-left-behind")
    kept = site.provisioned(f"{unique_name}-kept")

    reconcilers.resync()
    assert orphan in _orphans(site), "reported and remembered"
    assert orphan in _users(site), "not before its grace has passed"
    reported = [r for r in caplog.records if getattr(r, "event", "") == "resync.orphan_users"]
    assert reported and orphan in reported[-1].fields["users"]  # type: ignore[attr-defined]
    first_seen = _orphans(site)[orphan]
    reconcilers.resync()
    assert _orphans(site)[orphan] == first_seen, "the grace counts from the first sighting"

    _backdate(site, orphan, HOUR + 1)
    reconcilers.resync()
    assert orphan not in _users(site)
    assert orphan not in _orphans(site)
    assert Namespace(f"{unique_name}-kept").user_name in _users(site)
    assert site.state.product(kept).state == "provisioned"  # type: ignore[union-attr]


def test_a_user_a_product_claims_is_never_removed(site: Site, unique_name: str) -> None:
    reconcilers = _with_grace(site, HOUR)
    ns = f"{unique_name}-claimed"
    site.provisioned(ns)
    pending = site.portal_state.create_product("Pending", f"{unique_name}-pending", notify=False)
    user, pending_user = Namespace(ns).user_name, _leftover_user(site, f"{unique_name}-pending")
    with site.state.pool.connection() as conn:  # as if an earlier resync had wrongly listed them
        conn.execute(
            "INSERT INTO provisioner_orphan_users (user_name, first_seen) VALUES (%s, now() - interval '2 days'), "
            "(%s, now() - interval '2 days')",
            (user, pending_user),
        )
    reconcilers.resync()
    assert {user, pending_user} <= _users(site)
    assert user not in _orphans(site) and pending_user not in _orphans(site)
    assert site.portal_state.product(pending.id) is not None


def test_grace_off_only_reports(site: Site, unique_name: str) -> None:
    reconcilers = _with_grace(site, None)
    orphan = _leftover_user(site, f"{unique_name}-reported")
    reconcilers.resync()
    _backdate(site, orphan, 10 * 365 * 24 * HOUR)
    reconcilers.resync()
    assert orphan in _users(site) and orphan in _orphans(site)


def test_a_product_that_appears_while_its_user_is_removed_is_reconciled_at_once(
    site: Site, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    reconcilers = _with_grace(site, HOUR)
    ns = f"{unique_name}-late"
    orphan = _leftover_user(site, ns)
    reconcilers.resync()
    _backdate(site, orphan, HOUR + 1)
    late = site.portal_state.create_product("Late", ns, notify=False)
    real_list = site.client.list_products
    calls = {"n": 0}

    def first_listing_misses_it():  # type: ignore[no-untyped-def]
        calls["n"] += 1
        products = real_list()
        return [p for p in products if p.id != late.id] if calls["n"] == 1 else products

    monkeypatch.setattr(site.client, "list_products", first_listing_misses_it)
    triggers = reconcilers.resync()
    assert orphan not in _users(site)
    assert ReconcileProduct(late.id) in triggers
    monkeypatch.undo()
    reconcilers.reconcile_product(late.id)
    assert orphan in _users(site) and site.user_keys(ns)
