"""``residual_pii`` in the tokenization policy file: warn by default, fail on request, anything else refused."""

from __future__ import annotations

import pytest

from provisioner.tokenize import PolicyError, PolicyFile

ENTRY = {"producer": "sales", "output_port": "customers", "tenant": "sales", "table": "people", "columns": ["email"]}


def test_default_is_warn() -> None:
    policy = PolicyFile.from_dict({"policies": [ENTRY]}).for_output_port("sales", "customers")
    assert policy is not None and policy.residual_pii == "warn"


def test_fail_reaches_the_runnable_policy() -> None:
    policies = PolicyFile.from_dict({"policies": [{**ENTRY, "residual_pii": "FAIL"}]})
    policy = policies.for_output_port("sales", "customers")
    assert policy is not None and policy.residual_pii == "fail"
    flat = PolicyFile.from_dict({"tenant": "sales", "table": "people", "columns": ["email"], "residual_pii": "fail"})
    assert flat.policies()[0].residual_pii == "fail"


@pytest.mark.parametrize("value", ["block", "", 1, True, ["fail"]])
def test_other_values_are_refused(value: object) -> None:
    with pytest.raises(PolicyError, match=r"policies\[0\]: 'residual_pii' must be 'warn' or 'fail'"):
        PolicyFile.from_dict({"policies": [{**ENTRY, "residual_pii": value}]})
