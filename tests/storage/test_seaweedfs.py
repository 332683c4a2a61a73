"""A product key on SeaweedFS, the embedded default: what moto cannot prove.

List scoping through the ``s3:prefix`` condition, Inactive keys refused, and users, keys and data that
survive a restart of the store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.names import BucketName, Namespace
from provisioner.storage.embedded import EmbeddedStore
from tests.fixtures.s3 import S3Server
from tests.storage.scoping import denied, eventually, provision, s3_as

pytestmark = [pytest.mark.seaweedfs]


def _keys(result: dict) -> list[str]:
    return sorted(o["Key"] for o in result.get("Contents", []))


def test_product_key_reads_writes_and_lists_only_its_prefix(seaweedfs_server: S3Server, unique_name: str) -> None:
    bucket = BucketName(f"{unique_name}-bkt")
    sales, hr = Namespace(f"{unique_name}-sales"), Namespace(f"{unique_name}-hr")
    store = provision(seaweedfs_server, bucket, sales, hr)
    store.put_object(bucket, f"{hr}/people.csv", b"id,name\n")
    s3 = s3_as(seaweedfs_server, store.create_key(sales))

    eventually(lambda: s3.put_object(Bucket=bucket, Key=f"{sales}/raw/orders.csv", Body=b"1,2\n"))
    assert s3.get_object(Bucket=bucket, Key=f"{sales}/raw/orders.csv")["Body"].read() == b"1,2\n"
    assert _keys(s3.list_objects_v2(Bucket=bucket, Prefix=f"{sales}/")) == [f"{sales}/", f"{sales}/raw/orders.csv"]
    assert s3.get_bucket_location(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200

    # what moto lets through: listing outside the namespace
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"{hr}/")) == "AccessDenied"
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket)) == "AccessDenied"
    assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"{hr}/people.csv")) == "AccessDenied"
    assert denied(lambda: s3.put_object(Bucket=bucket, Key=f"{hr}/x", Body=b"x")) == "AccessDenied"

    # a read grant: read and list the granted prefix, never write it
    store.ensure_user(bucket, sales, [hr])
    eventually(lambda: s3.get_object(Bucket=bucket, Key=f"{hr}/people.csv"))
    assert _keys(s3.list_objects_v2(Bucket=bucket, Prefix=f"{hr}/")) == [f"{hr}/", f"{hr}/people.csv"]
    assert denied(lambda: s3.put_object(Bucket=bucket, Key=f"{hr}/x", Body=b"x")) == "AccessDenied"
    assert denied(lambda: s3.delete_object(Bucket=bucket, Key=f"{hr}/people.csv")) == "AccessDenied"

    # grant removed: reading and listing stop
    store.ensure_user(bucket, sales, [])

    def read_refused() -> None:
        assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"{hr}/people.csv")) == "AccessDenied"
        assert denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"{hr}/")) == "AccessDenied"

    eventually(read_refused)


def test_inactive_key_is_refused(seaweedfs_server: S3Server, unique_name: str) -> None:
    bucket, sales = BucketName(f"{unique_name}-bkt"), Namespace(f"{unique_name}-sales")
    store = provision(seaweedfs_server, bucket, sales)
    key = store.create_key(sales)
    s3 = s3_as(seaweedfs_server, key)
    eventually(lambda: s3.put_object(Bucket=bucket, Key=f"{sales}/a", Body=b"a"))
    iam = seaweedfs_server.client("iam")
    iam.update_access_key(UserName=sales.user_name, AccessKeyId=key.access_key_id, Status="Inactive")
    assert [k.active for k in store.list_keys(sales)] == [False]

    def refused() -> None:
        assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"{sales}/a")) in ("InvalidAccessKeyId", "AccessDenied")

    eventually(refused)


@pytest.mark.slow
def test_users_keys_and_data_survive_a_restart(
    seaweedfs_store: EmbeddedStore, seaweedfs_server: S3Server, unique_name: str
) -> None:
    bucket, sales = BucketName(f"{unique_name}-bkt"), Namespace(f"{unique_name}-sales")
    store = provision(seaweedfs_server, bucket, sales)
    key = store.create_key(sales)
    eventually(lambda: s3_as(seaweedfs_server, key).put_object(Bucket=bucket, Key=f"{sales}/kept", Body=b"kept"))

    seaweedfs_store.restart()

    after = provision(seaweedfs_server, bucket)  # a fresh client on the restarted store
    assert after.user_exists(sales)
    assert [k.access_key_id for k in after.list_keys(sales)] == [key.access_key_id]
    assert after.ensure_user(bucket, sales) is False  # the policy came back unchanged
    s3 = s3_as(seaweedfs_server, key)
    assert eventually(lambda: s3.get_object(Bucket=bucket, Key=f"{sales}/kept"))["Body"].read() == b"kept"
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket)) == "AccessDenied"


def test_duckdb_works_with_a_scoped_key(seaweedfs_server: S3Server, unique_name: str) -> None:
    """A real client (DuckDB httpfs) writes, globs and reads with the product key, and cannot write a grant."""
    duckdb = pytest.importorskip("duckdb")
    ext = pytest.importorskip("duckdb_extension_httpfs")
    bucket = BucketName(f"{unique_name}-bkt")
    sales, hr = Namespace(f"{unique_name}-sales"), Namespace(f"{unique_name}-hr")
    store = provision(seaweedfs_server, bucket, sales, hr)
    store.put_object(bucket, f"{hr}/people.csv", b"id,name\n1,ann\n")
    store.ensure_user(bucket, sales, [hr])
    key = store.create_key(sales)
    httpfs = next(iter(Path(ext.__file__).parent.glob(f"extensions/v{duckdb.__version__}/httpfs.duckdb_extension")))
    con = duckdb.connect(config={"allow_unsigned_extensions": "true"})
    con.execute(f"LOAD '{httpfs}'")
    host = seaweedfs_server.endpoint.removeprefix("http://")
    con.execute(
        f"CREATE SECRET (TYPE s3, KEY_ID '{key.access_key_id}', SECRET '{key.secret_key}', ENDPOINT '{host}', "
        "URL_STYLE 'path', USE_SSL false, REGION 'us-east-1')"
    )
    eventually(lambda: con.execute(f"COPY (SELECT 1 AS x) TO 's3://{bucket}/{sales}/raw/t.parquet' (FORMAT parquet)"))
    assert con.execute(f"SELECT x FROM 's3://{bucket}/{sales}/raw/*.parquet'").fetchall() == [(1,)]
    assert con.execute(f"SELECT name FROM read_csv('s3://{bucket}/{hr}/*.csv')").fetchall() == [("ann",)]
    with pytest.raises(duckdb.Error, match="403"):
        con.execute(f"COPY (SELECT 1 AS x) TO 's3://{bucket}/{hr}/x.parquet' (FORMAT parquet)")
