"""Store backends for the storage tests: IamStore on moto and SeaweedFS, MinioStore on the admin API stand-in."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from provisioner.names import BucketName, Namespace
from provisioner.storage import StoreAdmin, build_store
from tests.fixtures.s3 import S3Server
from tests.storage.minio_admin_server import MinioAdminServer


@dataclass
class Backend:
    """A store under test, a way to count the writes it sent, and fresh names for this test."""

    name: str
    store: StoreAdmin
    writes: Callable[[], int]
    bucket: BucketName
    namespace: Namespace
    other: Namespace


@pytest.fixture(scope="session")
def minio_admin_server() -> Iterator[MinioAdminServer]:
    """The MinIO admin API + S3 stand-in over HTTP (one per session; tests use unique names)."""
    server = MinioAdminServer().start()
    try:
        yield server
    finally:
        server.stop()


def count_boto_writes(store: object) -> Callable[[], int]:
    """Count state-changing AWS calls (anything but Get/List/Head) the store's boto3 clients make."""
    counter = {"n": 0}

    def before_call(model, **_: object) -> None:  # type: ignore[no-untyped-def]
        if not model.name.startswith(("Get", "List", "Head")):
            counter["n"] += 1

    for client in (store._s3, store._iam):  # type: ignore[attr-defined]
        client.meta.events.register("before-call", before_call)
    return lambda: counter["n"]


@pytest.fixture(
    params=["iam-moto", "minio-admin", pytest.param("iam-seaweedfs", marks=[pytest.mark.seaweedfs, pytest.mark.slow])]
)
def backend(request: pytest.FixtureRequest, unique_name: str) -> Backend:
    """Each behavioural test runs once per backend."""
    bucket, ns, other = BucketName(f"{unique_name}-bkt"), Namespace(f"{unique_name}-a"), Namespace(f"{unique_name}-b")
    if request.param in ("iam-moto", "iam-seaweedfs"):
        fixture = "moto_server" if request.param == "iam-moto" else "seaweedfs_server"
        moto: S3Server = request.getfixturevalue(fixture)
        store = build_store(
            "aws-iam",
            endpoint=moto.endpoint,
            access_key=moto.access_key,
            secret_key=moto.secret_key,
            region="us-east-1",
        )
        return Backend(request.param, store, count_boto_writes(store), bucket, ns, other)
    server: MinioAdminServer = request.getfixturevalue("minio_admin_server")
    store = build_store(
        "minio",
        endpoint=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
        region="us-east-1",
    )
    return Backend("minio-admin", store, server.writes, bucket, ns, other)
