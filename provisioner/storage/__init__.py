"""Object-store administration: one StoreAdmin interface, one backend per admin API.

``aws-iam`` speaks the AWS IAM API (AWS, SeaweedFS, moto); ``minio`` speaks the MinIO admin API
(MinIO, RustFS). Both scope a product user to its own prefix with the document from ``policy.py``.
"""

from __future__ import annotations

from provisioner.errors import StorageError
from provisioner.storage.base import AccessKey, KeyInfo, StoreAdmin

STORE_KINDS = ("aws-iam", "minio")

__all__ = ["STORE_KINDS", "AccessKey", "KeyInfo", "StoreAdmin", "build_store"]


def build_store(
    kind: str,
    *,
    endpoint: str,
    access_key: str,
    secret_key: str,
    region: str,
    timeout: float = 10.0,
    max_attempts: int = 3,
) -> StoreAdmin:
    """The StoreAdmin for ``kind`` ("aws-iam" or "minio"); an empty endpoint means AWS itself (aws-iam only)."""
    if kind == "aws-iam":
        from provisioner.storage.iam import IamStore

        return IamStore(
            endpoint=endpoint or None,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            timeout=timeout,
            max_attempts=max_attempts,
        )
    if kind == "minio":
        if not endpoint:
            raise StorageError("the minio store kind needs an endpoint such as http://rustfs:9000")
        from provisioner.storage.minio import MinioStore

        return MinioStore(
            endpoint=endpoint,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
            timeout=timeout,
            max_attempts=max_attempts,
        )
    raise StorageError(f"unknown store kind {kind!r}: use one of {', '.join(STORE_KINDS)}")
