"""StoreAdmin over the MinIO admin API (``/minio/admin/v3``): MinIO and RustFS, which has no AWS IAM API.

Each product gets user ``dp-<namespace>`` (its own password is random and thrown away), a canned policy
``provisioner-dp-<namespace>`` with the same document as the IAM backend, attached to that user, and
access keys as service accounts whose parent is that user (so they inherit exactly its policy).
Objects go through the S3 API with boto3, as for the IAM backend.
"""

from __future__ import annotations

import json
import logging
import secrets
import string
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import urllib3
from minio.credentials.providers import StaticProvider
from minio.crypto import decrypt, encrypt
from minio.error import MinioAdminException
from minio.minioadmin import _COMMAND, MinioAdmin

from provisioner.errors import StorageError, StorageUnavailable
from provisioner.logs import log_event
from provisioner.names import BucketName, Namespace, is_product_user
from provisioner.storage.base import AccessKey, KeyInfo
from provisioner.storage.botocall import make_client
from provisioner.storage.objects import S3Objects
from provisioner.storage.policy import ReadGrant, normalize_policy, product_policy

logger = logging.getLogger(__name__)

_KEY_ALPHABET = string.ascii_uppercase + string.digits
_ACTIVE = frozenset({"on", "enabled"})


def policy_name(namespace: Namespace) -> str:
    """The canned policy of a product's user."""
    return _policy_of(namespace.user_name)


def _policy_of(user: str) -> str:
    return f"provisioner-{user}"


class _Admin(MinioAdmin):
    """MinioAdmin plus a service account created *for another user* (``targetUser``).

    minio 7.2.x's ``add_service_account`` has no target user, so the key would belong to the admin and
    carry its rights. The admin API takes ``targetUser`` in the same encrypted body (MinIO, RustFS).
    """

    def add_service_account_for(
        self, *, target_user: str, access_key: str, secret_key: str, description: str
    ) -> dict[str, Any]:
        """Create a service account whose parent is ``target_user``; return the decrypted answer."""
        secret = self._provider.retrieve().secret_key
        body = json.dumps(
            {
                "status": "enabled",
                "accessKey": access_key,
                "secretKey": secret_key,
                "targetUser": target_user,
                "description": description,
            }
        ).encode()
        response = self._url_open(
            method="PUT",
            command=_COMMAND.SERVICE_ACCOUNT_ADD,
            body=encrypt(body, secret),
            preload_content=False,
        )
        data = decrypt(response, secret)
        return json.loads(data) if data else {}


