"""Converge one consumer's read grants: decide and tokenize first, then grant exactly the port; revoke what is gone.

Desired grants are the consumer's input ports with status ``approved`` (the portal approves ports to unrestricted
output ports by itself). A grant opens only ``<producer>/published/<output port>/`` (issue 12 §2) and is added only
once the port has a tokenization decision (§3): the policy's tables were tokenized successfully, the policy says
``tokenize: none``, or the port is unrestricted. A restricted port without an entry waits while
``PROVISIONER_TOKENIZE_REQUIRE_POLICY`` is on (the default); a look-alike entry always makes it wait.

Revocation is never lost (§4). Each step's order makes a crash anywhere harmless:

1. grant decisions of new ports are recorded (a decision alone opens nothing);
2. the store policy is written from the portal's current approvals intersected with the decisions, on every run,
   so it is right even when an earlier run died after writing it;
3. the key is rotated when the policy changed, or when the .env's key was not issued for this grant set yet
   (an interrupted run), never twice for the same set;
4. decisions of ports no longer approved are forgotten, and the product record is updated.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from provisioner.errors import InvalidName, PermanentError, ProvisionerError, TemporaryError, TokenizeError, classify
from provisioner.events import ReconcileAccess, Trigger
from provisioner.logs import log_event
from provisioner.names import Namespace
from provisioner.persistence.records import GrantRecord, GrantWait, ProductRecord
from provisioner.persistence.runs import Run
from provisioner.persistence.state import StateStore
from provisioner.portal import InputPort, PortalClient
from provisioner.reconcile import credentials
from provisioner.reconcile.grants import APPROVED, as_target_grant, readable_prefixes
from provisioner.reconcile.inputs import OPEN_ACCESS_TYPES, PortTokenizer, ReconcileConfig
from provisioner.reconcile.products import DELETING, ProductReconciler
from provisioner.storage.base import StoreAdmin
from provisioner.storage.policy import PolicyTooLarge, ReadGrant, fits
from provisioner.targets.base import TargetProduct

log = logging.getLogger(__name__)


class GrantBlocked(PermanentError):
    """Tokenization failed, so the grant was not added (fail closed). The job fails at once, keeping the product's
    lock free for its other jobs; the next resync finds the approved port without a grant and tries again."""


class GrantNotReady(TemporaryError):
    """A grant must wait a moment: the producer (or consumer) is not provisioned yet, or tokenization hit a
    passing error (lock timeout, unreachable tenant). The job is retried with backoff."""


@dataclass(frozen=True)
class _Blocked:
    """A port whose grant failed (rather than waiting for a person's decision): why, and the typed failure."""

    reason: str
    failure: ProvisionerError


@dataclass
class _Plan:
    """What one converge decided, port by port."""

    kept: list[GrantRecord] = field(default_factory=list)
    added: list[GrantRecord] = field(default_factory=list)
    waits: list[GrantWait] = field(default_factory=list)
    blocked: list[_Blocked] = field(default_factory=list)  # tokenization failures and other ports that failed
    too_large: list[str] = field(default_factory=list)


def read_grant(g: GrantRecord) -> ReadGrant:
    """The store-side grant of a recorded decision (its names were validated when it was decided)."""
    return ReadGrant(Namespace(g.producer_namespace), Namespace(g.output_port_namespace))


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
        tokenizer: PortTokenizer,
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
        try:
            with self.state.recording("access", consumer_id) as run:  # closed before the log line below
                self._converge(run, consumer_id)
        except ProvisionerError as exc:
            log_event(log, "access.failed", level=logging.ERROR, consumer_id=consumer_id, error=str(exc))
            raise
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

        approved = {p.output_port_id: p for p in self.portal.input_ports(consumer_id) if p.status == APPROVED}
        decided = {g.output_port_id: g for g in self.state.grants_of(consumer_id)}
        plan = _Plan()
        for port_id, port in sorted(approved.items()):
            self._plan_port(run, plan, consumer_id, namespace, port, decided.get(port_id))
        final = self._fit(plan, consumer_id, namespace)
        removed = sorted(set(decided) - {g.output_port_id for g in final})
        try:
            self._apply(run, record, namespace, [g for g in plan.added if g in final], final)
        finally:
            # Every other target converges on its own, whatever S3 did: the same decided grants (tokenized first).
            if self.products.targets:
                reads = [t for t in (as_target_grant(g) for g in final) if t is not None]
                subject = self.products._target_product(consumer, namespace)
                self.products.targets.converge_grants(run, consumer, subject, reads)
        self.state.replace_waits(consumer_id, plan.waits)

        run.detail.update(
            granted=[read_grant(g).location(self.config.bucket) for g in plan.added if g in final],
            revoked=[read_grant(decided[p]).location(self.config.bucket) for p in removed if _names_ok(decided[p])],
            waiting={w.output_port_id: w.reason for w in plan.waits},
            outcome=("changed" if run.steps else "unchanged") if not plan.waits else "waiting",
        )
        log_event(
            log,
            "access.converged",
            consumer_id=consumer_id,
            namespace=namespace,
            granted=run.detail["granted"],
            revoked=run.detail["revoked"],
            waiting=sorted(run.detail["waiting"]),
        )
        if plan.waits:
            log_event(
                log,
                "access.grant_waiting",
                level=logging.WARNING,
                consumer_id=consumer_id,
                namespace=namespace,
                waiting=run.detail["waiting"],
            )
        if plan.blocked:
            reasons = [b.reason for b in plan.blocked]
            blocked = sorted(w.output_port_id for w in plan.waits if w.reason in reasons)
            message = f"grants for output port(s) {', '.join(blocked)} were not added: " + "; ".join(reasons)
            # The error policy decides: one failure that may pass (a producer still provisioning, a lock timeout)
            # makes the job retry soon; otherwise it fails at once and the next resync tries again.
            retry = any(classify(b.failure).retry for b in plan.blocked)
            raise GrantNotReady(message) if retry else GrantBlocked(message)
        if plan.too_large:
            raise PolicyTooLarge(
                f"output port(s) {', '.join(plan.too_large)} were not granted to {namespace}: its store policy would "
                "exceed the 2,048-character inline policy limit (docs/storage.md, 'How many grants fit'); every "
                "other grant and revocation was applied"
            )

    # -- deciding, port by port -------------------------------------------------------------
    def _plan_port(
        self, run: Run, plan: _Plan, consumer_id: str, namespace: Namespace, port: InputPort, prior: GrantRecord | None
    ) -> None:
        out = port.output_port
        producer = self.state.product(out.data_product_id)

        def wait(reason: str, *, failure: ProvisionerError | None = None) -> None:
            """The port waits: for a person's decision, or (with ``failure``) because its grant failed."""
            plan.waits.append(
                GrantWait(
                    consumer_id=consumer_id,
                    output_port_id=port.output_port_id,
                    producer_id=out.data_product_id,
                    producer_namespace=producer.namespace if producer else "",
                    output_port_namespace=out.namespace,
                    reason=reason,
                )
            )
            if failure is not None:
                plan.blocked.append(_Blocked(reason, failure))

        if producer is not None and producer.state == "deleted":
            # The portal still lists the port, but its product is gone: nothing to read, nothing to wait for.
            run.detail.setdefault("skipped", []).append(f"producer {producer.namespace} was deleted")
            return
        if producer is None or producer.state != "provisioned":
            reason = f"producer {out.data_product_id} is not provisioned yet"
            wait(reason, failure=GrantNotReady(reason))
            return
        try:
            port_namespace = Namespace(out.namespace)
        except InvalidName as exc:
            wait(f"output port {port.output_port_id} cannot be granted: {exc}", failure=exc)
            return
        if Namespace(producer.namespace) == namespace:
            run.detail.setdefault("skipped", []).append(f"output port {port_namespace} is the consumer's own")
            return
        decision = self.tokenizer.decide(producer.namespace, port_namespace)
        label = f"{producer.namespace}/{port_namespace}"
        if decision.kind == "lookalike":
            wait(f"no tokenization decision for {label}: {decision.detail}")
            return
        if decision.kind == "missing" and out.access_type not in OPEN_ACCESS_TYPES:
            if self.config.tokenize_require_policy:
                wait(
                    f"no tokenization decision for {out.access_type or 'restricted'} output port {label}: "
                    f"{decision.detail}. Add the port to the tokenization policy (tables to tokenize, or "
                    "'tokenize: none'), or set PROVISIONER_TOKENIZE_REQUIRE_POLICY=false"
                )
                return
            note = "no tokenization policy entry; PROVISIONER_TOKENIZE_REQUIRE_POLICY is off: granted untokenized"
        elif decision.kind == "missing":
            note = f"{out.access_type} output port without a tokenization policy entry: granted untokenized"
        elif decision.kind == "none":
            note = f"granted untokenized: {decision.detail}"
        else:
            note = ""

        same_names = prior is not None and (prior.producer_namespace, prior.output_port_namespace) == (
            producer.namespace,
            port_namespace,
        )
        if prior is not None and same_names and (decision.kind != "tokenize" or prior.tokenize_run_id):
            plan.kept.append(prior)
            return
        run_id = None
        if decision.kind == "tokenize":
            outcome = self.tokenizer(producer.namespace, port_namespace, out.tags)
            self.state.record_tokenize_outcome(
                port.output_port_id,
                producer.product_id,
                outcome.status,
                outcome.run_id,
                outcome.error,
            )
            if not outcome.ok:
                log_event(
                    log,
                    "access.tokenize_failed",
                    level=logging.ERROR,
                    consumer_id=consumer_id,
                    producer=producer.namespace,
                    output_port_id=port.output_port_id,
                    error=outcome.error,
                )
                reason = f"tokenization of {label} failed: {outcome.error}"
                wait(reason, failure=outcome.failure or TokenizeError(reason))
                return
            note = f"tokenized {outcome.rows_changed} row(s) in run {outcome.run_id}"
            run_id = outcome.run_id
            run.step("tokenized")
        run.detail.setdefault("tokenization", {})[port.output_port_id] = note
        plan.added.append(
            GrantRecord(
                consumer_id=consumer_id,
                output_port_id=port.output_port_id,
                producer_id=producer.product_id,
                producer_namespace=producer.namespace,
                output_port_namespace=port_namespace,
                tokenize_run_id=run_id,
                tokenize_note=note,
            )
        )

    def _fit(self, plan: _Plan, consumer_id: str, namespace: Namespace) -> list[GrantRecord]:
        """Kept grants first, then new ones, each only while the policy stays within the store's limit.

        Sized with the explicit Deny of IAM actions, the largest form a store may be sent: a policy that fits here
        fits every store, so the store never refuses it half-way and revocations always go through.
        """
        chosen: list[GrantRecord] = []
        for g in [*plan.kept, *plan.added]:
            if fits(self.config.bucket, namespace, [read_grant(x) for x in [*chosen, g]], deny_iam=True):
                chosen.append(g)
                continue
            plan.too_large.append(g.output_port_id)
            plan.waits.append(
                GrantWait(
                    consumer_id=consumer_id,
                    output_port_id=g.output_port_id,
                    producer_id=g.producer_id,
                    producer_namespace=g.producer_namespace,
                    output_port_namespace=g.output_port_namespace,
                    reason=f"the store policy of {namespace} would exceed the 2,048-character inline policy limit "
                    f"with {g.producer_namespace}/{g.output_port_namespace}",
                )
            )
        return chosen

    # -- applying -----------------------------------------------------------------------------
    def _apply(
        self,
        run: Run,
        record: ProductRecord,
        namespace: Namespace,
        added: Sequence[GrantRecord],
        final: Sequence[GrantRecord],
    ) -> None:
        cfg = self.config
        consumer_id = record.product_id
        if added:
            self.state.add_grants(consumer_id, added)  # 1. decisions first: a row alone never opens anything
        grants = [read_grant(g) for g in final]
        # 2. the policy, from approvals ∩ decisions
        s3 = self.products.s3.converge_grants(
            TargetProduct(consumer_id, namespace), [t for t in (as_target_grant(g) for g in final) if t is not None]
        )
        run.steps.extend(s3.steps)
        policy_changed = bool(s3.steps)
        prefixes = readable_prefixes(cfg.bucket, grants)
        keys = credentials.settle_key(self.store, cfg, namespace, prefixes, policy_changed=policy_changed)  # 3.
        if keys.created:
            run.step("key_rotated")
        elif keys.deleted:
            run.step("stale_keys_deleted")
        self.state.keep_only_grants(consumer_id, [g.output_port_id for g in final])  # 4.
        if record.access_key_id != keys.access_key_id:  # what it reads is its grant rows, written above
            self.state.save_product(replace(record, access_key_id=keys.access_key_id))


def _names_ok(g: GrantRecord) -> bool:
    try:
        read_grant(g)
    except InvalidName:
        return False
    return True
