"""The tokenizer the access flow runs before a grant: the shared engine, driven by the output-port policy file.

After a successful run the residual-PII gate (``provisioner.profile.gate``) scans the port's tables for PII in the
columns the policy does not tokenize; with ``residual_pii: fail`` a finding turns the outcome into a FAILURE.
"""

from __future__ import annotations

from collections.abc import Sequence

from provisioner.errors import ProvisionerError, TokenizeError, TokenizeUnavailable
from provisioner.profile.gate import residual_pii_gate
from provisioner.reconcile.inputs import TokenizeDecision, TokenizeOutcome
from provisioner.tokenize import PolicyFile, RunRecorder, TokenizeOptions, plan, run
from provisioner.tokenize.engine import Connect


class PolicyTokenizer:
    """A PortTokenizer that looks up the port's entry in a policy file and runs the engine for it."""

    def __init__(
        self, policies: PolicyFile, options: TokenizeOptions, connect: Connect, recorder: RunRecorder | None = None
    ) -> None:
        self.policies = policies
        self.options = options
        self.connect = connect
        self.recorder = recorder

    def decide(self, producer_namespace: str, output_port_namespace: str) -> TokenizeDecision:
        """The entry's decision; a look-alike entry (with or without a wildcard beside it) makes the port wait."""
        found = self.policies.decide(producer_namespace, output_port_namespace)
        if found.lookalikes:
            return TokenizeDecision(
                "lookalike",
                f"{self.policies.source}: entr{'y' if len(found.lookalikes) == 1 else 'ies'} "
                f"{', '.join(found.lookalikes)} look like output port {producer_namespace}/{output_port_namespace} "
                "but do not match it: write the port's namespace exactly as the portal shows it",
            )
        if found.entry is None:
            return TokenizeDecision(
                "missing", f"{self.policies.source} has no entry for {producer_namespace}/{output_port_namespace}"
            )
        if not found.entry.tokenize:
            return TokenizeDecision("none", f"{self.policies.source}: {found.entry.label} says tokenize: none")
        return TokenizeDecision("tokenize", f"{self.policies.source}: {found.entry.label}")

    def __call__(self, producer_namespace: str, output_port_namespace: str, tags: Sequence[str]) -> TokenizeOutcome:
        """Run the port's policy; a port without tables to tokenize fails closed (decide first)."""
        policy = self.policies.for_output_port(producer_namespace, output_port_namespace, tags)
        if policy is None:
            return TokenizeOutcome(
                status="FAILURE",
                run_id=None,
                rows_changed=0,
                failure=TokenizeError(f"no tables to tokenize for {producer_namespace}/{output_port_namespace}"),
            )
        try:
            result = run(plan(policy, self.options), connect=self.connect, recorder=self.recorder)
        except ProvisionerError as exc:  # a bad key or policy: fail closed with the reason, until a person fixes it
            return TokenizeOutcome(status="FAILURE", run_id=None, rows_changed=0, failure=TokenizeError(str(exc)))
        if result.ok:
            gate = residual_pii_gate(
                policy, connect=self.connect, token_format=self.options.format, recorder=self.recorder
            )
            if gate.blocked:
                return TokenizeOutcome(
                    status="FAILURE",
                    run_id=result.run_id,
                    rows_changed=result.total_rows,
                    failure=_failure(gate.message, retryable=gate.retryable),
                )
        return TokenizeOutcome(
            status=result.status,
            run_id=result.run_id,
            rows_changed=result.total_rows,
            failure=_failure(result.error, retryable=result.retryable),
        )


def _failure(message: str | None, *, retryable: bool) -> ProvisionerError | None:
    """A failed run's message and flag (the engine's and the gate's results carry them so) as a typed error."""
    if message is None:
        return None
    return TokenizeUnavailable(message) if retryable else TokenizeError(message)


def policy_tokenizer(
    policies: PolicyFile, options: TokenizeOptions, connect: Connect, recorder: RunRecorder | None = None
) -> PolicyTokenizer:
    """A PortTokenizer over ``policies`` (see :class:`PolicyTokenizer`)."""
    return PolicyTokenizer(policies, options, connect, recorder)
