"""A product key on SeaweedFS, the embedded default: what moto cannot prove.

List scoping through the ``s3:prefix`` condition, Inactive keys refused, and users, keys and data that
survive a restart of the store.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.names import BucketName, Namespace
from provisioner.storage.embedded import EmbeddedStore
from provisioner.storage.policy import ReadGrant
from tests.fixtures.s3 import S3Server
from tests.storage.scoping import denied, eventually, provision, s3_as

pytestmark = [pytest.mark.seaweedfs]
PEOPLE = Namespace("people")  # the output port a read grant opens


def _keys(result: dict) -> list[str]:
    return sorted(o["Key"] for o in result.get("Contents", []))


def test_product_key_reads_writes_and_lists_only_its_prefix(seaweedfs_server: S3Server, unique_name: str) -> None:
    bucket = BucketName(f"{unique_name}-bkt")
    sales, hr = Namespace(f"{unique_name}-sales"), Namespace(f"{unique_name}-hr")
    store = provision(seaweedfs_server, bucket, sales, hr)
    store.put_object(bucket, f"{hr}/published/people/people.parquet", b"PAR1")
    s3 = s3_as(seaweedfs_server, store.create_key(sales))

    eventually(lambda: s3.put_object(Bucket=bucket, Key=f"{sales}/raw/orders.csv", Body=b"1,2\n"))
    assert s3.get_object(Bucket=bucket, Key=f"{sales}/raw/orders.csv")["Body"].read() == b"1,2\n"
    assert _keys(s3.list_objects_v2(Bucket=bucket, Prefix=f"{sales}/")) == [f"{sales}/", f"{sales}/raw/orders.csv"]
    assert s3.get_bucket_location(Bucket=bucket)["ResponseMetadata"]["HTTPStatusCode"] == 200

    # what moto lets through: listing outside the namespace
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=f"{hr}/")) == "AccessDenied"
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket)) == "AccessDenied"
    assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"{hr}/published/people/people.parquet")) == "AccessDenied"
    assert denied(lambda: s3.put_object(Bucket=bucket, Key=f"{hr}/x", Body=b"x")) == "AccessDenied"

    # a read grant on output port "people": read and list that folder, never write it
    store.ensure_user(bucket, sales, [ReadGrant(hr, PEOPLE)])
    folder = f"{hr}/published/people/"
    eventually(lambda: s3.get_object(Bucket=bucket, Key=f"{folder}people.parquet"))
    assert _keys(s3.list_objects_v2(Bucket=bucket, Prefix=folder)) == [f"{folder}people.parquet"]
    assert denied(lambda: s3.put_object(Bucket=bucket, Key=f"{folder}x", Body=b"x")) == "AccessDenied"
    assert denied(lambda: s3.delete_object(Bucket=bucket, Key=f"{folder}people.parquet")) == "AccessDenied"

    # grant removed: reading and listing stop
    store.ensure_user(bucket, sales, [])

    def read_refused() -> None:
        assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"{folder}people.parquet")) == "AccessDenied"
        assert denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=folder)) == "AccessDenied"

    eventually(read_refused)


def test_a_grant_opens_only_its_output_port_folder(seaweedfs_server: S3Server, unique_name: str) -> None:
    """Issue 12 §2: raw/, other ports and the rest of the producer's prefix stay denied (list and read)."""
    bucket = BucketName(f"{unique_name}-bkt")
    sales, hr = Namespace(f"{unique_name}-sales"), Namespace(f"{unique_name}_hr")
    store = provision(seaweedfs_server, bucket, sales, hr)
    objects = [
        f"{hr}/top.csv",
        f"{hr}/raw/people.csv",
        f"{hr}/published/people/people.parquet",
        f"{hr}/published/people/2024/q1.parquet",
        f"{hr}/published/payroll/pay.parquet",
        f"{hr}/published/people-eu/eu.parquet",
        f"{hr}/published/people.parquet",
    ]
    for key in objects:
        store.put_object(bucket, key, b"PAR1")
    store.ensure_user(bucket, sales, [ReadGrant(hr, PEOPLE)])
    s3 = s3_as(seaweedfs_server, store.create_key(sales))
    folder = f"{hr}/published/people/"

    readable = [k for k in objects if k.startswith(folder)]
    for key in readable:
        assert eventually(lambda key=key: s3.get_object(Bucket=bucket, Key=key))["Body"].read() == b"PAR1"
    assert _keys(s3.list_objects_v2(Bucket=bucket, Prefix=folder)) == sorted(readable)
    assert _keys(s3.list_objects_v2(Bucket=bucket, Prefix=f"{folder}2024/")) == [f"{folder}2024/q1.parquet"]
    for key in sorted(set(objects) - set(readable)):
        assert denied(lambda key=key: s3.get_object(Bucket=bucket, Key=key)) == "AccessDenied", key
    for prefix in (f"{hr}/", f"{hr}/raw/", f"{hr}/published/", f"{hr}/published/payroll/", f"{hr}/published/people"):
        assert denied(lambda prefix=prefix: s3.list_objects_v2(Bucket=bucket, Prefix=prefix)) == "AccessDenied", prefix
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket)) == "AccessDenied"


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
    store.put_object(bucket, f"{hr}/published/people/people.csv", b"id,name\n1,ann\n")
    store.ensure_user(bucket, sales, [ReadGrant(hr, PEOPLE)])
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
    assert con.execute(f"SELECT name FROM read_csv('s3://{bucket}/{hr}/published/people/*.csv')").fetchall() == [
        ("ann",)
    ]
    with pytest.raises(duckdb.Error, match="403"):
        con.execute(f"COPY (SELECT 1 AS x) TO 's3://{bucket}/{hr}/published/people/x.parquet' (FORMAT parquet)")


