"""Policy files: the producer/output-port shape, the flat shape, pii-* tag narrowing, errors naming the place."""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.tokenize import PolicyError, PolicyFile, TokenizePolicy, load_policy_file

FILE = """
key_env: MY_TOKEN_KEY
policies:
  - producer: sales
    output_port: customers
    tenant: Sales
    max_columns: 10
    tables:
      - schema: public
        table: customers
        columns: [email, phone]
  - producer: sales
    output_port: "*"
    tenant: sales
    tables:
      - table: contacts
        column_tags: {email: [pii-email], phone: [PII-phone], name: [public], notes: []}
"""


@pytest.fixture
def policy_file(tmp_path: Path) -> PolicyFile:
    path = tmp_path / "policy.yaml"
    path.write_text(FILE)
    return load_policy_file(path)


def test_exact_output_port_wins(policy_file: PolicyFile) -> None:
    policy = policy_file.for_output_port("sales", "customers")
    assert policy is not None
    assert policy.tenant == "sales"
    assert policy.max_columns == 10
    assert [(t.name, t.columns) for t in policy.tables] == [("public.customers", ("email", "phone"))]
    assert policy_file.key_env == "MY_TOKEN_KEY"


def test_wildcard_port_keeps_only_pii_tagged_columns(policy_file: PolicyFile) -> None:
    policy = policy_file.for_output_port("sales", "orders")
    assert policy is not None
    assert [(t.name, t.columns) for t in policy.tables] == [("public.contacts", ("email", "phone"))]


def test_port_pii_tags_narrow_tagged_columns(policy_file: PolicyFile) -> None:
    policy = policy_file.for_output_port("sales", "orders", tags=["pii-email", "gold"])
    assert policy is not None
    assert policy.tables[0].columns == ("email",)
    # Explicit column lists carry no tags: they are never narrowed away.
    exact = policy_file.for_output_port("sales", "customers", tags=["pii-email"])
    assert exact is not None and exact.tables[0].columns == ("email", "phone")


def test_unknown_producer_has_no_policy(policy_file: PolicyFile) -> None:
    assert policy_file.for_output_port("finance", "customers") is None


def test_policies_by_tenant(policy_file: PolicyFile) -> None:
    assert len(policy_file.policies()) == 2
    assert len(policy_file.policies("SALES")) == 2
    assert policy_file.policies("other") == []


def test_flat_dict_policy() -> None:
    policy = TokenizePolicy.from_dict({"tenant": "t1", "schema": "crm", "table": "people", "columns": ["email"]})
    assert policy.tables[0].name == "crm.people" and policy.column_count == 1
    file = PolicyFile.from_dict({"tenant": "t1", "table": "people", "columns": ["email"]})
    assert file.policies()[0].tables[0].name == "public.people"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"policies": [{"producer": "sales", "tenant": "t", "tables": [{"table": "x"}]}]},
            r"policies\[0\].tables\[0\]",
        ),
        ({"tenant": "t", "table": "x", "columns": ["bad name"]}, "identifier 'bad name' is invalid"),
        ({"tenant": "t", "table": "x", "columns": ["a", "a"]}, "listed twice"),
        ({"tenant": "t", "table": "x", "columns": ["a"], "max_columns": 0}, "max_columns"),
        ({"table": "x", "columns": ["a"]}, "'tenant'"),
        ({"policies": [{"producer": "Sales!", "tenant": "t", "tables": []}]}, "producer"),
        ({"key_env": "not a var", "tenant": "t", "table": "x", "columns": ["a"]}, "key_env"),
    ],
)
def test_malformed_policies_name_the_fault(data: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        PolicyFile.from_dict(data)


def test_unreadable_or_invalid_yaml(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: [unclosed")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy_file(bad)
