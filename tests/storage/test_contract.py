"""One behavioural contract for every StoreAdmin backend: idempotent ensures, keys, grants, deletion.

Runs against IamStore on moto's server and MinioStore on the MinIO admin API stand-in, over HTTP.
"""

from __future__ import annotations

import pytest

from provisioner.names import Namespace
from provisioner.storage.policy import ReadGrant, policies_equal, product_policy
from tests.storage.conftest import Backend

PORT = Namespace("port")  # the output port a read grant opens


def _expected(backend: Backend, grants: list[ReadGrant] | None = None) -> dict:
    """The document the backend should hold: with the explicit Deny of IAM actions where the store takes one
    (moto, like AWS); SeaweedFS refuses Deny statements and MinIO/RustFS IAM action names."""
    return product_policy(backend.bucket, backend.namespace, grants or [], deny_iam=backend.name == "iam-moto")


def test_ensure_bucket_and_prefix_twice_creates_once(backend: Backend) -> None:
    store, bucket, ns = backend.store, backend.bucket, backend.namespace
    assert store.ensure_bucket(bucket) is True
    assert store.ensure_prefix(bucket, ns) is True
    assert store.object_exists(bucket, ns.prefix)
    writes = backend.writes()
    assert store.ensure_bucket(bucket) is False
    assert store.ensure_prefix(bucket, ns) is False
    assert backend.writes() == writes


def test_ensure_user_twice_writes_nothing_the_second_time(backend: Backend) -> None:
    store, bucket, ns = backend.store, backend.bucket, backend.namespace
    assert not store.user_exists(ns)
    assert store.ensure_user(bucket, ns) is True
    assert store.user_exists(ns)
    assert policies_equal(store.user_policy(ns), _expected(backend))  # type: ignore[attr-defined]
    writes = backend.writes()
    assert store.ensure_user(bucket, ns) is False
    assert backend.writes() == writes, "a resync over an unchanged product must not write to the store"


def test_create_user_makes_a_scoped_keyless_user_once(backend: Backend) -> None:
    store, bucket, ns, other = backend.store, backend.bucket, backend.namespace, backend.other
    assert store.create_user(bucket, ns, [ReadGrant(other, PORT)]) is True
    assert policies_equal(store.user_policy(ns), _expected(backend, [ReadGrant(other, PORT)]))  # type: ignore[attr-defined]
    assert store.list_keys(ns) == []
    assert store.create_user(bucket, ns) is False, "an existing user is left to ensure_user"
    assert policies_equal(store.user_policy(ns), _expected(backend, [ReadGrant(other, PORT)]))  # type: ignore[attr-defined]
    assert store.ensure_user(bucket, ns, [ReadGrant(other, PORT)]) is False


def test_read_grants_are_added_and_removed(backend: Backend) -> None:
    store, bucket, ns, other = backend.store, backend.bucket, backend.namespace, backend.other
    store.ensure_user(bucket, ns)
    assert store.ensure_user(bucket, ns, [ReadGrant(other, PORT)]) is True
    assert policies_equal(store.user_policy(ns), _expected(backend, [ReadGrant(other, PORT)]))  # type: ignore[attr-defined]
    assert store.ensure_user(bucket, ns, [ReadGrant(other, PORT)]) is False
    assert store.ensure_user(bucket, ns, []) is True
    assert policies_equal(store.user_policy(ns), _expected(backend))  # type: ignore[attr-defined]


def test_keys_are_created_listed_and_deleted(backend: Backend) -> None:
    store, bucket, ns = backend.store, backend.bucket, backend.namespace
    assert store.list_keys(ns) == []
    store.ensure_user(bucket, ns)
    first = store.create_key(ns)
    second = store.create_key(ns)
    assert first.access_key_id != second.access_key_id and first.secret_key and second.secret_key
    listed = {k.access_key_id: k for k in store.list_keys(ns)}
    assert set(listed) == {first.access_key_id, second.access_key_id}
    assert all(k.active for k in listed.values())
    store.delete_key(ns, first.access_key_id)
    assert [k.access_key_id for k in store.list_keys(ns)] == [second.access_key_id]
    store.delete_key(ns, first.access_key_id)  # already gone: no error
    assert [k.access_key_id for k in store.list_keys(ns)] == [second.access_key_id]


def test_secret_is_not_in_the_key_repr(backend: Backend) -> None:
    backend.store.ensure_user(backend.bucket, backend.namespace)
    key = backend.store.create_key(backend.namespace)
    assert key.secret_key not in repr(key)


def test_delete_key_never_touches_another_products_key(backend: Backend) -> None:
    store, bucket, ns, other = backend.store, backend.bucket, backend.namespace, backend.other
    store.ensure_user(bucket, ns)
    store.ensure_user(bucket, other)
    theirs = store.create_key(other)
    store.delete_key(ns, theirs.access_key_id)
    assert [k.access_key_id for k in store.list_keys(other)] == [theirs.access_key_id]


def test_delete_user_removes_keys_and_is_idempotent(backend: Backend) -> None:
    store, bucket, ns = backend.store, backend.bucket, backend.namespace
    store.ensure_user(bucket, ns, [ReadGrant(backend.other, PORT)])
    store.create_key(ns)
    assert store.delete_user(ns) is True
    assert not store.user_exists(ns)
    assert store.list_keys(ns) == []
    assert store.delete_user(ns) is False
    # and it can come back from nothing
    assert store.ensure_user(bucket, ns) is True


def test_create_key_for_a_missing_user_is_a_clear_error(backend: Backend) -> None:
    from provisioner.errors import StorageError

    with pytest.raises(StorageError, match=backend.namespace.user_name):
        backend.store.create_key(backend.namespace)


def test_delete_prefix_deletes_only_that_prefix(backend: Backend) -> None:
    store, bucket, ns, other = backend.store, backend.bucket, backend.namespace, backend.other
    store.ensure_bucket(bucket)
    store.ensure_prefix(bucket, ns)
    store.put_object(bucket, f"{ns}/raw/a.csv", b"a")
    store.put_object(bucket, f"{ns}/raw/b.csv", b"b")
    store.put_object(bucket, f"{other}/keep.csv", b"k")
    assert store.delete_prefix(bucket, ns) == 3
    assert not store.object_exists(bucket, f"{ns}/raw/a.csv")
    assert store.object_exists(bucket, f"{other}/keep.csv")
    assert store.delete_prefix(bucket, ns) == 0
    assert store.ensure_prefix(bucket, ns) is True  # the marker went too, so it is made again
