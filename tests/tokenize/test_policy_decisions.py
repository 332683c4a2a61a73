"""Issue 12 §3: every port's decision in the policy file, `tokenize: none`, and look-alikes that never match."""

from __future__ import annotations

import pytest

from provisioner.tokenize import PolicyError, PolicyFile

FULLWIDTH = "".join(chr(0xFEE0 + ord(c)) for c in "customer") + "_segments"  # NFKC folds it to ASCII
TABLES = [{"schema": "public", "table": "customers", "columns": ["email"]}]


def _file(*entries: dict) -> PolicyFile:
    return PolicyFile.from_dict({"policies": list(entries)})


def test_tokenize_none_is_an_entry_that_tokenizes_nothing() -> None:
    policies = _file(
        {"producer": "sales", "output_port": "daily_totals", "tokenize": "none"},
        {"producer": "sales", "output_port": "customers", "tenant": "crm", "tables": TABLES},
    )
    none = policies.decide("sales", "daily_totals")
    assert none.entry is not None and none.entry.tokenize is False and none.lookalikes == ()
    assert policies.for_output_port("sales", "daily_totals") is None  # nothing to run
    assert [p.name for p in policies.policies()] == ["sales/customers"]  # the CLI runs only what tokenizes
    assert policies.decide("sales", "orders").entry is None


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"tokenize": "yes"}, "'tokenize' can only be 'none'"),
        ({"tokenize": None}, "'tokenize' can only be 'none'"),
        ({"tokenize": "none", "tenant": "crm", "tables": TABLES}, "takes no tables, tenant"),
    ],
)
def test_tokenize_takes_only_none_and_nothing_beside_it(item: dict, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        _file({"producer": "sales", "output_port": "orders", **item})


@pytest.mark.parametrize("written", ["Customer_Segments", "  customer_segments ", FULLWIDTH])
def test_an_entry_matches_its_port_after_normalisation(written: str) -> None:
    """Case, surrounding whitespace and full-width letters (NFKC) are the same name."""
    policies = _file({"producer": " Marketing ", "output_port": written, "tenant": "crm", "tables": TABLES})
    decision = policies.decide("marketing", "customer_segments")
    assert decision.entry is not None and decision.entry.label == "marketing/customer_segments"


@pytest.mark.parametrize(
    "written",
    [
        "\u0441ustomer_segments",  # Cyrillic es, looks like c
        "customer_segment\u0455",  # Cyrillic dze, looks like s
        "customer segments",
        "customer/segments",
        "x" * 65,
    ],
)
def test_a_name_the_portal_cannot_have_is_refused_at_load(written: str) -> None:
    with pytest.raises(PolicyError, match="'output_port' must be a portal namespace"):
        _file({"producer": "marketing", "output_port": written, "tenant": "crm", "tables": TABLES})


@pytest.mark.parametrize("port", ["customer-segments", "customer.segments", "customer__segments", "customer_segments_"])
def test_a_lookalike_never_matches_and_is_reported(port: str) -> None:
    """An entry for customer_segments does not cover a port that only looks like it, and says so."""
    policies = _file(
        {"producer": "marketing", "output_port": "*", "tokenize": "none"},
        {"producer": "marketing", "output_port": "customer_segments", "tenant": "crm", "tables": TABLES},
    )
    decision = policies.decide("marketing", port)
    assert decision.entry is not None and decision.entry.output_port == "*"  # only the wildcard matches...
    assert decision.lookalikes == ("marketing/customer_segments",)  # ...and the near miss is named
    assert policies.decide("marketing", "customer_segments").lookalikes == ()


def test_a_lookalike_producer_is_reported_too() -> None:
    policies = _file({"producer": "customer-crm", "output_port": "*", "tenant": "crm", "tables": TABLES})
    decision = policies.decide("customer_crm", "customers")
    assert decision.entry is None and decision.lookalikes == ("customer-crm/*",)


def test_one_entry_per_port() -> None:
    with pytest.raises(PolicyError, match=r"policies\[1\]: sales/orders already has an entry \(policies\[0\]\)"):
        _file(
            {"producer": "sales", "output_port": "orders", "tokenize": "none"},
            {"producer": "Sales", "output_port": "ORDERS", "tenant": "crm", "tables": TABLES},
        )
