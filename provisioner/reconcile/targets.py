"""The provisioning targets beside S3 (BigQuery): each converges on its own, and its outcome is recorded.

S3 is the product's first target and runs inline in the product and access reconcilers (``targets.s3.S3Target``):
it carries the project's key and ``.env``, so its failure fails the run as it always did. Every other target runs
after it, through ``TargetRunner``:

* a target outside its scope (``PROVISIONER_<TARGET>_SCOPE_*``) gets nothing for that product;
* a failure of one target is caught, logged (``target.failed``), written into the run's detail under
  ``targets.<name>`` and into ``provisioner_target_state``; it never undoes or stops S3 or another target. A failed
  row makes the next resync reconcile the product (or the consumer's access) again;
* grants are the consumer's current reads (portal approvals ∩ grant decisions, tokenized first: tokenization runs
  once per approval, in the access reconciler, before any target grants anything). What a target granted is kept in
  ``provisioner_target_grants``, written *before* an addition (``remember``), so a revocation always finds it;
* values a target wants in the project's ``.env`` (``BQ_DATASET``, ``BQ_READ_DATASETS``) are merged into it
  atomically (``scaffold.write_env``: 0600), next to S3's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from provisioner import scaffold
from provisioner.logs import log_event, redact_text
from provisioner.persistence.records import TargetGrantRecord
from provisioner.persistence.runs import Run
from provisioner.persistence.state import StateStore
from provisioner.portal import Product
from provisioner.reconcile.scope import Scope
from provisioner.targets.base import HeldGrant, Target, TargetGrant, TargetOutcome, TargetProduct

log = logging.getLogger(__name__)

RESOURCES = "resources"
GRANTS = "grants"


@dataclass(frozen=True)
class ScopedTarget:
    """A target and the products it is for (its own scope selector; the default selects every product)."""

    target: Target
    scope: Scope = Scope()


class TargetRunner:
    """Runs each extra target's step for one product, each on its own."""

    def __init__(self, state: StateStore, targets: Sequence[ScopedTarget] = ()) -> None:
        self.state = state
        self.targets = list(targets)

    def __bool__(self) -> bool:
        return bool(self.targets)

    def _for(self, product: Product | None) -> list[Target]:
        return [t.target for t in self.targets if product is None or t.scope.admits(product)]

    def ensure(self, run: Run, product: Product, subject: TargetProduct) -> bool:
        """Create each in-scope target's resources for ``product``; True when a target has them now and had not
        before (its consumers' grants, which waited for them, can be written now)."""
        targets = self._for(product)
        if not targets:
            return False
        before = {s.target for s in self.state.target_states(product.id) if _ready(s.aspect, s.state)}
        for target in targets:
            self._run(run, target, subject, RESOURCES, lambda t=target: t.ensure(subject))  # type: ignore[misc]
        after = {s.target for s in self.state.target_states(product.id) if _ready(s.aspect, s.state)}
        return bool(after - before)

    def converge_grants(
        self, run: Run, consumer: Product | None, subject: TargetProduct, grants: Sequence[TargetGrant]
    ) -> None:
        """Make each target's grants of the consumer match ``grants`` (none where the consumer is out of its scope,
        or the producer has no resources in it)."""
        for scoped in self.targets:
            self._converge_one(run, scoped, consumer, subject, grants)

    def _converge_one(
        self,
        run: Run,
        scoped: ScopedTarget,
        consumer: Product | None,
        subject: TargetProduct,
        grants: Sequence[TargetGrant],
    ) -> None:
        target = scoped.target
        in_scope = consumer is not None and scoped.scope.admits(consumer)
        ready = [g for g in grants if in_scope and self._has_resources(target.name, g.producer_id)]
        not_ready = [g for g in grants if in_scope and g not in ready]
        held = [
            HeldGrant(r.producer_id, r.resource, r.principal)
            for r in self.state.target_grants_held(target.name, subject.product_id)
        ]

        def record(grants_held: Sequence[HeldGrant]) -> None:
            rows = sorted({(h.producer_id, h.resource, h.principal) for h in grants_held})
            self.state.replace_target_grants(
                target.name, subject.product_id, [TargetGrantRecord(target.name, subject.product_id, *r) for r in rows]
            )

        def step() -> TargetOutcome:
            # ``remember``: everything about to be held, before the first addition (never an entry unrecorded).
            outcome = target.converge_grants(subject, ready, held, lambda now: record([*held, *now]))
            outcome.waiting.extend(
                f"producer {g.producer_namespace} has no {target.name} resources yet (out of its scope, or not "
                "provisioned there)"
                for g in not_ready
            )
            if outcome.held is not None:
                record(outcome.held)
            return outcome

        self._run(run, target, subject, GRANTS, step)

    def clean_up(self, run: Run, subject: TargetProduct, *, delete_data: bool) -> None:
        """The product is deleted: its own grants on others go, then every target's resources of it."""
        self.converge_grants(run, None, subject, [])
        for scoped in self.targets:
            target = scoped.target
            held = [
                HeldGrant(r.producer_id, r.resource, r.principal)
                for r in self.state.target_grants_on(target.name, subject.product_id)
            ]

            def step(t: Target = target, h: list[HeldGrant] = held) -> TargetOutcome:
                outcome = t.clean_up(subject, delete_data=delete_data, held=h)
                self.state.forget_target_grants_on(t.name, subject.product_id)
                return outcome

            self._run(run, target, subject, RESOURCES, step, done="deleted")

    def probes(self) -> dict[str, str]:
        """Each target's one-line health (``provisioner check`` prints them)."""
        return {t.target.name: t.target.probe() for t in self.targets}

    def _has_resources(self, target: str, product_id: str) -> bool:
        return any(s.target == target and _ready(s.aspect, s.state) for s in self.state.target_states(product_id))

    def _run(
        self,
        run: Run,
        target: Target,
        subject: TargetProduct,
        aspect: str,
        step: Callable[[], TargetOutcome],
        *,
        done: str = "converged",
    ) -> None:
        report: dict[str, Any]
        try:
            outcome = step()
        except Exception as exc:  # one target's failure is recorded, never raised into another's
            error = " ".join(redact_text(str(exc)).split()) or type(exc).__name__
            report = {"aspect": aspect, "outcome": "failed", "error": error}
            self.state.save_target_state(target.name, subject.product_id, aspect, "failed", report)
            log_event(
                log,
                "target.failed",
                level=logging.ERROR,
                target=target.name,
                product_id=subject.product_id,
                namespace=subject.namespace,
                aspect=aspect,
                error=error,
            )
        else:
            state = "waiting" if outcome.waiting and done == "converged" else done
            report = {"aspect": aspect, "outcome": state, "steps": outcome.steps, **outcome.detail}
            if outcome.waiting:
                report["waiting"] = outcome.waiting
            self._write_env(subject, outcome.env)
            self.state.save_target_state(target.name, subject.product_id, aspect, state, report)
            run.steps.extend(f"{target.name}.{s}" for s in outcome.steps)
        targets: dict[str, Any] = run.detail.setdefault("targets", {})
        targets.setdefault(target.name, {})[aspect] = report

    @staticmethod
    def _write_env(subject: TargetProduct, values: Mapping[str, str]) -> None:
        if values and subject.project_dir is not None and subject.project_dir.is_dir():
            scaffold.write_env(subject.project_dir / ".env", values)


def _ready(aspect: str, state: str) -> bool:
    """A target state that says the product's resources exist there (a schema refusal waits, the dataset is there)."""
    return aspect == RESOURCES and state in ("converged", "waiting")