class MinioStore(S3Objects):
    """Users, canned policies and service-account keys through the MinIO admin API; objects through S3."""

    def __init__(
        self,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        timeout: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        url = urlsplit(endpoint)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise StorageError(f"store endpoint {endpoint!r} must look like http(s)://host:port")
        super().__init__(
            make_client(
                "s3",
                endpoint=endpoint,
                access_key=access_key,
                secret_key=secret_key,
                region=region,
                timeout=timeout,
                max_attempts=max_attempts,
            ),
            endpoint=endpoint,
            region=region,
        )
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=timeout, read=timeout),
            retries=urllib3.Retry(
                total=max(max_attempts - 1, 0), backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]
            ),
        )
        self._admin = _Admin(
            endpoint=url.netloc,
            credentials=StaticProvider(access_key, secret_key),
            region=region,
            secure=url.scheme == "https",
            http_client=http,
        )

    def ensure_user(self, bucket: BucketName, namespace: Namespace, grants: Sequence[ReadGrant] = ()) -> bool:
        """Make user ``dp-<namespace>`` exist with exactly the scoped policy; True when anything changed."""
        return self._converge_user(bucket, namespace, grants, only_if_new=False)

    def create_user(self, bucket: BucketName, namespace: Namespace, grants: Sequence[ReadGrant] = ()) -> bool:
        """Create user ``dp-<namespace>`` with its scoped policy; False, changing nothing, when it already exists."""
        # MinIO's user_add also updates an existing user (and its password): look first, once.
        return self._converge_user(bucket, namespace, grants, only_if_new=True)

    def _converge_user(
        self, bucket: BucketName, namespace: Namespace, grants: Sequence[ReadGrant], *, only_if_new: bool
    ) -> bool:
        user = namespace.user_name
        name = policy_name(namespace)
        desired = product_policy(bucket, namespace, grants)
        changed = False
        with self._errors(f"ensuring store user {user}"):
            info = self._user_info(user)
            if info is not None and only_if_new:
                return False
            if info is None:
                # The user's own password is never used: products get service-account keys.
                self._admin.user_add(user, secrets.token_urlsafe(30))
                info = {}
                changed = True
            current = self._policy(name)
            if current is None or normalize_policy(current) != normalize_policy(desired):
                self._admin.policy_add(name, policy=desired)
                changed = True
            attached = _attached_policies(info)
            if name not in attached:
                self._admin.attach_policy([name], user=user)
                changed = True
            extra = sorted(attached - {name})
            if extra:  # drift: someone attached more by hand; we own this user
                self._admin.detach_policy(extra, user=user)
                changed = True
        if changed:
            log_event(logger, "storage.user.ensured", namespace=str(namespace), user=user, grants=len(grants))
        return changed

    def user_exists(self, namespace: Namespace) -> bool:
        """True when the store user of ``namespace`` exists."""
        with self._errors(f"looking up store user {namespace.user_name}"):
            return self._user_info(namespace.user_name) is not None

    def user_policy(self, namespace: Namespace) -> dict[str, Any] | None:
        """The user's current canned policy document as the store returns it, or None."""
        with self._errors(f"reading the policy of store user {namespace.user_name}"):
            return self._policy(policy_name(namespace))

    def list_keys(self, namespace: Namespace) -> list[KeyInfo]:
        """The user's access keys (ids and state only); empty when the user does not exist."""
        return self._list_keys(namespace.user_name)

    def _list_keys(self, user: str) -> list[KeyInfo]:
        with self._errors(f"listing access keys of {user}"):
            try:
                answer = json.loads(self._admin.list_service_account(user) or "{}")
            except MinioAdminException as exc:
                if _not_found(exc):
                    return []
                raise
        keys: list[KeyInfo] = []
        for account in answer.get("accounts") or []:
            if isinstance(account, str):  # older servers list bare access keys
                keys.append(KeyInfo(access_key_id=account, active=True))
            else:
                status = str(account.get("accountStatus", "on")).lower()
                keys.append(KeyInfo(access_key_id=account["accessKey"], active=status in _ACTIVE))
        return keys

    def create_key(self, namespace: Namespace) -> AccessKey:
        """Issue a new access key (a service account of the user)."""
        user = namespace.user_name
        access_key = "DP" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(18))
        secret_key = secrets.token_urlsafe(30)
        with self._errors(f"creating an access key for {user}"):
            if self._user_info(user) is None:
                raise StorageError(f"store user {user} does not exist; ensure the user before issuing keys")
            answer = self._admin.add_service_account_for(
                target_user=user,
                access_key=access_key,
                secret_key=secret_key,
                description=f"provisioner key of data product {namespace}",
            )
        creds = answer.get("credentials") or {}
        log_event(logger, "storage.key.created", namespace=str(namespace), access_key_id=access_key)
        return AccessKey(
            access_key_id=creds.get("accessKey") or access_key, secret_key=creds.get("secretKey") or secret_key
        )

    def delete_key(self, namespace: Namespace, access_key_id: str) -> None:
        """Deactivate then delete a key of this user; no error when it is already gone."""
        self._delete_key(namespace.user_name, access_key_id)

    def _delete_key(self, user: str, access_key_id: str) -> None:
        if access_key_id not in {k.access_key_id for k in self._list_keys(user)}:
            return  # gone already, or not this product's key: never touch another user's keys
        with self._errors(f"deleting access key {access_key_id} of {user}"):
            try:
                # Deactivate first: if the delete fails half-way the key at least no longer works.
                self._admin.update_service_account(access_key=access_key_id, status="off")
                self._admin.delete_service_account(access_key_id)
            except MinioAdminException as exc:
                if not _not_found(exc):
                    raise
                return
        log_event(logger, "storage.key.deleted", user=user, access_key_id=access_key_id)

    def delete_user(self, namespace: Namespace) -> bool:
        """Delete the user's keys, the user, then its canned policy; True when something was deleted."""
        return self.delete_user_named(namespace.user_name)

    def delete_user_named(self, user_name: str) -> bool:
        """Delete a store user by name with its keys, then its canned policy; True when something was deleted."""
        user = user_name
        deleted = False
        with self._errors(f"looking up store user {user}"):
            exists = self._user_info(user) is not None
        if exists:
            for key in self._list_keys(user):
                self._delete_key(user, key.access_key_id)
            with self._errors(f"deleting store user {user}"):
                try:
                    self._admin.user_remove(user)
                    deleted = True
                except MinioAdminException as exc:
                    if not _not_found(exc):
                        raise
        # The policy goes last: MinIO refuses to delete a policy that is still attached.
        with self._errors(f"deleting policy {_policy_of(user)}"):
            try:
                self._admin.policy_remove(_policy_of(user))
                deleted = True
            except MinioAdminException as exc:
                if not _not_found(exc):
                    raise
        if deleted:
            log_event(logger, "storage.user.deleted", user=user)
        return deleted

    def list_users(self) -> list[str]:
        """The names of every store user that looks like a product's (``dp-…``), whoever created it."""
        with self._errors("listing store users"):
            answer = json.loads(self._admin.user_list() or "{}")
        if not isinstance(answer, dict):
            kind = type(answer).__name__
            raise StorageError(f"listing store users at {self._endpoint}: the admin API answered a {kind}, not a map")
        return sorted(name for name in answer if is_product_user(name))

    def _user_info(self, user: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads(self._admin.user_info(user) or "{}"))
        except MinioAdminException as exc:
            if _not_found(exc):
                return None
            raise

    def _policy(self, name: str) -> dict[str, Any] | None:
        try:
            text = self._admin.policy_info(name)
        except MinioAdminException as exc:
            if _not_found(exc):
                return None
            raise
        document = json.loads(text) if text else None
        if isinstance(document, dict) and "Statement" not in document and isinstance(document.get("Policy"), dict):
            document = document["Policy"]  # the v2 answer wraps the document
        return document

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        where = self._endpoint
        try:
            yield
        except MinioAdminException as exc:
            status = int(exc._code) if str(exc._code).isdigit() else 0
            detail = _error_detail(exc)
            if status >= 500:
                raise StorageUnavailable(f"{what} failed at {where} (HTTP {status}: {detail}); will retry") from None
            if status in (401, 403):
                raise StorageError(
                    f"{what} was refused by {where} (HTTP {status}: {detail}): check the store admin access key "
                    "and that it may manage users, policies and service accounts"
                ) from None
            raise StorageError(f"{what} failed at {where} (HTTP {status}: {detail})") from None
        except urllib3.exceptions.HTTPError as exc:
            raise StorageUnavailable(
                f"{what}: admin API at {where} is unreachable ({type(exc).__name__}); is it running?"
            ) from None
        except (ValueError, KeyError) as exc:
            raise StorageError(f"{what}: the admin API at {where} answered in a shape we cannot read ({exc})") from None


def _attached_policies(info: dict[str, Any]) -> set[str]:
    names = info.get("policyName") or ""
    return {n.strip() for n in str(names).split(",") if n.strip()}


def _not_found(exc: MinioAdminException) -> bool:
    body = str(exc._body)
    return str(exc._code) == "404" or "NoSuch" in body or "not exist" in body.lower() or "not found" in body.lower()


def _error_detail(exc: MinioAdminException) -> str:
    """The server's error code and message, without echoing a whole body back."""
    try:
        body = json.loads(exc._body)
        return f"{body.get('Code', '')}: {body.get('Message', '')}".strip(": ")[:300]
    except (ValueError, AttributeError):
        return str(exc._body)[:300]
