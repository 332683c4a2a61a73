"""The product policy document: own prefix read/write/list, granted output port folders read/list, nothing else."""

from __future__ import annotations

import json
from fnmatch import fnmatchcase

import pytest
from hypothesis import given
from hypothesis import strategies as st

from provisioner.names import BucketName, Namespace
from provisioner.storage.policy import (
    INLINE_POLICY_LIMIT,
    PolicyTooLarge,
    ReadGrant,
    fits,
    normalize_policy,
    policies_equal,
    policy_json,
    policy_size,
    product_policy,
)

BUCKET = BucketName("data-products")
SALES = Namespace("sales")
HR_PEOPLE = ReadGrant(Namespace("hr"), Namespace("people"))
FINANCE_LEDGER = ReadGrant(Namespace("finance"), Namespace("ledger"))


def _statements(doc: dict, action: str) -> list[dict]:
    return [s for s in doc["Statement"] if action in s["Action"] and s["Effect"] == "Allow"]


def _may(doc: dict, action: str, key: str) -> bool:
    """Would an Allow statement of ``doc`` let ``action`` reach object ``key`` (list: prefix ``key``)?"""
    for s in _statements(doc, action):
        if action == "s3:ListBucket":
            if any(fnmatchcase(key, p) for p in s["Condition"]["StringLike"]["s3:prefix"]):
                return True
        elif any(fnmatchcase(f"arn:aws:s3:::{BUCKET}/{key}", r) for r in s["Resource"]):
            return True
    return False


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


def test_a_grant_is_exactly_the_output_port_folder() -> None:
    doc = product_policy(BUCKET, SALES, [HR_PEOPLE, FINANCE_LEDGER])
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"):
        assert not _may(doc, action, "hr/published/people/x.parquet"), action
    assert _may(doc, "s3:GetObject", "hr/published/people/x.parquet")
    assert _may(doc, "s3:GetObject", "finance/published/ledger/2024/x.parquet")
    assert _may(doc, "s3:ListBucket", "hr/published/people/")
    for key in ("hr/raw/people.csv", "hr/published/payroll/x.parquet", "hr/published/people.parquet", "hr/x"):
        assert not _may(doc, "s3:GetObject", key), key
    for prefix in ("hr/", "hr/raw/", "hr/published/", "hr/published/peoplex/", "hr/published/payroll/", ""):
        assert not _may(doc, "s3:ListBucket", prefix), prefix
    resources = {r for s in _statements(doc, "s3:GetObject") for r in s["Resource"]}
    assert resources == {
        "arn:aws:s3:::data-products/sales/*",
        "arn:aws:s3:::data-products/hr/published/people/*",
        "arn:aws:s3:::data-products/finance/published/ledger/*",
    }


def test_grant_names_come_from_the_namespace_mapping() -> None:
    odd = ReadGrant(Namespace("com.example@crm"), Namespace("customers+eu"))
    assert odd.prefix == f"{odd.producer.prefix}published/{odd.output_port.prefix}"
    assert ".." not in odd.prefix and odd.prefix.count("/") == 3
    assert ReadGrant(Namespace("customer_segmentation"), Namespace("segments_weekly")).prefix == (
        "customer_segmentation/published/segments_weekly/"
    )


def test_grant_on_own_prefix_and_duplicates_change_nothing() -> None:
    plain = product_policy(BUCKET, SALES)
    assert product_policy(BUCKET, SALES, [ReadGrant(SALES, Namespace("orders"))]) == plain
    assert product_policy(BUCKET, SALES, [HR_PEOPLE, HR_PEOPLE]) == product_policy(BUCKET, SALES, [HR_PEOPLE])


def test_removing_a_grant_changes_the_document() -> None:
    assert not policies_equal(product_policy(BUCKET, SALES, [HR_PEOPLE]), product_policy(BUCKET, SALES))


def test_iam_is_denied_explicitly_when_the_store_takes_it() -> None:
    doc = product_policy(BUCKET, SALES, deny_iam=True)
    (deny,) = [s for s in doc["Statement"] if s["Effect"] == "Deny"]
    assert deny["Action"] == ["iam:*"] and deny["Resource"] == ["*"]
    assert not any(s["Effect"] == "Deny" for s in product_policy(BUCKET, SALES)["Statement"])


def _grants(count: int, length: int) -> list[ReadGrant]:
    return [ReadGrant(Namespace(f"{i:03d}".ljust(length, "p")), Namespace("o" * length)) for i in range(count)]


@pytest.mark.parametrize(
    ("length", "fit"),
    [(10, 12), (20, 8), (30, 6), (64, 3)],  # README "How many grants fit" (bucket data-products, iam:* denied)
)
def test_how_many_grants_fit_in_the_aws_inline_limit(length: int, fit: int) -> None:
    consumer = Namespace("c" * length)
    assert fits(BUCKET, consumer, _grants(fit, length), deny_iam=True)
    assert not fits(BUCKET, consumer, _grants(fit + 1, length), deny_iam=True)
    assert policy_size(product_policy(BUCKET, consumer, _grants(fit, length), deny_iam=True)) <= INLINE_POLICY_LIMIT


def test_a_policy_over_the_limit_is_refused_not_cut() -> None:
    with pytest.raises(PolicyTooLarge, match=r"13 read grant\(s\) would be \d+ characters, over the 2048"):
        product_policy(BUCKET, Namespace("c" * 10), _grants(13, 10), deny_iam=True)


@given(st.permutations(["hr", "finance", "ops", "legal"]))
def test_output_is_deterministic_whatever_the_grant_order(order: list[str]) -> None:
    grants = [ReadGrant(Namespace(n), Namespace("port")) for n in order]
    expected = policy_json(product_policy(BUCKET, SALES, sorted(grants)))
    assert policy_json(product_policy(BUCKET, SALES, grants)) == expected


def test_normal_form_ignores_what_stores_reshape() -> None:
    doc = product_policy(BUCKET, SALES, [HR_PEOPLE])
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
