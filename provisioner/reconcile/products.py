"""Converge one data product: the portal's desired state in, prefix + user + key + project + status out.

Level triggered: create, update, replay, resync and a restart mid-way all call ``reconcile_product(id)``.
Every step checks before it writes, so a converged product costs reads only, and the portal is written to only
when its state differs (the portal echoes each write back to us as a new event).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from pathlib import Path

from provisioner import scaffold
from provisioner.errors import InvalidName, PermanentError, ProvisionerError, classify
from provisioner.events import ReconcileAccess, ReconcileProduct, Trigger
from provisioner.logs import log_event
from provisioner.names import Namespace, shared_user_name
from provisioner.persistence.records import ProductRecord
from provisioner.persistence.runs import Run
from provisioner.persistence.state import StateStore
from provisioner.portal import PortalClient, Product
from provisioner.reconcile import credentials
from provisioner.reconcile.grants import current_reads, readable_prefixes
from provisioner.reconcile.inputs import ReconcileConfig
from provisioner.reconcile.parking import ParkingLot, holds
from provisioner.reconcile.targets import TargetRunner
from provisioner.storage.base import StoreAdmin
from provisioner.targets.base import TargetGrant, TargetProduct
from provisioner.targets.s3 import S3Target, read_grants

log = logging.getLogger(__name__)

ACTIVE = "active"
DELETING = "deleting"


class NamespaceConflict(PermanentError):
    """Two portal products claim the same namespace."""


class NamespaceChanged(PermanentError):
    """A provisioned product's namespace changed in the portal."""


def fingerprint(namespace: str, status: str, finalized: bool, name: str) -> str:
    """A digest of the portal-side state a converged product should show; resync skips products that match."""
    text = "\x1f".join((namespace, status, "1" if finalized else "0", name))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


