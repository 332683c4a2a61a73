"""The tokenizer the access flow runs before a grant: the shared engine, driven by the output-port policy file."""

from __future__ import annotations

from collections.abc import Sequence

from provisioner.errors import ProvisionerError
from provisioner.reconcile.config import TokenizeOutcome, Tokenizer
from provisioner.tokenize import PolicyFile, RunRecorder, TokenizeOptions, plan, run
from provisioner.tokenize.engine import Connect


def policy_tokenizer(
    policies: PolicyFile, options: TokenizeOptions, connect: Connect, recorder: RunRecorder | None = None
) -> Tokenizer:
    """A Tokenizer that looks up the port's policy and runs the engine; None for ports without a policy."""

    def tokenize(producer_namespace: str, output_port_namespace: str, tags: Sequence[str]) -> TokenizeOutcome | None:
        policy = policies.for_output_port(producer_namespace, output_port_namespace, tags)
        if policy is None:
            return None
        try:
            result = run(plan(policy, options), connect=connect, recorder=recorder)
        except ProvisionerError as exc:  # a bad key or policy: fail closed with the reason
            return TokenizeOutcome(status="FAILURE", run_id=None, rows_changed=0, error=str(exc))
        return TokenizeOutcome(
            status=result.status,
            run_id=result.run_id,
            rows_changed=result.total_rows,
            error=result.error,
            retryable=result.retryable,
        )

    return tokenize
