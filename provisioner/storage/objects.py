"""Bucket, prefix-marker and object operations over the S3 API, shared by every store backend."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from provisioner.names import BucketName, Namespace
from provisioner.storage.botocall import error_code, is_not_found, storage_errors

_DELETE_BATCH = 1000  # the most keys one DeleteObjects call accepts
_COPY_LIMIT = 5 * 1024**3  # the largest object one CopyObject call copies


class S3Objects:
    """The S3 half of a store backend: buckets, prefix markers and objects, with an admin key."""

    def __init__(self, s3: Any, *, endpoint: str | None, region: str) -> None:
        self._s3 = s3
        self._endpoint = endpoint
        self._region = region
        # Buckets seen to exist by this client: every reconcile ensures the bucket, and a bucket is not
        # something that disappears under a running provisioner, so one check per process is enough.
        self._known_buckets: set[str] = set()

    def ensure_bucket(self, bucket: BucketName) -> bool:
        """Create ``bucket`` if missing; True when it was created."""
        if bucket in self._known_buckets:
            return False
        created = self._ensure_bucket(bucket)
        self._known_buckets.add(bucket)
        return created

    def _ensure_bucket(self, bucket: BucketName) -> bool:
        with storage_errors(f"checking bucket {bucket}", self._endpoint):
            try:
                self._s3.head_bucket(Bucket=bucket)
                return False
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
            kwargs: dict[str, Any] = {"Bucket": bucket}
            if self._region and self._region != "us-east-1":
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
            try:
                self._s3.create_bucket(**kwargs)
            except ClientError as exc:
                # Another worker created it between our check and our create: same end state.
                if error_code(exc) in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    return False
                raise
            return True

    def ensure_prefix(self, bucket: BucketName, namespace: Namespace) -> bool:
        """Create the marker object ``<namespace>/`` if missing; True when created."""
        # Listed rather than HEAD-ed: filer-backed stores (SeaweedFS) answer HEAD "<ns>/" with 200 for an
        # implicit directory even when no marker object is left. The marker sorts first under its prefix.
        with storage_errors(f"checking prefix s3://{bucket}/{namespace.prefix}", self._endpoint):
            page = self._s3.list_objects_v2(Bucket=bucket, Prefix=namespace.prefix, MaxKeys=1)
        first = [obj["Key"] for obj in page.get("Contents", [])[:1]]
        if first == [namespace.prefix]:
            return False
        self.put_object(bucket, namespace.prefix, b"")
        return True

    def object_exists(self, bucket: BucketName, key: str) -> bool:
        """True when ``key`` exists in ``bucket``."""
        with storage_errors(f"checking object s3://{bucket}/{key}", self._endpoint):
            try:
                self._s3.head_object(Bucket=bucket, Key=key)
                return True
            except ClientError as exc:
                if is_not_found(exc):
                    return False
                raise

    def put_object(self, bucket: BucketName, key: str, body: bytes) -> None:
        """Write one object."""
        with storage_errors(f"writing object s3://{bucket}/{key}", self._endpoint):
            self._s3.put_object(Bucket=bucket, Key=key, Body=body)

    def delete_prefix(self, bucket: BucketName, namespace: Namespace) -> int:
        """Delete every object under ``<namespace>/``; return how many were deleted."""
        with storage_errors(f"deleting s3://{bucket}/{namespace.prefix}", self._endpoint):
            objects = self._objects_under(bucket, namespace.prefix)
            self._delete_keys(bucket, [key for key, _ in objects])
        return len(objects)

    def move_prefix(self, bucket: BucketName, namespace: Namespace, target: str) -> int:
        """Move every object under ``<namespace>/`` to ``<target><rest of its key>``; return how many moved.

        Copy every object first, then delete the originals: a crash in between leaves the originals in place and
        copies that the next call writes again, never a lost object. One copy request per object (a multipart
        copy from 5 GiB on), so moving a large prefix takes time in proportion to its objects and bytes.
        """
        source = namespace.prefix
        if not target.endswith("/") or target.startswith(source):
            raise ValueError(f"cannot move {source!r} to {target!r}: the target must be a folder outside it")
        with storage_errors(f"moving s3://{bucket}/{source} to s3://{bucket}/{target}", self._endpoint):
            objects = self._objects_under(bucket, source)
            for key, size in objects:
                copy_source = {"Bucket": bucket, "Key": key}
                destination = target + key[len(source) :]
                if key.endswith("/") and size == 0:
                    # A folder marker: filer-backed stores (SeaweedFS) keep it as a directory, which CopyObject
                    # cannot read. It has no content to copy.
                    self._s3.put_object(Bucket=bucket, Key=destination, Body=b"")
                elif size < _COPY_LIMIT:
                    self._s3.copy_object(Bucket=bucket, Key=destination, CopySource=copy_source)
                else:
                    self._s3.copy(copy_source, bucket, destination)  # multipart copy
            self._delete_keys(bucket, [key for key, _ in objects])
        return len(objects)

    def _objects_under(self, bucket: BucketName, prefix: str) -> list[tuple[str, int]]:
        """(key, size) of every object under ``prefix``; [] when the bucket does not exist."""
        try:
            self._s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if is_not_found(exc):
                return []
            raise
        paginator = self._s3.get_paginator("list_objects_v2")
        return [
            (obj["Key"], int(obj.get("Size", 0)))
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for obj in page.get("Contents", [])
        ]

    def _delete_keys(self, bucket: BucketName, keys: list[str]) -> None:
        for start in range(0, len(keys), _DELETE_BATCH):
            batch = keys[start : start + _DELETE_BATCH]
            result = self._s3.delete_objects(
                Bucket=bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
            )
            errors = result.get("Errors", [])
            if errors:
                first = errors[0]
                raise ClientError(
                    {"Error": {"Code": first.get("Code", "DeleteFailed"), "Message": first.get("Message", "")}},
                    "DeleteObjects",
                )