class ProductReconciler:
    """Provisions, updates and cleans up data products."""

    def __init__(
        self,
        *,
        portal: PortalClient,
        store: StoreAdmin,
        state: StateStore,
        config: ReconcileConfig,
        targets: TargetRunner | None = None,
    ) -> None:
        self.portal = portal
        self.store = store
        self.s3 = S3Target(store, config.bucket)
        self.targets = targets if targets is not None else TargetRunner(state)  # the targets beside S3
        self.state = state
        self.config = config
        self.parking = ParkingLot(state)
        self._compiled = scaffold.CompiledTemplates()

    def reconcile_product(self, product_id: str, *, force: bool = False) -> list[Trigger]:
        """Converge ``product_id``; return follow-up work (consumers whose grants must change).

        A product outside the scope is released instead (reconcile/scope.py); a parked product whose portal data
        has not changed since it failed is skipped, unless ``force`` (reconcile/parking.py).
        """
        product: Product | None = None
        fetched = False
        run: Run | None = None
        try:
            # The block is the run: recorded at the start, closed at the end (a failure with its error) before the
            # parking and the log line below.
            with self.state.recording("product", product_id) as run:
                product = self.portal.get_product(product_id)
                fetched = True
                record = self.state.product(product_id)
                live = record is not None and record.state == "provisioned"
                deleting = product is None or product.status == DELETING
                excluded = None if product is None else self.config.scope.excluded_because(product)
                parked = None if force else self.parking.get(product_id)
                if excluded is not None and not (live and deleting):
                    # Never ours, or released: a deletion is cleaned up only for a product we still hold resources of.
                    follow_up = self._release(run, product, record, excluded)
                elif parked is not None and holds(parked, product):
                    run.detail.update(outcome="skipped", parked=parked.reason, reason=parked.error)
                    log_event(log, "product.parked_skipped", product_id=product_id, reason=parked.reason)
                    return []
                elif deleting:
                    run.kind = "delete"
                    follow_up = self._clean_up(run, product_id, product, record)
                    if run.detail.get("outcome") == "deleted" and run.namespace:
                        # The namespace is free again: products parked because they wanted it may have it now.
                        freed = self.parking.release_namespace(str(run.namespace), NamespaceConflict.__name__)
                        follow_up = [*follow_up, *(ReconcileProduct(p) for p in freed)]
                else:
                    follow_up = self._converge(run, product, record)  # type: ignore[arg-type]  # not deleting: present
                if parked is not None or force:
                    self.parking.unpark(product_id)
        except ProvisionerError as exc:
            parked_now = classify(exc).permanent and fetched  # the error policy: only a person can unblock it
            if parked_now:
                self.parking.park(product_id, product, exc)
            log_event(
                log,
                "product.parked" if parked_now else "product.failed",
                level=logging.ERROR,
                product_id=product_id,
                namespace=run.namespace if run is not None else None,
                error=str(exc),
            )
            raise
        return follow_up

    def _release(self, run: Run, product: Product | None, record: ProductRecord | None, why: str) -> list[Trigger]:
        """A product outside the scope: drop our finalizer if it has one, create and delete nothing."""
        run.detail.update(outcome="skipped", reason=f"out of scope: {why}")
        if product is not None and self.config.finalizer in product.finalizers:
            self.portal.remove_finalizer(product.id, self.config.finalizer)
            run.step("finalizer_removed")
            run.detail["outcome"] = "released"
        if record is not None and record.state == "provisioned":
            run.namespace = record.namespace
        if run.steps:
            log_event(log, "product.released", product_id=run.subject, namespace=run.namespace, reason=why)
        return []

    # -- converge ---------------------------------------------------------------------------
    def _converge(self, run: Run, product: Product, record: ProductRecord | None) -> list[Trigger]:
        if product.problem is not None:  # found where the portal's answer was parsed: refuse before any write
            raise InvalidName(f"product {product.id} ({product.name!r}): {product.problem}")
        namespace = Namespace(product.namespace)
        run.namespace = namespace
        if record is not None and record.state == "provisioned" and record.namespace != namespace:
            raise NamespaceChanged(
                f"product {product.id} changed namespace from {record.namespace!r} to {namespace!r}; the provisioner "
                "does not move data, users and projects between namespaces: change it back, or create a new product"
            )
        owner = self._owned_by_another(
            product.id, namespace, provisioned=bool(record and record.state == "provisioned")
        )
        if owner is not None:
            raise NamespaceConflict(
                f"namespace {namespace!r} of product {product.id} is already provisioned for product "
                f"{owner.product_id} (store user {namespace.user_name}); rename one of them in the portal"
            )
        cfg = self.config
        if cfg.finalizer not in product.finalizers:
            self.portal.add_finalizer(product.id, cfg.finalizer)
            run.step("finalizer")
        # Read grants from current truth: the portal's approvals now, intersected with the grant decisions taken
        # here (reconcile/grants.py); never from a record alone, so a revoked port is not put back.
        reads = current_reads(self.portal, self.state, product.id)
        read_prefixes = readable_prefixes(cfg.bucket, read_grants(reads))
        # A product never recorded is new to the store too (first_time), unless an earlier attempt crashed mid-way.
        fresh = record is None
        s3 = self.s3.ensure(self._target_product(product, namespace, reads=tuple(reads), first_time=fresh))
        run.steps.extend(s3.steps)
        user_created = bool(s3.detail["user_created"])

        project = credentials.project_dir(cfg, namespace)
        added = scaffold.render_project(
            cfg.template,
            project,
            {
                "namespace": str(namespace),
                "product_id": product.id,
                "product_name": product.name,
                "description": product.description,
                "bucket": str(cfg.bucket),
                "s3_endpoint": cfg.s3_endpoint,
                "region": cfg.s3_region,
            },
            self._compiled,
        )
        if added:
            run.step("project")
            run.detail["files_added"] = len(added)

        recorded_key = record.access_key_id if record and record.state == "provisioned" else None
        keys = credentials.converge_key(self.store, cfg, namespace, read_prefixes, recorded_key, new_user=user_created)
        if keys.created:
            run.step("key")
        if keys.deleted:
            run.step("stale_keys_deleted")
        if keys.env_changed and not keys.created:
            run.step("env")
        if keys.secret_missing:
            run.detail["warning"] = (
                f".env has no secret for key {keys.access_key_id}: run `provisioner rotate {namespace}`"
            )

        seeded = bool(record and record.seeded and record.state == "provisioned")
        if not seeded:
            uploaded = self._seed(namespace, project, fresh=fresh)
            if uploaded:
                run.step("seed")
                run.detail["seeded_objects"] = uploaded
            seeded = True

        # Every other target converges on its own: a failure there is recorded, and S3 above stands.
        ready_now = self.targets.ensure(run, product, self._target_product(product, namespace))

        final_status = product.status
        if product.status == "pending":
            self.portal.set_status(product.id, ACTIVE)
            final_status = ACTIVE
            run.step("status")

        new_record = ProductRecord(
            product_id=product.id,
            namespace=namespace,
            name=product.name,
            state="provisioned",
            access_key_id=keys.access_key_id,
            seeded=seeded,
            fingerprint=fingerprint(namespace, final_status, True, product.name),
        )
        self.state.save_product(new_record)
        run.detail["outcome"] = "provisioned" if run.steps else "unchanged"
        log_event(
            log,
            "product.provisioned" if run.steps else "product.unchanged",
            product_id=product.id,
            namespace=namespace,
            steps=run.steps,
            access_key_id=keys.access_key_id,
        )
        # The .env's key was issued for other grants (an access reconcile was interrupted): let it settle the key.
        follow_up: list[Trigger] = [ReconcileAccess(product.id)] if keys.prefixes_stale else []
        if ready_now:  # a target has this product's resources now: grants on them that waited can be written
            follow_up += [ReconcileAccess(c) for c in self.state.consumers_of(product.id)]
        return follow_up

    def _seed(self, namespace: Namespace, project: Path, *, fresh: bool) -> int:
        """Upload the template's example raw files once; never over a file the team already replaced."""
        uploaded = 0
        for name, body in scaffold.raw_seed_files(project):
            key = f"{namespace.prefix}raw/{name}"
            # A product never recorded holds at most our own example files (a retried first run rewrites the same
            # bytes); a recorded one may hold the team's own, so look before writing.
            if fresh or not self.store.object_exists(self.config.bucket, key):
                self.store.put_object(self.config.bucket, key, body)
                uploaded += 1
        return uploaded

    def _owned_by_another(self, product_id: str, namespace: Namespace, *, provisioned: bool) -> ProductRecord | None:
        """The live record of another product that holds ``namespace``'s prefix or store user, if any.

        Two namespaces share a store user only when one was written to look like the other's truncated user name
        (see ``shared_user_name``); that rare case is looked for among all records, and only before the product
        is provisioned (afterwards the user is known to be its own).
        """
        owner = self.state.live_by_namespace(namespace)
        if owner is not None and owner.product_id != product_id:
            return owner
        if provisioned or not shared_user_name(namespace):
            return None
        return next(
            (
                r
                for r in self.state.all_products()
                if r.state == "provisioned"
                and r.product_id != product_id
                and Namespace(r.namespace).user_name == namespace.user_name
            ),
            None,
        )

    # -- clean up ---------------------------------------------------------------------------
    def _clean_up(
        self, run: Run, product_id: str, product: Product | None, record: ProductRecord | None
    ) -> list[Trigger]:
        cfg = self.config
        if record is None or record.state != "provisioned":
            # No live record: a first provisioning that crashed before saving one, or a clean-up already done.
            # Clean up by name all the same: every user, key, policy, prefix and project named for the product,
            # unless the namespace now belongs to another product. Only our finalizer may still hold the deletion.
            # A clean-up interrupted after its state was saved still owes its readers a reconcile: their grant
            # rows say so.
            for namespace in self._names_of(product, record):
                if self._owned_by_another(product_id, namespace, provisioned=False) is None:
                    run.namespace = namespace
                    self._remove_resources(run, product_id, namespace)
            if product is not None and cfg.finalizer in product.finalizers:
                self.portal.remove_finalizer(product.id, cfg.finalizer)
                run.step("finalizer_removed")
            consumers = self.state.consumers_of(product_id) if record is not None else []
            run.detail["outcome"] = "cleaned" if run.steps or consumers else "skipped"
            return [ReconcileAccess(c) for c in consumers]
        namespace = Namespace(record.namespace)
        run.namespace = namespace
        self._remove_resources(run, product_id, namespace)
        consumers = self.state.consumers_of(record.product_id)
        self.state.replace_grants(record.product_id, [])
        self.state.save_product(replace(record, state="deleted", access_key_id=None))
        if product is not None and cfg.finalizer in product.finalizers:
            self.portal.remove_finalizer(product.id, cfg.finalizer)
            run.step("finalizer_removed")
        run.detail["outcome"] = "deleted"
        log_event(log, "product.deleted", product_id=record.product_id, namespace=namespace, steps=run.steps)
        # Consumers that could read this product's prefix must lose that statement and rotate their keys.
        return [ReconcileAccess(c) for c in consumers]

    def _target_product(
        self,
        product: Product,
        namespace: Namespace,
        *,
        reads: tuple[TargetGrant, ...] = (),
        first_time: bool = False,
    ) -> TargetProduct:
        """The product as targets are given it."""
        return TargetProduct(
            product_id=product.id,
            namespace=namespace,
            name=product.name,
            description=product.description,
            project_dir=credentials.project_dir(self.config, namespace),
            reads=reads,
            first_time=first_time,
        )

    @staticmethod
    def _names_of(product: Product | None, record: ProductRecord | None) -> list[Namespace]:
        """The namespaces a product's resources may be named for: the recorded one, and the portal's."""
        names: list[Namespace] = []
        for raw in (record.namespace if record else None, product.namespace if product else None):
            try:
                namespace = Namespace(raw)
            except InvalidName:
                continue  # nothing was ever created for a namespace outside the rule
            if namespace not in names:
                names.append(namespace)
        return names

    def _remove_resources(self, run: Run, product_id: str, namespace: Namespace) -> None:
        """Delete the store user (keys and policies with it), take the data out of reach, archive the project.

        Data is deleted when ``delete_data`` is set; otherwise it moves to ``_archive/<store name>/<product id>/``,
        which no product policy reaches, so a later product with the same namespace starts from an empty prefix.
        """
        cfg = self.config
        # Access to the other targets' resources goes first; each converges on its own.
        subject = TargetProduct(product_id, namespace, project_dir=credentials.project_dir(cfg, namespace))
        self.targets.clean_up(run, subject, delete_data=cfg.delete_data)
        s3 = self.s3.clean_up(TargetProduct(product_id, namespace), delete_data=cfg.delete_data, held=())
        run.steps.extend(s3.steps)
        run.detail.update(s3.detail)
        archived = scaffold.archive_project(cfg.products_dir, namespace)
        if archived is not None:
            run.step("project_archived")
            run.detail["archive"] = str(archived)
