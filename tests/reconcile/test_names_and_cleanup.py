"""Issue 12 items 1, 8 and 9 on a whole site (PostgreSQL, moto's S3 + IAM, real cookiecutter, portal stand-in):
every namespace the portal accepts is provisioned, a reused namespace starts empty, clean-up goes by name."""

from __future__ import annotations

import json
from pathlib import Path

import botocore.exceptions
import pytest

from provisioner import scaffold
from provisioner.errors import InvalidName, ProvisionerError
from provisioner.events import ReconcileAccess
from provisioner.names import Namespace, archive_prefix
from provisioner.portal import PortalClient
from provisioner.reconcile.products import NamespaceConflict
from provisioner.storage.policy import ReadGrant
from tests.reconcile.conftest import Site

SAMPLES = json.loads((Path(__file__).parents[1] / "data" / "contract-samples" / "portal-namespaces.json").read_text())


def _users(site: Site) -> set[str]:
    iam = site.s3.client("iam")
    return {u["UserName"] for page in iam.get_paginator("list_users").paginate() for u in page["Users"]}


def _denied(call) -> bool:  # type: ignore[no-untyped-def]
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return exc.response["Error"]["Code"] == "AccessDenied"
    return False


def test_all_40_sample_products_and_38_output_ports_provision(site: Site, unique_name: str) -> None:
    products = [p for p in SAMPLES["data_products"] if p["type"] == "data_products"]
    assert len(products) == 40
    ids = {}
    for item in products:
        # The bucket is this test's own; namespaces are the portal's, exactly.
        product = site.portal_state.create_product(item["name"], item["namespace"], notify=False)
        site.reconcilers.reconcile_product(product.id)
        ids[item["namespace"]] = product.id
    for ns, pid in ids.items():
        record = site.state.product(pid)
        assert record is not None and record.state == "provisioned", ns
        assert site.portal_state.product(pid).status == "active"
        assert site.env(ns)["S3_PREFIX"] == f"{ns}/"
        assert (site.project(ns) / "README.md").is_file()
    # A sample product's own key writes its prefix and is denied its neighbour's.
    s3, bucket = site.s3_as("customer_segmentation"), site.config.bucket
    s3.put_object(Bucket=bucket, Key="customer_segmentation/raw/x.csv", Body=b"1")
    assert _denied(lambda: s3.put_object(Bucket=bucket, Key="customer_churn_prediction/raw/x.csv", Body=b"1"))

    # Every sample output port: the portal serves it, it parses clean, and a grant on it opens exactly its folder.
    producer, consumer = "customer_segmentation", "customer_churn_prediction"
    ports = [
        site.portal_state.create_output_port(ids[producer], item["name"], namespace=item["namespace"], notify=False)
        for item in SAMPLES["output_ports"]
    ]
    assert len(ports) == 38
    for port in ports:
        site.portal_state.request_access(ids[consumer], port.id, notify=False)
    with PortalClient(site.portal.url) as client:
        served = client.input_ports(ids[consumer])
    assert sorted(p.output_port.namespace for p in served) == sorted(p["namespace"] for p in SAMPLES["output_ports"])
    assert all(p.problem is None for p in served)
    reader = site.s3_as(consumer)
    for port in served:
        key = f"{producer}/published/{Namespace(port.output_port.namespace).folder}/part.parquet"
        site.s3.client("s3").put_object(Bucket=bucket, Key=key, Body=b"p")
        grant = ReadGrant(Namespace(producer), Namespace(port.output_port.namespace))
        site.store.ensure_user(bucket, Namespace(consumer), [grant])
        assert reader.get_object(Bucket=bucket, Key=key)["Body"].read() == b"p", port.output_port.namespace


@pytest.mark.parametrize("raw", ["com.example@sales", ".hidden", "a+b=c,d"])
def test_namespaces_beyond_dns_labels_provision_under_their_derived_names(site: Site, raw: str) -> None:
    ns = Namespace(raw)
    pid = site.provisioned(raw)
    assert site.state.product(pid).state == "provisioned"  # type: ignore[union-attr]
    env = site.env(raw)
    assert env["S3_PREFIX"] == ns.prefix
    assert ns.user_name in _users(site)
    assert [p.name for p in site.config.products_dir.iterdir()] == [ns.folder]
    site.s3_as(raw).put_object(Bucket=site.config.bucket, Key=f"{ns.prefix}raw/x.csv", Body=b"1")


def test_a_nul_in_a_product_name_creates_nothing(site: Site, unique_name: str) -> None:
    users = _users(site)
    product = site.portal_state.create_product("Sales\x00", f"{unique_name}-nul", notify=False)
    with pytest.raises(InvalidName, match="control character"):
        site.reconcilers.reconcile_product(product.id)
    assert _users(site) == users  # no user, so no key
    assert not site.config.products_dir.exists() or list(site.config.products_dir.iterdir()) == []  # no .env
    assert product.finalizers == [] and product.status == "pending"
    assert site.state.last_runs(product.id, limit=1)[0]["status"] == "failure"


