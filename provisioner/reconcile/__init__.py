"""Desired versus observed, for products and access grants: the only place that decides what to change.

``Reconcilers`` bundles the product, access and resync logic behind the job handler interface the worker calls.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from provisioner.errors import PermanentError
from provisioner.events import Trigger, product_lock
from provisioner.logs import log_event
from provisioner.names import Namespace
from provisioner.persistence.records import ProductRecord
from provisioner.persistence.state import StateStore
from provisioner.portal import PortalClient
from provisioner.reconcile import credentials
from provisioner.reconcile.access import AccessReconciler
from provisioner.reconcile.grants import current_grants, readable_prefixes
from provisioner.reconcile.inputs import PortTokenizer, ReconcileConfig, TokenizeOutcome, no_port_tokenizer
from provisioner.reconcile.parking import holds
from provisioner.reconcile.products import ProductReconciler
from provisioner.reconcile.resync import Resync
from provisioner.reconcile.targets import ScopedTarget, TargetRunner
from provisioner.storage.base import StoreAdmin

__all__ = [
    "PortTokenizer",
    "ReconcileConfig",
    "Reconcilers",
    "ScopedTarget",
    "TokenizeOutcome",
    "no_port_tokenizer",
]

log = logging.getLogger(__name__)


class NotProvisioned(PermanentError):
    """A command named a namespace the provisioner does not manage."""


class Reconcilers:
    """The job handlers: each method converges one entity and returns follow-up triggers to enqueue."""

    def __init__(
        self,
        *,
        portal: PortalClient,
        store: StoreAdmin,
        state: StateStore,
        config: ReconcileConfig,
        tokenizer: PortTokenizer = no_port_tokenizer,
        targets: Sequence[ScopedTarget] = (),
    ) -> None:
        """``targets``: the provisioning targets beside S3 (reconcile/targets.py), each with its scope."""
        self.state = state
        self.store = store
        self.config = config
        self.portal = portal
        self.targets = TargetRunner(state, targets)
        self.products = ProductReconciler(portal=portal, store=store, state=state, config=config, targets=self.targets)
        self.access = AccessReconciler(
            portal=portal, store=store, state=state, config=config, products=self.products, tokenizer=tokenizer
        )
        self.resyncer = Resync(portal=portal, state=state, config=config, store=store, targets=bool(targets))

    def reconcile_product(self, product_id: str, *, force: bool = False) -> Sequence[Trigger]:
        """Provision, update or clean up one product; ``force`` tries a parked product again."""
        with self.state.entity_lock(product_lock(product_id)):
            return self.products.reconcile_product(product_id, force=force)

    def reconcile_access(self, consumer_id: str) -> Sequence[Trigger]:
        """Converge one consumer's read grants (they live on the consumer product: same lock)."""
        with self.state.entity_lock(product_lock(consumer_id)):
            why_not = self._not_a_consumer(consumer_id)
            if why_not is not None:
                with self.state.recording("access", consumer_id) as run:
                    run.detail.update(outcome="skipped", reason=why_not)
                return []
            return self.access.reconcile_access(consumer_id)

    def _not_a_consumer(self, consumer_id: str) -> str | None:
        """Why a consumer that was never provisioned gets no grants: it is parked, or outside the scope.

        Without this, its access job would provision it first (and so adopt it), or wait for it with retries.
        A provisioned consumer, released ones included, always has its grants converged: revocations must apply.
        """
        record = self.state.product(consumer_id)
        if record is not None and record.state == "provisioned":
            return None
        parked = self.products.parking.get(consumer_id)
        if parked is None and self.config.scope.everything:
            return None
        product = self.portal.get_product(consumer_id)  # only for a consumer neither provisioned nor plainly ours
        if parked is not None and holds(parked, product):
            return f"the consumer is parked ({parked.reason}): {parked.error}"
        excluded = None if product is None else self.config.scope.excluded_because(product)
        return None if excluded is None else f"the consumer is out of scope: {excluded}"

    def reconcile_output_port(self, producer_id: str, output_port_id: str) -> Sequence[Trigger]:
        """Name the consumers an output-port decision concerns."""
        return self.access.reconcile_output_port(producer_id, output_port_id)

    def probes(self) -> dict[str, str]:
        """Every target's health in one line each, S3 first (``ok: …`` or what is wrong); never raises."""
        return {"s3": self.products.s3.probe(), **self.targets.probes()}

    def resync(self) -> Sequence[Trigger]:
        """Plan the reconciles that repair drift from the portal."""
        return self.resyncer.plan()

    def rotate(self, namespace: str) -> str:
        """Issue a new key for ``namespace``, rewrite its .env, delete the old key; return the new key id."""
        ns = Namespace(namespace)
        found = self.state.live_by_namespace(ns)
        if found is not None:
            with self.state.entity_lock(product_lock(found.product_id)):
                # Read again under the lock: a worker may have changed the record while we waited.
                record = self.state.live_by_namespace(ns)
                if record is not None and record.product_id == found.product_id:
                    return self._rotate(ns, record)
        raise NotProvisioned(f"namespace {ns!r} is not provisioned here; see `provisioner status`")

    def _rotate(self, ns: Namespace, record: ProductRecord) -> str:
        with self.state.recording("rotate", record.product_id, ns) as run:
            # The grants the policy holds now (portal approvals ∩ decisions), as the rotated key's .env lists them.
            grants = current_grants(self.portal, self.state, record.product_id)
            read_prefixes = tuple(readable_prefixes(self.config.bucket, grants))
            keys = credentials.rotate(self.store, self.config, ns, read_prefixes)
            self.state.save_product(replace(record, access_key_id=keys.access_key_id))
            run.step("key_rotated")
            run.detail["deleted_keys"] = list(keys.deleted)
        log_event(log, "product.rotated", namespace=ns, access_key_id=keys.access_key_id)
        assert keys.access_key_id is not None
        return keys.access_key_id
