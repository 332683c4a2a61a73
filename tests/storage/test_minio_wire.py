"""What MinioStore puts on the wire, checked by the MinIO admin API stand-in.

Secrets travel only inside MinIO's encrypted bodies (which the stand-in opens with the minio package's own
decrypt), every request is SigV4-signed by the admin key, and keys belong to the product user, not the admin.
"""

from __future__ import annotations

import json

import pytest

from provisioner.errors import StorageError, StorageUnavailable
from provisioner.names import BucketName, Namespace
from provisioner.storage import build_store
from provisioner.storage.minio import policy_name
from provisioner.storage.policy import ReadGrant, policies_equal, product_policy
from tests.fixtures.s3 import free_port
from tests.storage.minio_admin_server import MinioAdminServer


def _store(server: MinioAdminServer, secret: str | None = None):  # type: ignore[no-untyped-def]
    return build_store(
        "minio",
        endpoint=server.endpoint,
        access_key=server.access_key,
        secret_key=secret or server.secret_key,
        region="us-east-1",
        max_attempts=1,
    )


def test_user_secret_travels_encrypted_and_the_policy_is_attached(
    minio_admin_server: MinioAdminServer, unique_name: str
) -> None:
    bucket, ns = BucketName(f"{unique_name}-bkt"), Namespace(f"{unique_name}-a")
    start = len(minio_admin_server.state.requests)
    _store(minio_admin_server).ensure_user(bucket, ns, [ReadGrant(Namespace(f"{unique_name}-b"), Namespace("port"))])
    sent = minio_admin_server.state.requests[start:]
    (add_user,) = [r for r in sent if r.path.endswith("/add-user")]
    assert add_user.query == {"accessKey": ns.user_name}
    plain = json.loads(add_user.plain_body or b"{}")
    assert plain["status"] == "enabled" and len(plain["secretKey"]) >= 8
    assert plain["secretKey"].encode() not in add_user.raw_body  # only ciphertext on the wire
    assert any(r.path.endswith("/idp/builtin/policy/attach") for r in sent)
    user = minio_admin_server.state.users[ns.user_name]
    assert user["policies"] == {policy_name(ns)}
    stored = minio_admin_server.state.policies[policy_name(ns)]
    assert policies_equal(
        stored, product_policy(bucket, ns, [ReadGrant(Namespace(f"{unique_name}-b"), Namespace("port"))])
    )


def test_keys_are_service_accounts_of_the_product_user(minio_admin_server: MinioAdminServer, unique_name: str) -> None:
    ns = Namespace(f"{unique_name}-a")
    store = _store(minio_admin_server)
    store.ensure_user(BucketName(f"{unique_name}-bkt"), ns)
    key = store.create_key(ns)
    account = minio_admin_server.state.service_accounts[key.access_key_id]
    assert account["parent"] == ns.user_name  # not the admin: the key carries only the product's policy
    assert account["secret"] == key.secret_key
    (add,) = [r for r in minio_admin_server.state.requests if r.path.endswith("/add-service-account")][-1:]
    assert key.secret_key.encode() not in add.raw_body
    store.delete_key(ns, key.access_key_id)
    updates = [r for r in minio_admin_server.state.requests if r.path.endswith("/update-service-account")]
    assert json.loads(updates[-1].plain_body or b"{}") == {"newStatus": "off"}  # deactivated before deletion
    assert key.access_key_id not in minio_admin_server.state.service_accounts


def test_a_wrong_admin_secret_is_refused_with_an_actionable_error(minio_admin_server: MinioAdminServer) -> None:
    store = _store(minio_admin_server, secret="not-the-admin-secret")
    with pytest.raises(StorageError, match="refused") as info:
        store.user_exists(Namespace("anything"))
    assert "not-the-admin-secret" not in str(info.value)


def test_an_unreachable_admin_api_is_a_temporary_error() -> None:
    store = build_store(
        "minio",
        endpoint=f"http://127.0.0.1:{free_port()}",
        access_key="a",
        secret_key="b" * 12,
        region="us-east-1",
        max_attempts=1,
    )
    with pytest.raises(StorageUnavailable, match="unreachable"):
        store.user_exists(Namespace("anything"))


def test_unknown_store_kind_names_the_choices() -> None:
    with pytest.raises(StorageError, match="aws-iam, minio"):
        build_store("ceph", endpoint="", access_key="a", secret_key="b", region="us-east-1")
