"""A failed tokenization reaches the access flow as a typed error, and the error policy decides what follows.

The same message comes with a failure that may pass and with one that needs a person: only the type says which,
so the grant's job is retried soon (GrantNotReady) or fails at once (GrantBlocked) whatever the text says.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from provisioner.errors import ProvisionerError, TokenizeError, TokenizeUnavailable, classify
from provisioner.reconcile.access import GrantBlocked, GrantNotReady
from provisioner.reconcile.inputs import TokenizeDecision, TokenizeOutcome
from tests.reconcile.conftest import Site

MESSAGE = "table public.customers: lock not available within 5 s"


class FailingTokenizer:
    """A port tokenizer whose every run fails with ``failure`` (the engine's own failures are tested in tokenize/)."""

    def __init__(self, failure: ProvisionerError) -> None:
        self.failure = failure

    def decide(self, producer_namespace: str, output_port_namespace: str) -> TokenizeDecision:
        return TokenizeDecision("tokenize", "scripted")

    def __call__(self, producer_namespace: str, output_port_namespace: str, tags: Sequence[str]) -> TokenizeOutcome:
        return TokenizeOutcome(status="FAILURE", run_id=None, rows_changed=0, failure=self.failure)


@pytest.mark.parametrize(
    ("failure", "raised"),
    [(TokenizeUnavailable(MESSAGE), GrantNotReady), (TokenizeError(MESSAGE), GrantBlocked)],
    ids=["may-pass", "needs-a-person"],
)
def test_the_typed_failure_decides_whether_the_grant_job_retries(
    site: Site, unique_name: str, failure: ProvisionerError, raised: type[ProvisionerError]
) -> None:
    producer_id = site.provisioned(f"{unique_name}-prod")
    consumer_id = site.provisioned(f"{unique_name}-cons")
    state = site.portal_state
    port = state.create_output_port(producer_id, "Customers", namespace="customers", notify=False)
    state.request_access(consumer_id, port.id, notify=False)
    state.approve(port.id, consumer_id, notify=False)
    site.with_tokenizer(FailingTokenizer(failure))

    with pytest.raises(raised, match=f"tokenization of .* failed: {MESSAGE}") as err:
        site.reconcilers.reconcile_access(consumer_id)

    assert classify(err.value).retry is (raised is GrantNotReady)
    assert site.state.grants_of(consumer_id) == []
    run = site.state.last_runs(consumer_id, limit=1)[0]
    assert run["status"] == "failure" and MESSAGE in run["error"]
    assert site.state.tokenize_outcomes()[port.id]["error"] == MESSAGE
