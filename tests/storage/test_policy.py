"""The product policy document: own prefix read/write/list, granted prefixes read/list, nothing else."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from provisioner.names import BucketName, Namespace
from provisioner.storage.policy import normalize_policy, policies_equal, policy_json, product_policy

BUCKET = BucketName("data-products")
SALES = Namespace("sales")


def _statements(doc: dict, action: str) -> list[dict]:
    return [s for s in doc["Statement"] if action in s["Action"]]


def test_own_prefix_is_read_write_and_nothing_outside_it() -> None:
    doc = product_policy(BUCKET, SALES)
    writes = _statements(doc, "s3:PutObject") + _statements(doc, "s3:DeleteObject")
    assert writes
    assert {r for s in writes for r in s["Resource"]} == {"arn:aws:s3:::data-products/sales/*"}
    reads = _statements(doc, "s3:GetObject")
    assert {r for s in reads for r in s["Resource"]} == {"arn:aws:s3:::data-products/sales/*"}
    assert all(s["Effect"] == "Allow" for s in doc["Statement"])
    assert "*" not in json.dumps(doc).replace("/*", "")  # no wildcard action or resource anywhere else


def test_listing_is_scoped_to_the_namespace_by_prefix_condition() -> None:
    doc = product_policy(BUCKET, SALES)
    (listing,) = _statements(doc, "s3:ListBucket")
    assert listing["Resource"] == ["arn:aws:s3:::data-products"]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["sales/", "sales/*"]}}
    (location,) = _statements(doc, "s3:GetBucketLocation")
    assert location["Resource"] == ["arn:aws:s3:::data-products"]


def test_read_grants_are_read_and_list_only() -> None:
    doc = product_policy(BUCKET, SALES, [Namespace("hr"), Namespace("finance")])
    granted = {"arn:aws:s3:::data-products/finance/*", "arn:aws:s3:::data-products/hr/*"}
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert not granted & {r for s in _statements(doc, action) for r in s["Resource"]}, action
    assert granted <= {r for s in _statements(doc, "s3:GetObject") for r in s["Resource"]}
    prefixes = {p for s in _statements(doc, "s3:ListBucket") for p in s["Condition"]["StringLike"]["s3:prefix"]}
    assert prefixes == {"sales/", "sales/*", "finance/", "finance/*", "hr/", "hr/*"}


def test_grant_of_own_namespace_and_duplicates_change_nothing() -> None:
    plain = product_policy(BUCKET, SALES)
    assert product_policy(BUCKET, SALES, [SALES]) == plain
    assert product_policy(BUCKET, SALES, [Namespace("hr"), Namespace("hr")]) == product_policy(
        BUCKET, SALES, [Namespace("hr")]
    )


def test_removing_a_grant_changes_the_document() -> None:
    assert not policies_equal(product_policy(BUCKET, SALES, [Namespace("hr")]), product_policy(BUCKET, SALES))


@given(st.permutations(["hr", "finance", "ops", "legal"]))
def test_output_is_deterministic_whatever_the_grant_order(order: list[str]) -> None:
    expected = policy_json(product_policy(BUCKET, SALES, [Namespace(n) for n in sorted(order)]))
    assert policy_json(product_policy(BUCKET, SALES, [Namespace(n) for n in order])) == expected


def test_normal_form_ignores_what_stores_reshape() -> None:
    doc = product_policy(BUCKET, SALES, [Namespace("hr")])
    reshaped = json.loads(json.dumps(doc))
    reshaped["Statement"].reverse()
    for statement in reshaped["Statement"]:
        statement.pop("Sid")
        if len(statement["Action"]) == 1:
            statement["Action"] = statement["Action"][0]  # SeaweedFS hands single values back as strings
        statement["Resource"] = list(reversed(statement["Resource"]))
    assert normalize_policy(json.dumps(reshaped)) == normalize_policy(doc)
    reshaped["Statement"][0]["Effect"] = "Deny"
    assert normalize_policy(reshaped) != normalize_policy(doc)
