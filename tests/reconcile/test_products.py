"""Issue 3's proof for one product: provision, idempotence, scoping, crash recovery, deletion, bad input."""

from __future__ import annotations

import os
import stat

import botocore.exceptions
import pytest

from provisioner import scaffold
from provisioner.errors import InvalidName, PortalUnavailable
from provisioner.names import Namespace, archive_prefix
from provisioner.reconcile.products import NamespaceConflict
from tests.reconcile.conftest import Site


def _snapshot(root) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_new_product_gets_prefix_user_key_project_env_finalizer_and_status(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-sales"
    pid = site.provisioned(ns)

    s3 = site.s3.client("s3")
    s3.head_object(Bucket=site.config.bucket, Key=f"{ns}/")
    assert site.user_keys(ns) and len(site.user_keys(ns)) == 1
    project = site.project(ns)
    for name in ("README.md", ".gitignore", "models", "tests"):
        assert (project / name).exists(), name
    env_file = project / ".env"
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    env = site.env(ns)
    assert env["S3_BUCKET"] == site.config.bucket
    assert env["S3_PREFIX"] == f"{ns}/"
    assert env["S3_ACCESS_KEY"] == site.user_keys(ns)[0]
    assert env["S3_SECRET_KEY"]
    product = site.portal_state.product(pid)
    assert product is not None and product.status == "active"
    assert product.finalizers == ["provisioner"]
    record = site.state.product(pid)
    assert record is not None and record.access_key_id == env["S3_ACCESS_KEY"]
    # The secret is in the .env only: not in our database.
    with site.state.pool.connection() as conn:
        dump = str(conn.execute("SELECT * FROM provisioner_products").fetchall())
        dump += str(conn.execute("SELECT * FROM provisioner_runs").fetchall())
    assert env["S3_SECRET_KEY"] not in dump
    runs = site.state.last_runs(pid)
    assert runs[0]["status"] == "success"
    assert {"finalizer", "prefix", "user", "project", "key", "status"} <= set(runs[0]["steps"])


def test_key_reads_and_writes_own_prefix_and_is_denied_elsewhere(site: Site, unique_name: str) -> None:
    own, other = f"{unique_name}-own", f"{unique_name}-other"
    site.provisioned(own)
    site.provisioned(other)
    s3 = site.s3_as(own)
    bucket = site.config.bucket
    s3.put_object(Bucket=bucket, Key=f"{own}/raw/x.csv", Body=b"a,b\n1,2\n")
    assert s3.get_object(Bucket=bucket, Key=f"{own}/raw/x.csv")["Body"].read() == b"a,b\n1,2\n"
    site.s3.client("s3").put_object(Bucket=bucket, Key=f"{other}/secret.csv", Body=b"no")
    for call in (
        lambda: s3.get_object(Bucket=bucket, Key=f"{other}/secret.csv"),
        lambda: s3.put_object(Bucket=bucket, Key=f"{other}/x.csv", Body=b"x"),
        lambda: s3.delete_object(Bucket=bucket, Key=f"{other}/secret.csv"),
    ):
        with pytest.raises(botocore.exceptions.ClientError) as err:
            call()
        assert err.value.response["Error"]["Code"] == "AccessDenied"


def test_repeats_and_resyncs_change_nothing(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-repeat"
    pid = site.provisioned(ns)
    keys = site.user_keys(ns)
    before = _snapshot(site.project(ns))
    site.portal_state.reset_counters()
    for _ in range(3):
        site.reconcilers.reconcile_product(pid)
    for _ in range(3):
        assert site.reconcilers.resync() == []
    assert site.user_keys(ns) == keys
    assert _snapshot(site.project(ns)) == before
    assert sum(site.portal_state.writes.values()) == 0
    last = site.state.last_runs(pid, limit=3)
    assert all(r["steps"] == [] and r["status"] == "success" for r in last)


def test_crash_after_key_creation_converges_to_one_key(
    site: Site, unique_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ns = f"{unique_name}-crash"
    product = site.portal_state.create_product("Crash", ns, notify=False)
    real_write_env = scaffold.write_env
    calls = {"n": 0}

    def dies_once(path, values):
        calls["n"] += 1
        if "S3_SECRET_KEY" in values and calls["n"] == 1:
            raise KeyboardInterrupt("worker killed")  # the process dies after the key exists, before .env
        return real_write_env(path, values)

    monkeypatch.setattr(scaffold, "write_env", dies_once)
    with pytest.raises(KeyboardInterrupt):
        site.reconcilers.reconcile_product(product.id)
    assert len(site.user_keys(ns)) == 1  # an orphan key whose secret nobody has
    orphan = site.user_keys(ns)[0]

    site.reconcilers.reconcile_product(product.id)
    keys = site.user_keys(ns)
    assert len(keys) == 1 and keys != [orphan]
    assert site.env(ns)["S3_ACCESS_KEY"] == keys[0]
    site.s3_as(ns).put_object(Bucket=site.config.bucket, Key=f"{ns}/ok", Body=b"1")


def test_user_edits_survive_a_rescaffold(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-edit"
    pid = site.provisioned(ns)
    models = sorted((site.project(ns) / "models").rglob("*.sql"))
    assert models, "the template has models"
    models[0].write_text("-- mine\nSELECT 1 AS x\n")
    (site.project(ns) / "README.md").unlink()
    with open(site.project(ns) / ".env", "a") as fh:
        fh.write("MY_SETTING=kept\n")
    site.reconcilers.reconcile_product(pid)
    assert models[0].read_text() == "-- mine\nSELECT 1 AS x\n"
    assert (site.project(ns) / "README.md").exists()
    assert site.env(ns)["MY_SETTING"] == "kept"


def test_deletion_removes_keys_and_user_archives_project_and_releases_finalizer(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-gone"
    pid = site.provisioned(ns)
    site.s3_as(ns).put_object(Bucket=site.config.bucket, Key=f"{ns}/keep.csv", Body=b"data")
    assert site.portal_state.delete_product(pid, notify=False) == 202
    assert site.portal_state.product(pid).status == "deleting"

    site.reconcilers.reconcile_product(pid)

    iam = site.s3.client("iam")
    with pytest.raises(botocore.exceptions.ClientError):
        iam.get_user(UserName=f"dp-{ns}")
    assert not site.project(ns).exists()
    archived = list((site.config.products_dir / ".archive").iterdir())
    assert len(archived) == 1 and archived[0].name.startswith(ns)
    assert site.portal_state.product(pid) is None  # the last finalizer went, so the portal finished the deletion
    # Data is kept by default, out of reach of any product: under the archive prefix, not the namespace's.
    kept = f"{archive_prefix(Namespace(ns), pid)}keep.csv"
    assert site.s3.client("s3").get_object(Bucket=site.config.bucket, Key=kept)["Body"].read() == b"data"
    record = site.state.product(pid)
    assert record is not None and record.state == "deleted"
    (deletion,) = site.state.last_runs(pid, limit=1)
    assert (deletion["kind"], deletion["status"]) == ("delete", "success")  # provisioner runs shows a deletion
    # Running it again (a replayed delete event: the product is now 404) is a no-op.
    site.reconcilers.reconcile_product(pid)
    assert site.state.last_runs(pid, limit=1)[0]["status"] == "skipped"


@pytest.mark.parametrize("bad", ["../x", "A B", "x" * 65, "*", "a\x00b"])
def test_bad_namespace_fails_cleanly_and_touches_nothing(site: Site, bad: str) -> None:
    iam = site.s3.client("iam")
    users_before = iam.list_users()["Users"]
    # A portal that lets the namespace through (the stand-in, like the portal, refuses it by default).
    product = site.portal_state.create_product("Bad", bad, notify=False, check_namespace=False)
    with pytest.raises(InvalidName, match="not one the portal accepts"):
        site.reconcilers.reconcile_product(product.id)
    run = site.state.last_runs(product.id, limit=1)[0]
    assert run["status"] == "failure" and "not one the portal accepts" in run["error"]
    assert product.finalizers == [] and product.status == "pending"
    products_dir = site.config.products_dir
    assert not products_dir.exists() or os.listdir(products_dir) == []
    assert iam.list_users()["Users"] == users_before


def test_namespace_taken_by_another_product_is_refused(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-taken"
    site.provisioned(ns)
    twin = site.portal_state.create_product("Twin", ns, notify=False)
    with pytest.raises(NamespaceConflict, match="already provisioned"):
        site.reconcilers.reconcile_product(twin.id)


def test_portal_500_then_200_converges_after_retry(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-flaky"
    product = site.portal_state.create_product("Flaky", ns, notify=False)
    site.portal_state.fail_next(2, 500)
    site.reconcilers.reconcile_product(product.id)  # the client's bounded retries absorb two 500s
    assert site.portal_state.product(product.id).status == "active"
    site.portal_state.fail_next(20, 500)
    with pytest.raises(PortalUnavailable):
        site.reconcilers.reconcile_product(product.id)
    site.portal_state.clear_faults()  # the portal recovers
    site.reconcilers.reconcile_product(product.id)
    assert site.state.last_runs(product.id, limit=1)[0]["status"] == "success"


def test_lost_env_is_repaired_by_rotate(site: Site, unique_name: str) -> None:
    ns = f"{unique_name}-lost"
    pid = site.provisioned(ns)
    old = site.user_keys(ns)
    (site.project(ns) / ".env").unlink()
    site.reconcilers.reconcile_product(pid)
    assert site.user_keys(ns) == old, "reconcile does not mint keys while the user has ours"
    assert "S3_SECRET_KEY" not in site.env(ns)
    assert "provisioner rotate" in site.state.last_runs(pid, limit=1)[0]["detail"]["warning"]
    new = site.reconcilers.rotate(ns)
    assert site.user_keys(ns) == [new] and new not in old
    site.s3_as(ns).put_object(Bucket=site.config.bucket, Key=f"{ns}/after-rotate", Body=b"1")


def test_a_namespace_change_is_refused_and_changes_nothing(site: Site, unique_name: str) -> None:
    from provisioner.reconcile.products import NamespaceChanged

    ns = f"{unique_name}-moved"
    pid = site.provisioned(ns)
    keys = site.user_keys(ns)
    site.portal_state.product(pid).namespace = f"{ns}-new"
    with pytest.raises(NamespaceChanged, match="changed namespace"):
        site.reconcilers.reconcile_product(pid)
    assert site.user_keys(ns) == keys
    assert not (site.config.products_dir / f"{ns}-new").exists()
