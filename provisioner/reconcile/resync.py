"""Periodic repair: compare the portal's list with what we recorded and name only what must be reconciled.

The portal never retries a failed webhook, so resync is what makes a lost event harmless. It is cheap on a
converged site: one list call, one query, and (for grants) one input-port read per product, in parallel; no store
call at all but one listing of the store's product users (``dp-…``), whose orphans are reported and, after a grace,
removed (reconcile/orphans.py). Products not verified for ``verify_seconds`` are reconciled anyway, which repairs
drift in the store.

Left alone: products outside the scope (unless our finalizer is still on them, which a release removes), and parked
products the portal still shows as they were when they failed (reconcile/parking.py): retrying them every period
would only repeat the failure.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from provisioner.events import ReconcileAccess, ReconcileProduct, Trigger
from provisioner.logs import log_event
from provisioner.persistence.records import Parked, ProductRecord
from provisioner.persistence.state import StateStore
from provisioner.portal import PortalClient, Product
from provisioner.reconcile.inputs import ReconcileConfig
from provisioner.reconcile.orphans import OrphanUsers, claimed_users
from provisioner.reconcile.parking import GONE, ParkingLot, holds
from provisioner.reconcile.products import DELETING, fingerprint
from provisioner.storage.base import StoreAdmin

log = logging.getLogger(__name__)


class Resync:
    """Plans the reconciles a resync must enqueue."""

    def __init__(
        self,
        *,
        portal: PortalClient,
        state: StateStore,
        config: ReconcileConfig,
        parallelism: int = 8,
        store: StoreAdmin | None = None,
        targets: bool = False,
    ) -> None:
        self.portal = portal
        self.state = state
        self.config = config
        self.parallelism = parallelism
        self.store = store  # to find orphan store users; None leaves them alone
        self.targets = targets  # targets beside S3 are configured: look for their failures too
        self.parking = ParkingLot(state)

    def plan(self) -> list[Trigger]:
        """Every product whose portal state differs from what we converged, plus consumers whose grants differ."""
        # Store users first: a user created for a product after this listing belongs to a product the portal
        # lists below, so it can never be taken for an orphan.
        users = self.store.list_users() if self.store is not None else None
        products = self.portal.list_products()
        records = {r.product_id: r for r in self.state.all_products()}
        parked = self.parking.all()
        now = datetime.now(UTC)
        triggers: list[Trigger] = []
        seen: set[str] = set()
        left_parked = 0
        for product in products:
            seen.add(product.id)
            held = parked.get(product.id)
            if held is not None and self.config.scope.admits(product):
                if holds(held, product):
                    left_parked += 1
                else:  # the portal shows it differently since it failed: try again
                    triggers.append(ReconcileProduct(product.id))
            elif self._needs_reconcile(product, records.get(product.id), now):
                triggers.append(ReconcileProduct(product.id))
        for record in records.values():
            gone = record.state == "provisioned" and record.product_id not in seen
            if gone and not _still_parked(parked.get(record.product_id)):
                triggers.append(ReconcileProduct(record.product_id))  # gone from the portal: clean up
        for product_id, held in parked.items():
            if product_id not in seen and product_id not in records and held.fingerprint != GONE:
                triggers.append(ReconcileProduct(product_id))  # gone while parked: one reconcile unparks it

        scope = self.config.scope
        # Consumers whose grants are converged: live products in scope that are not parked, and every provisioned
        # one (a released product's revocations still apply).
        consumers = [
            p
            for p in products
            if p.status != DELETING
            and (
                (records.get(p.id) is not None and records[p.id].state == "provisioned")
                or (scope.admits(p) and not (p.id in parked and holds(parked[p.id], p)))
            )
        ]
        # Producers reconciled by this same plan count as provisioned: one resync repairs a missed approval too.
        soon = {t.product_id for t in triggers if isinstance(t, ReconcileProduct)}
        triggers.extend(self._access_drift(consumers, records, soon))
        if self.targets:
            triggers.extend(self._failed_targets(triggers, {p.id for p in products}))
        if users is not None:
            triggers.extend(self._orphan_users(users, products, list(records.values())))
        log_event(log, "resync.planned", products=len(products), reconciles=len(triggers), parked=left_parked)
        return triggers

    def _orphan_users(self, users: list[str], products: list[Product], records: list[ProductRecord]) -> list[Trigger]:
        """Report store users no product claims; remove those orphaned longer than the grace (reconcile/orphans.py).

        A product the portal gained since the listing may have just taken over a user removed here: it is
        reconciled at once, which creates its user again.
        """
        assert self.store is not None
        report = OrphanUsers(self.state, self.store).sweep(
            users, claimed_users(products, records), self.config.orphan_grace_seconds
        )
        if not report.removed:
            return []
        removed = set(report.removed)
        return [ReconcileProduct(p.id) for p in self.portal.list_products() if claimed_users([p], []) & removed]

    def _failed_targets(self, planned: list[Trigger], listed: set[str]) -> list[Trigger]:
        """Products a target beside S3 failed for last time (reconcile/targets.py): converge them again."""
        out: list[Trigger] = []
        for s in self.state.target_states():
            if s.state != "failed" or s.product_id not in listed:
                continue
            trigger: Trigger = (
                ReconcileProduct(s.product_id) if s.aspect == "resources" else ReconcileAccess(s.product_id)
            )
            if trigger not in planned and trigger not in out:
                out.append(trigger)
        return out

    def _needs_reconcile(self, product: Product, record: ProductRecord | None, now: datetime) -> bool:
        finalized = self.config.finalizer in product.finalizers
        if not self.config.scope.admits(product):
            live = record is not None and record.state == "provisioned"
            # Out of scope: only our finalizer (a release removes it) or the deletion of a product whose resources
            # we still hold need a reconcile.
            return finalized or (live and product.status == DELETING)
        if record is None:
            return product.status != DELETING or finalized
        if record.state == "deleted":
            return finalized  # our finalizer still holds a deletion, or the product came back
        if product.status == DELETING:
            return True
        if record.fingerprint != fingerprint(product.namespace, product.status, finalized, product.name):
            return True
        verified = record.verified_at
        return verified is None or now - verified > timedelta(seconds=self.config.verify_seconds)

    def _access_drift(
        self, products: list[Product], records: dict[str, ProductRecord], soon: set[str]
    ) -> list[Trigger]:
        """Consumers whose grants differ from their approved ports on provisioned (or soon provisioned) producers."""
        provisioned = {pid for pid, r in records.items() if r.state == "provisioned"}
        grantable = provisioned | soon
        held: dict[str, set[str]] = {}
        stale: set[str] = set()  # grants on a producer that is no longer provisioned must go
        for g in self.state.all_grants():
            held.setdefault(g.consumer_id, set()).add(g.output_port_id)
            if g.producer_id not in provisioned:
                stale.add(g.consumer_id)

        def approved(product: Product) -> tuple[str, set[str]]:
            ports = self.portal.input_ports(product.id)
            # A port refused where the portal's answer was parsed (p.problem) can never be granted: not drift.
            return product.id, {
                p.output_port_id
                for p in ports
                if p.status == "approved" and p.problem is None and p.output_port.data_product_id in grantable
            }

        with ThreadPoolExecutor(max_workers=self.parallelism) as pool:
            results = list(pool.map(approved, products))
        return [
            ReconcileAccess(consumer_id)
            for consumer_id, wanted in results
            if consumer_id in stale or wanted != held.get(consumer_id, set())
        ]


def _still_parked(parked: Parked | None) -> bool:
    """A product parked while the portal no longer had it: reconciling it again would fail the same way."""
    return parked is not None and parked.fingerprint == GONE
