"""boto3 clients with timeouts and bounded retries, and botocore errors turned into typed storage errors."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, HTTPClientError

from provisioner.errors import StorageError, StorageUnavailable

# Error codes that say "try again later" rather than "you asked for something wrong".
_TEMPORARY_CODES = frozenset(
    {
        "InternalError",
        "InternalFailure",
        "RequestTimeout",
        "RequestTimeoutException",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "ServiceFailure",
    }
)
_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "InvalidClientTokenId", "SignatureDoesNotMatch", "AuthFailure"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchEntity", "404", "NotFound", "NoSuchKey", "NoSuchBucket"})


def make_client(
    service: str,
    *,
    endpoint: str | None,
    access_key: str,
    secret_key: str,
    region: str,
    timeout: float = 10.0,
    max_attempts: int = 3,
) -> Any:
    """A boto3 client for ``service`` with path-style addressing, timeouts and bounded retries."""
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": max_attempts, "mode": "standard"},
        s3={"addressing_style": "path"},
        # S3-compatible stores (SeaweedFS, RustFS, MinIO) do not all accept the newer default checksums.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    return boto3.client(
        service,
        endpoint_url=endpoint or None,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=config,
    )


def error_code(exc: ClientError) -> str:
    """The error code of a botocore ClientError (``NoSuchEntity``, ``404``, ...)."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_not_found(exc: ClientError) -> bool:
    """True when the store said the thing does not exist."""
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return error_code(exc) in _NOT_FOUND_CODES or status == 404


@contextmanager
def storage_errors(what: str, endpoint: str | None) -> Iterator[None]:
    """Turn botocore errors raised inside the block into StorageError / StorageUnavailable.

    ``what`` names the operation and its target (never a secret) so the message says what failed.
    """
    where = endpoint or "AWS"
    try:
        yield
    except ClientError as exc:
        code = error_code(exc)
        message = str(exc.response.get("Error", {}).get("Message", "")).strip()
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        detail = f"{code}: {message}" if message else code
        if code in _TEMPORARY_CODES or int(status) >= 500:
            raise StorageUnavailable(f"{what} failed at {where} ({detail}); will retry") from None
        if code in _AUTH_CODES:
            raise StorageError(
                f"{what} was refused by {where} ({detail}): check the store admin access key and that it may "
                "manage users, policies, keys and objects"
            ) from None
        raise StorageError(f"{what} failed at {where} ({detail})") from None
    except (ConnectionError, HTTPClientError) as exc:
        raise StorageUnavailable(
            f"{what}: object store at {where} is unreachable ({type(exc).__name__}); is it running?"
        ) from None
    except BotoCoreError as exc:
        raise StorageError(f"{what} failed at {where}: {type(exc).__name__}: {exc}") from None
