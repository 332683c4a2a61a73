"""Shared checks of what a product's key may do, run against any real S3 + IAM server."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from provisioner.names import BucketName, Namespace
from provisioner.storage.base import AccessKey
from provisioner.storage.iam import IamStore
from tests.fixtures.s3 import S3Server


def denied(call: Callable[[], Any]) -> str:
    """Run ``call`` and return the error code it was refused with; fail when it succeeds."""
    with pytest.raises(ClientError) as info:
        call()
    return str(info.value.response["Error"]["Code"])


def eventually(check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Retry ``check`` until it stops raising: some stores apply IAM changes a moment later."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (ClientError, AssertionError, pytest.fail.Exception):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def provision(server: S3Server, bucket: BucketName, *namespaces: Namespace) -> IamStore:
    """An IamStore on ``server`` with the bucket, each namespace's prefix and user in place."""
    store = IamStore(endpoint=server.endpoint, access_key=server.access_key, secret_key=server.secret_key)
    store.ensure_bucket(bucket)
    for ns in namespaces:
        store.ensure_prefix(bucket, ns)
        store.ensure_user(bucket, ns)
    return store


def s3_as(server: S3Server, key: AccessKey) -> Any:
    """A boto3 S3 client authenticated as a product key."""
    return server.client("s3", key.access_key_id, key.secret_key)
