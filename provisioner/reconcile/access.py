"""Converge one consumer's read grants: tokenize the producer's PII first, then grant; revoke what is gone.

Desired grants are the consumer's input ports with status ``approved`` (the portal approves ports to unrestricted
output ports by itself). A grant is added only after the producer's output port was tokenized successfully (fail
closed); any change to the grant set rotates the consumer's key so an old key cannot keep what it had.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

from provisioner.errors import PermanentError, ProvisionerError, TemporaryError
from provisioner.events import ReconcileAccess, Trigger
from provisioner.logs import log_event
from provisioner.names import Namespace
from provisioner.portal import InputPort, PortalClient
from provisioner.reconcile import credentials
from provisioner.reconcile.config import ReconcileConfig, Tokenizer
from provisioner.reconcile.products import DELETING, ProductReconciler
from provisioner.reconcile.state import GrantRecord, ProductRecord, Run, StateStore
from provisioner.storage.base import StoreAdmin

log = logging.getLogger(__name__)
APPROVED = "approved"


class GrantBlocked(PermanentError):
    """Tokenization failed, so the grant was not added (fail closed). The job fails at once, keeping the product's
    lock free for its other jobs; the next resync finds the approved port without a grant and tries again."""


class GrantNotReady(TemporaryError):
    """A grant must wait a moment: the producer (or consumer) is not provisioned yet, or tokenization hit a
    passing error (lock timeout, unreachable tenant). The job is retried with backoff."""


class AccessReconciler:
    """Adds and removes read grants between provisioned products."""

    def __init__(
        self,
        *,
        portal: PortalClient,
        store: StoreAdmin,
        state: StateStore,
        config: ReconcileConfig,
        products: ProductReconciler,
        tokenizer: Tokenizer,
    ) -> None:
        self.portal = portal
        self.store = store
        self.state = state
        self.config = config
        self.products = products
        self.tokenizer = tokenizer

    def reconcile_output_port(self, producer_id: str, output_port_id: str) -> list[Trigger]:
        """A decision on an output port (v1 carries no consumer id): reconcile every consumer it concerns."""
        consumers = {p.consumer_id for p in self.portal.output_port_input_ports(producer_id, output_port_id)}
        consumers |= {g.consumer_id for g in self.state.all_grants() if g.output_port_id == output_port_id}
        return [ReconcileAccess(c) for c in sorted(c for c in consumers if c)]

    def reconcile_access(self, consumer_id: str) -> list[Trigger]:
        """Converge the grants of ``consumer_id`` to its approved input ports."""
        run = self.state.start_run("access", consumer_id)
        try:
            self._converge(run, consumer_id)
        except ProvisionerError as exc:
            self.state.finish_run(run, "failure", str(exc))
            log_event(log, "access.failed", level=logging.ERROR, consumer_id=consumer_id, error=str(exc))
            raise
        except Exception as exc:
            self.state.finish_run(run, "failure", f"unexpected error: {type(exc).__name__}: {exc}")
            raise
        self.state.finish_run(run, "skipped" if run.detail.get("outcome") == "skipped" else "success")
        return []

    def _converge(self, run: Run, consumer_id: str) -> None:
        consumer = self.portal.get_product(consumer_id)
        if consumer is None or consumer.status == DELETING:
            run.detail["outcome"] = "skipped"
            run.detail["reason"] = "consumer is gone or being deleted; its product reconcile cleans up"
            return
        record = self.state.product(consumer_id)
        if record is None or record.state != "provisioned":
            # Provision first (same entity lock as ours), then grant.
            self.products.reconcile_product(consumer_id)
            record = self.state.product(consumer_id)
            if record is None or record.state != "provisioned":
                raise GrantNotReady(f"consumer {consumer_id} is not provisioned yet")
        namespace = Namespace(record.namespace)
        run.namespace = namespace

        desired = {p.output_port_id: p for p in self.portal.input_ports(consumer_id) if p.status == APPROVED}
        current = {g.output_port_id: g for g in self.state.grants_of(consumer_id)}
        # A grant survives only while its port is approved and its producer is still provisioned here.
        kept = [g for port_id, g in current.items() if port_id in desired and self._provisioned(g.producer_id)]
        removed = [g for g in current.values() if g not in kept]
        added: list[GrantRecord] = []
        blocked: list[str] = []
        kept_ports = {g.output_port_id for g in kept}
        for port_id, port in sorted(desired.items()):
            if port_id in kept_ports:
                continue
            producer = self.state.product(port.output_port.data_product_id)
            if producer is not None and producer.state == "deleted":
                # The portal still lists the port, but its product is gone: nothing to read, nothing to wait for.
                run.detail.setdefault("skipped", []).append(f"producer {producer.namespace} was deleted")
                continue
            grant = self._prepare_grant(run, consumer_id, port, producer)
            if grant is None:
                blocked.append(port_id)
            else:
                added.append(grant)

        final = kept + added
        read_prefixes = sorted({g.producer_namespace for g in final} - {str(namespace)})
        if added or removed or tuple(read_prefixes) != record.read_prefixes:
            self._apply(run, record, namespace, final, read_prefixes)
        run.detail.update(
            granted=[g.producer_namespace for g in added],
            revoked=[g.producer_namespace for g in removed],
            blocked=blocked,
            outcome="changed" if run.steps else "unchanged",
        )
        log_event(
            log,
            "access.converged",
            consumer_id=consumer_id,
            namespace=namespace,
            granted=run.detail["granted"],
            revoked=run.detail["revoked"],
            blocked=blocked,
        )
        if blocked:
            message = f"grants for output port(s) {', '.join(blocked)} were not added: " + "; ".join(
                run.detail.get("errors", [])
            )
            raise GrantNotReady(message) if run.detail.get("retry_soon") else GrantBlocked(message)

    def _provisioned(self, product_id: str) -> bool:
        record = self.state.product(product_id)
        return record is not None and record.state == "provisioned"

    def _prepare_grant(
        self, run: Run, consumer_id: str, port: InputPort, producer: ProductRecord | None
    ) -> GrantRecord | None:
        producer_id = port.output_port.data_product_id
        if producer is None or producer.state != "provisioned":
            run.detail.setdefault("errors", []).append(f"producer {producer_id} is not provisioned yet")
            run.detail["retry_soon"] = True
            return None
        outcome = self.tokenizer(producer.namespace, port.output_port.namespace, port.output_port.tags)
        if outcome is None:
            note = "no tokenization policy for this output port: granted without tokenization"
            run_id = None
        else:
            self.state.record_tokenize_outcome(
                port.output_port_id, producer_id, outcome.status, outcome.run_id, outcome.rows_changed, outcome.error
            )
            if not outcome.ok:
                if outcome.retryable:
                    run.detail["retry_soon"] = True
                run.detail.setdefault("errors", []).append(
                    f"tokenization of {producer.namespace}/{port.output_port.namespace} failed: {outcome.error}"
                )
                log_event(
                    log,
                    "access.tokenize_failed",
                    level=logging.ERROR,
                    consumer_id=consumer_id,
                    producer=producer.namespace,
                    output_port_id=port.output_port_id,
                    error=outcome.error,
                )
                return None
            note = f"tokenized {outcome.rows_changed} row(s) in run {outcome.run_id}"
            run_id = outcome.run_id
            run.step("tokenized")
        run.detail.setdefault("tokenization", {})[port.output_port_id] = note
        return GrantRecord(
            consumer_id=consumer_id,
            output_port_id=port.output_port_id,
            producer_id=producer_id,
            producer_namespace=producer.namespace,
            output_port_namespace=port.output_port.namespace,
            tokenize_run_id=run_id,
            tokenize_note=note,
        )

    def _apply(
        self,
        run: Run,
        record: ProductRecord,
        namespace: Namespace,
        grants: Sequence[GrantRecord],
        read_prefixes: Sequence[str],
    ) -> None:
        cfg = self.config
        if self.store.ensure_user(cfg.bucket, namespace, [Namespace(p) for p in read_prefixes]):
            run.step("policy")
        # A new key, written into .env, then the old one deleted: the old key cannot keep reading.
        keys = credentials.rotate(self.store, cfg, namespace, read_prefixes)
        run.step("key_rotated")
        self.state.replace_grants(record.product_id, grants)
        self.state.save_product(replace(record, access_key_id=keys.access_key_id, read_prefixes=tuple(read_prefixes)))
