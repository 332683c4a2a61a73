"""Every backend takes the names derived from any portal namespace, lists product users, deletes users by name
and moves a prefix (issue 12, items 1, 8 and 9)."""

from __future__ import annotations

import pytest

from provisioner.names import BucketName, Namespace, archive_prefix
from tests.fixtures.s3 import S3Server
from tests.storage.conftest import Backend
from tests.storage.scoping import denied, eventually, provision, s3_as


def _lossy(backend: Backend) -> Namespace:
    # Every character the portal allows beyond a DNS label, in a namespace of 64 characters.
    return Namespace(f"{backend.namespace}.x@y=z,w+v_-" + "q" * (64 - len(backend.namespace) - 12))


def test_a_namespace_with_every_portal_character_gets_a_working_user_and_key(backend: Backend) -> None:
    store, bucket, ns = backend.store, backend.bucket, _lossy(backend)
    assert len(ns) == 64 and not ns.plain
    store.ensure_bucket(bucket)
    assert store.ensure_prefix(bucket, ns) is True
    assert store.object_exists(bucket, ns.prefix)
    assert store.create_user(bucket, ns) is True
    assert store.user_exists(ns)
    key = store.create_key(ns)
    assert [k.access_key_id for k in store.list_keys(ns)] == [key.access_key_id]
    assert ns.user_name in store.list_users()
    assert store.delete_user(ns) is True and not store.user_exists(ns)


def test_list_users_names_product_users_and_delete_user_named_removes_one(backend: Backend) -> None:
    store, bucket, ns, other = backend.store, backend.bucket, backend.namespace, backend.other
    store.ensure_bucket(bucket)
    store.create_user(bucket, ns)
    store.create_user(bucket, other)
    store.create_key(ns)
    users = store.list_users()
    assert {ns.user_name, other.user_name} <= set(users)
    assert all(u.startswith("dp-") for u in users)

    assert store.delete_user_named(ns.user_name) is True
    assert not store.user_exists(ns) and store.list_keys(ns) == []
    assert ns.user_name not in store.list_users()
    assert store.user_exists(other), "only the named user goes"
    assert store.delete_user_named(ns.user_name) is False  # idempotent
    store.delete_user(other)


def test_move_prefix_moves_every_object_out_of_the_prefix(backend: Backend) -> None:
    store, bucket, ns = backend.store, backend.bucket, backend.namespace
    store.ensure_bucket(bucket)
    store.ensure_prefix(bucket, ns)
    store.put_object(bucket, f"{ns.prefix}raw/a.csv", b"a")
    store.put_object(bucket, f"{ns.prefix}published/p/b.parquet", b"bb")
    target = archive_prefix(ns, "product-1")

    assert store.move_prefix(bucket, ns, target) == 3
    # Listed, not HEAD-ed: SeaweedFS answers HEAD "<prefix>/" for an implicit folder even when it is empty.
    listed = store._objects_under  # type: ignore[attr-defined]
    assert listed(bucket, ns.prefix) == []
    assert {key for key, _ in listed(bucket, target)} == {
        target,
        f"{target}raw/a.csv",
        f"{target}published/p/b.parquet",
    }
    assert store.move_prefix(bucket, ns, target) == 0  # nothing left: a repeat is harmless


@pytest.mark.seaweedfs
@pytest.mark.slow
def test_on_seaweedfs_a_lossy_namespace_key_is_scoped_and_the_archive_is_out_of_reach(
    seaweedfs_server: S3Server, unique_name: str
) -> None:
    # SeaweedFS enforces list conditions, which moto ignores: the archive is neither readable nor listable.
    bucket = BucketName(f"{unique_name}-bkt")
    old, new = Namespace(f"{unique_name}.team@x"), Namespace(f"{unique_name}.team@x")
    store = provision(seaweedfs_server, bucket, old)
    store.put_object(bucket, f"{old.prefix}raw/secret.csv", b"old")
    store.delete_user(old)
    archive = archive_prefix(old, "old-product")
    assert store.move_prefix(bucket, old, archive) == 2

    store.ensure_prefix(bucket, new)
    store.ensure_user(bucket, new)
    s3 = s3_as(seaweedfs_server, store.create_key(new))
    eventually(lambda: s3.put_object(Bucket=bucket, Key=f"{new.prefix}raw/fresh.csv", Body=b"new"))
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=new.prefix)["Contents"]) == [
        new.prefix,
        f"{new.prefix}raw/fresh.csv",
    ]
    assert denied(lambda: s3.get_object(Bucket=bucket, Key=f"{archive}raw/secret.csv")) == "AccessDenied"
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="_archive/")) == "AccessDenied"
    assert denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix=archive)) == "AccessDenied"
