"""A product key on moto's server (IAM enforced): own prefix read/write, other prefixes denied, grants read-only.

moto ignores policy Conditions and Inactive keys; test_seaweedfs.py covers those on a real store.
"""

from __future__ import annotations

import json

from provisioner.names import BucketName, Namespace
from provisioner.storage.policy import ReadGrant
from tests.fixtures.s3 import S3Server
from tests.storage.scoping import denied, eventually, provision, s3_as


def test_product_key_is_scoped_to_its_prefix_and_grants(moto_server: S3Server, unique_name: str) -> None:
    bucket, sales, hr = (
        BucketName(f"{unique_name}-bkt"),
        Namespace(f"{unique_name}-sales"),
        Namespace(f"{unique_name}-hr"),
    )
    store = provision(moto_server, bucket, sales, hr)
    store.put_object(bucket, f"{hr}/published/people/people.csv", b"id,name\n")
    s3 = s3_as(moto_server, store.create_key(sales))

    # own prefix: write, read, delete
    s3.put_object(Bucket=bucket, Key=f"{sales}/raw/orders.csv", Body=b"1,2\n")
    assert s3.get_object(Bucket=bucket, Key=f"{sales}/raw/orders.csv")["Body"].read() == b"1,2\n"
    s3.delete_object(Bucket=bucket, Key=f"{sales}/raw/orders.csv")
    # another product's prefix: nothing
    assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"{hr}/published/people/people.csv")) == "AccessDenied"
    assert denied(lambda: s3.put_object(Bucket=bucket, Key=f"{hr}/x.csv", Body=b"x")) == "AccessDenied"
    assert denied(lambda: s3.put_object(Bucket=bucket, Key="top-level.csv", Body=b"x")) == "AccessDenied"

    # a read grant: read yes, write still no
    assert store.ensure_user(bucket, sales, [ReadGrant(hr, Namespace("people"))]) is True
    eventually(lambda: s3.get_object(Bucket=bucket, Key=f"{hr}/published/people/people.csv"))
    assert denied(lambda: s3.put_object(Bucket=bucket, Key=f"{hr}/x.csv", Body=b"x")) == "AccessDenied"
    assert denied(lambda: s3.delete_object(Bucket=bucket, Key=f"{hr}/published/people/people.csv")) == "AccessDenied"

    # grant removed: read gone again
    assert store.ensure_user(bucket, sales, []) is True
    assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"{hr}/published/people/people.csv")) == "AccessDenied"


def test_deleted_key_no_longer_works(moto_server: S3Server, unique_name: str) -> None:
    bucket, sales = BucketName(f"{unique_name}-bkt"), Namespace(f"{unique_name}-sales")
    store = provision(moto_server, bucket, sales)
    key = store.create_key(sales)
    s3 = s3_as(moto_server, key)
    s3.put_object(Bucket=bucket, Key=f"{sales}/a", Body=b"a")
    store.delete_key(sales, key.access_key_id)
    assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"{sales}/a")) in ("InvalidAccessKeyId", "AccessDenied")


def test_a_product_key_cannot_manage_keys_and_its_policy_denies_iam(moto_server: S3Server, unique_name: str) -> None:
    """Issue 12 §9: product policies deny every IAM action explicitly where the store takes a Deny (AWS, moto)."""
    from provisioner.storage.policy import DENY_IAM_STATEMENT, normalize_policy

    bucket, sales = BucketName(f"{unique_name}-bkt"), Namespace(f"{unique_name}-sales")
    store = provision(moto_server, bucket, sales)
    key = store.create_key(sales)
    deny = normalize_policy({"Statement": [DENY_IAM_STATEMENT]})
    assert json.loads(deny)["Statement"][0] in json.loads(normalize_policy(store.user_policy(sales)))["Statement"]
    iam = moto_server.client("iam", key.access_key_id, key.secret_key)
    assert denied(lambda: iam.create_access_key(UserName=sales.user_name)) == "AccessDenied"
    assert [k.access_key_id for k in store.list_keys(sales)] == [key.access_key_id]