def test_a_reused_namespace_starts_empty_and_cannot_reach_the_archive(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-reuse"
    bucket = site.config.bucket
    old = site.provisioned(ns)
    site.s3_as(ns).put_object(Bucket=bucket, Key=f"{ns}/raw/secret.csv", Body=b"old team's data")
    site.portal_state.delete_product(old, notify=False)
    site.reconcilers.reconcile_product(old)
    archive = archive_prefix(Namespace(ns), old)
    run = site.state.last_runs(old, limit=1)[0]
    assert "data_archived" in run["steps"] and run["detail"]["data_archive"] == f"s3://{bucket}/{archive}"

    admin = site.s3.client("s3")
    assert admin.get_object(Bucket=bucket, Key=f"{archive}raw/secret.csv")["Body"].read() == b"old team's data"
    new = site.provisioned(ns)
    assert new != old
    listed = admin.list_objects_v2(Bucket=bucket, Prefix=f"{ns}/").get("Contents", [])
    assert "raw/secret.csv" not in {o["Key"][len(ns) + 1 :] for o in listed}  # only the new marker and seed
    s3 = site.s3_as(ns)
    with pytest.raises(botocore.exceptions.ClientError) as gone:
        s3.get_object(Bucket=bucket, Key=f"{ns}/raw/secret.csv")
    assert gone.value.response["Error"]["Code"] == "NoSuchKey"
    assert _denied(lambda: s3.get_object(Bucket=bucket, Key=f"{archive}raw/secret.csv"))
    # (Listing is refused too where policy conditions are enforced: tests/storage/test_names_and_cleanup.py.)


def test_deleting_after_a_crashed_first_provisioning_removes_everything_named_for_it(
    site: Site, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = f"{unique_name}-crashed"
    product = site.portal_state.create_product("Crashed", ns, notify=False)
    real_write_env = scaffold.write_env

    def dies(path, values):  # type: ignore[no-untyped-def]
        real_write_env(path, values)
        raise KeyboardInterrupt("worker killed after the key and .env, before the record")

    monkeypatch.setattr(scaffold, "write_env", dies)
    with pytest.raises(KeyboardInterrupt):
        site.reconcilers.reconcile_product(product.id)
    monkeypatch.setattr(scaffold, "write_env", real_write_env)
    assert site.state.product(product.id) is None
    assert Namespace(ns).user_name in _users(site) and len(site.user_keys(ns)) == 1
    assert site.portal_state.product(product.id).finalizers == ["provisioner"]

    site.portal_state.delete_product(product.id, notify=False)
    site.reconcilers.reconcile_product(product.id)

    assert Namespace(ns).user_name not in _users(site)
    assert not site.project(ns).exists()
    assert site.portal_state.product(product.id) is None  # finalizer released, deletion finished
    listed = site.s3.client("s3").list_objects_v2(Bucket=site.config.bucket, Prefix=f"{ns}/")
    assert listed.get("KeyCount", 0) == 0


def test_clean_up_by_name_never_touches_a_namespace_another_product_holds(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-held"
    owner = site.provisioned(ns)
    twin = site.portal_state.create_product("Twin", ns, finalizers=["provisioner"], notify=False)
    site.portal_state.delete_product(twin.id, notify=False)
    site.reconcilers.reconcile_product(twin.id)
    assert site.portal_state.product(twin.id) is None
    assert Namespace(ns).user_name in _users(site) and site.user_keys(ns)
    assert site.state.product(owner).state == "provisioned"  # type: ignore[union-attr]
    site.s3_as(ns).put_object(Bucket=site.config.bucket, Key=f"{ns}/still-mine", Body=b"1")


def test_a_forged_namespace_cannot_take_another_products_truncated_user(site: Site) -> None:
    long = Namespace(("z" * 52 + site.config.bucket)[-63:])
    site.provisioned(long)
    forged = site.portal_state.create_product("Forged", long.user_name[3:], notify=False)
    with pytest.raises(NamespaceConflict, match="store user"):
        site.reconcilers.reconcile_product(forged.id)
    assert site.user_keys(long)


def test_keys_the_provisioner_did_not_issue_are_deleted_at_the_next_reconcile(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-selfkey"
    pid = site.provisioned(ns)
    ours = site.env(ns)["S3_ACCESS_KEY"]
    iam = site.s3.client("iam")
    extra = iam.create_access_key(UserName=Namespace(ns).user_name)["AccessKey"]  # e.g. made with the product's key
    assert set(site.user_keys(ns)) == {ours, extra["AccessKeyId"]}
    site.reconcilers.reconcile_product(pid)
    assert site.user_keys(ns) == [ours]
    assert "stale_keys_deleted" in site.state.last_runs(pid, limit=1)[0]["steps"]


def test_an_output_port_namespace_with_a_nul_never_blocks_the_other_grants(site: Site, unique_name: str) -> None:
    producer, consumer = f"{unique_name}-prod", f"{unique_name}-cons"
    pid, cid = site.provisioned(producer), site.provisioned(consumer)
    state, bucket = site.portal_state, site.config.bucket
    good = state.create_output_port(pid, "Orders", namespace="orders", access_type="unrestricted", notify=False)
    bad = state.create_output_port(
        pid, "Bad", namespace="or\x00ders", access_type="unrestricted", notify=False, check_namespace=False
    )
    for port in (good, bad):
        state.request_access(cid, port.id, notify=False)  # unrestricted: approved by the portal itself
    site.s3.client("s3").put_object(Bucket=bucket, Key=f"{producer}/published/orders/o.parquet", Body=b"PAR1")
    with pytest.raises(ProvisionerError):  # the bad port is reported ...
        site.reconcilers.reconcile_access(cid)
    reader = site.s3_as(consumer)  # ... and the good one granted all the same
    assert reader.get_object(Bucket=bucket, Key=f"{producer}/published/orders/o.parquet")["Body"].read() == b"PAR1"
    assert ReconcileAccess(cid) not in site.reconcilers.resync()  # a port that can never be granted is not drift
    keys = site.user_keys(consumer)
    state.revoke(good.id, cid, notify=False)
    with pytest.raises(ProvisionerError):
        site.reconcilers.reconcile_access(cid)
    assert _denied(lambda: site.s3_as(consumer).get_object(Bucket=bucket, Key=f"{producer}/published/orders/o.parquet"))
    assert len(site.user_keys(consumer)) == 1 and site.user_keys(consumer) != keys