def test_a_key_a_product_issues_itself_does_not_outlive_its_next_converge(
    seaweedfs_server: S3Server, unique_name: str, tmp_path: Path
) -> None:
    """Issue 12 §9 on the embedded default store.

    SeaweedFS takes no Deny statement (the policy is stored without the explicit iam:* Deny) and lets a key manage
    its own user's keys whatever the policy says. So the provisioner's answer there is the converge: every key but
    the one in the project's .env is deleted, and a key the product made for itself stops working.
    """
    from provisioner.reconcile import credentials
    from provisioner.reconcile.inputs import ReconcileConfig
    from provisioner.scaffold import read_env
    from provisioner.settings import default_template
    from provisioner.storage.base import AccessKey

    bucket, sales = BucketName(f"{unique_name}-bkt"), Namespace(f"{unique_name}-sales")
    store = provision(seaweedfs_server, bucket, sales)
    assert store.ensure_user(bucket, sales) is False  # the Deny-less document, held already: nothing to write
    assert all(s["Effect"] == "Allow" for s in store.user_policy(sales)["Statement"])
    config = ReconcileConfig(bucket, tmp_path, default_template(), seaweedfs_server.endpoint, "us-east-1")
    (tmp_path / sales.folder).mkdir()
    issued = credentials.converge_key(store, config, sales, [], None).access_key_id
    env = read_env(credentials.env_path(config, sales))
    product_iam = seaweedfs_server.client("iam", env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"])
    # SeaweedFS 4.48 allows this ("self-service"); were it ever refused, this test would have nothing left to prove.
    made = eventually(lambda: product_iam.create_access_key(UserName=sales.user_name))["AccessKey"]
    own = s3_as(seaweedfs_server, AccessKey(made["AccessKeyId"], made["SecretAccessKey"]))
    eventually(lambda: own.put_object(Bucket=bucket, Key=f"{sales}/x", Body=b"x"))

    assert credentials.converge_key(store, config, sales, [], issued).access_key_id == issued

    assert [k.access_key_id for k in store.list_keys(sales)] == [issued]

    def refused() -> None:
        assert denied(lambda: own.get_object(Bucket=bucket, Key=f"{sales}/x")) in ("InvalidAccessKeyId", "AccessDenied")

    eventually(refused)


def test_a_refused_deny_is_retried_without_it_even_when_another_thread_flipped_first(
    seaweedfs_server: S3Server, unique_name: str
) -> None:
    """Worker threads share one IamStore: the thread whose Deny SeaweedFS refuses after another thread already
    learned it must still fall back (it once failed the product with MalformedPolicyDocument)."""
    import threading

    from provisioner.storage.iam import IamStore

    bucket = BucketName(f"{unique_name}-bkt")
    first, second = Namespace(f"{unique_name}-one"), Namespace(f"{unique_name}-two")
    store = IamStore(
        endpoint=seaweedfs_server.endpoint,
        access_key=seaweedfs_server.access_key,
        secret_key=seaweedfs_server.secret_key,
    )
    store.ensure_bucket(bucket)
    real_put = store._iam.put_user_policy
    flipped = threading.Event()

    def put(**kwargs):  # the second thread sends its Deny only once the first one has given up on Deny
        if kwargs["UserName"] == second.user_name and '"Deny"' in kwargs["PolicyDocument"]:
            assert flipped.wait(10)
        try:
            return real_put(**kwargs)
        finally:
            if kwargs["UserName"] == first.user_name and not store._deny_iam:
                flipped.set()

    store._iam.put_user_policy = put
    results: dict[str, object] = {}

    def create(ns: Namespace) -> None:
        try:
            results[ns] = store.create_user(bucket, ns)
        except Exception as exc:  # reported below
            results[ns] = exc

    threads = [threading.Thread(target=create, args=(ns,)) for ns in (second, first)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == {first: True, second: True}
    assert all(s["Effect"] == "Allow" for ns in (first, second) for s in store.user_policy(ns)["Statement"])
