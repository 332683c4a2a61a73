"""StoreAdmin over the AWS IAM API: AWS itself, SeaweedFS (embedded default) and moto's server.

Each product gets user ``dp-<namespace>`` with one inline policy, ``provisioner-scope``. Writes happen
only when the store differs from what we want, so a resync over unchanged products writes nothing. The policy
denies every IAM action explicitly on stores that accept a Deny (AWS, moto). SeaweedFS accepts only "Allow" and lets
any key manage its own user's keys without asking a policy (its "self-service" IAM actions), so there a key a product
issues itself lives only until the product's next converge, which deletes every key but the one in its .env.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from provisioner.errors import StorageError
from provisioner.logs import log_event
from provisioner.names import BucketName, Namespace, is_product_user
from provisioner.storage.base import AccessKey, KeyInfo
from provisioner.storage.botocall import error_code, is_not_found, make_client, storage_errors
from provisioner.storage.objects import S3Objects
from provisioner.storage.policy import ReadGrant, normalize_policy, policy_json, product_policy

POLICY_NAME = "provisioner-scope"

logger = logging.getLogger(__name__)


class IamStore(S3Objects):
    """Users, inline policies and access keys through the AWS IAM API; objects through S3."""

    def __init__(
        self,
        *,
        endpoint: str | None,
        access_key: str,
        secret_key: str,
        region: str = "us-east-1",
        timeout: float = 10.0,
        max_attempts: int = 3,
    ) -> None:
        common: dict[str, Any] = {
            "endpoint": endpoint,
            "access_key": access_key,
            "secret_key": secret_key,
            "region": region,
            "timeout": timeout,
            "max_attempts": max_attempts,
        }
        super().__init__(make_client("s3", **common), endpoint=endpoint, region=region)
        self._iam = make_client("iam", **common)
        # Product policies deny every IAM action explicitly (a product key never manages keys or users, its own
        # included) unless the store refuses Deny statements: see _put_policy.
        self._deny_iam = True

    def ensure_user(self, bucket: BucketName, namespace: Namespace, grants: Sequence[ReadGrant] = ()) -> bool:
        """Make user ``dp-<namespace>`` exist with exactly the scoped policy; True when anything changed."""
        user = namespace.user_name
        desired = product_policy(bucket, namespace, grants, deny_iam=self._deny_iam)
        changed = False
        with storage_errors(f"ensuring store user {user}", self._endpoint):
            # Listing the user's policies doubles as the existence check: one call fewer per reconcile.
            try:
                names = self._policy_names(user)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
                self._iam.create_user(UserName=user)
                names, changed = [], True
            for name in names:
                if name != POLICY_NAME:  # drift: someone added a policy by hand; we own this user
                    self._iam.delete_user_policy(UserName=user, PolicyName=name)
                    changed = True
            current = self._current_policy(user) if POLICY_NAME in names else None
            if current is None or normalize_policy(current) != normalize_policy(desired):
                changed = self._put_policy(user, bucket, namespace, grants, current) or changed
        if changed:
            log_event(logger, "storage.user.ensured", namespace=str(namespace), user=user, grants=len(grants))
        return changed

    def create_user(self, bucket: BucketName, namespace: Namespace, grants: Sequence[ReadGrant] = ()) -> bool:
        """Create user ``dp-<namespace>`` with its scoped policy; False, changing nothing, when it already exists."""
        user = namespace.user_name
        with storage_errors(f"creating store user {user}", self._endpoint):
            try:
                self._iam.create_user(UserName=user)
            except ClientError as exc:
                if error_code(exc) == "EntityAlreadyExists":
                    return False
                raise
            self._put_policy(user, bucket, namespace, grants, None)
        log_event(logger, "storage.user.ensured", namespace=str(namespace), user=user, grants=len(grants))
        return True

    def user_exists(self, namespace: Namespace) -> bool:
        """True when the store user of ``namespace`` exists."""
        with storage_errors(f"looking up store user {namespace.user_name}", self._endpoint):
            try:
                self._iam.get_user(UserName=namespace.user_name)
                return True
            except ClientError as exc:
                if is_not_found(exc):
                    return False
                raise

    def user_policy(self, namespace: Namespace) -> dict[str, Any] | None:
        """The user's current scope policy document as the store returns it, or None."""
        user = namespace.user_name
        with storage_errors(f"reading the policy of store user {user}", self._endpoint):
            try:
                if POLICY_NAME not in self._policy_names(user):
                    return None
            except ClientError as exc:
                if is_not_found(exc):
                    return None
                raise
            return self._current_policy(user)

    def list_keys(self, namespace: Namespace) -> list[KeyInfo]:
        """The user's access keys (ids and state only); empty when the user does not exist."""
        return self._list_keys(namespace.user_name)

    def _list_keys(self, user: str) -> list[KeyInfo]:
        with storage_errors(f"listing access keys of {user}", self._endpoint):
            try:
                paginator = self._iam.get_paginator("list_access_keys")
                items = [m for page in paginator.paginate(UserName=user) for m in page.get("AccessKeyMetadata", [])]
            except ClientError as exc:
                if is_not_found(exc):
                    return []
                raise
        return [
            KeyInfo(
                access_key_id=m["AccessKeyId"],
                active=m.get("Status", "Active") == "Active",
                created_at=m.get("CreateDate") if isinstance(m.get("CreateDate"), datetime) else None,
            )
            for m in items
        ]

    def create_key(self, namespace: Namespace) -> AccessKey:
        """Issue a new access key for the user."""
        user = namespace.user_name
        with storage_errors(f"creating an access key for {user}", self._endpoint):
            try:
                key = self._iam.create_access_key(UserName=user)["AccessKey"]
            except ClientError as exc:
                if error_code(exc) == "LimitExceeded":
                    raise StorageError(
                        f"store user {user} already has the most access keys the store allows; delete an old key "
                        "(rotate) before issuing a new one"
                    ) from None
                if is_not_found(exc):
                    raise StorageError(
                        f"store user {user} does not exist; ensure the user before issuing keys"
                    ) from None
                raise
        log_event(logger, "storage.key.created", namespace=str(namespace), access_key_id=key["AccessKeyId"])
        return AccessKey(access_key_id=key["AccessKeyId"], secret_key=key["SecretAccessKey"])

    def delete_key(self, namespace: Namespace, access_key_id: str) -> None:
        """Deactivate then delete a key; no error when it is already gone."""
        self._delete_key(namespace.user_name, access_key_id)

    def _delete_key(self, user: str, access_key_id: str) -> None:
        with storage_errors(f"deleting access key {access_key_id} of {user}", self._endpoint):
            # Deactivate first: if the delete fails half-way the key at least no longer works.
            try:
                self._iam.update_access_key(UserName=user, AccessKeyId=access_key_id, Status="Inactive")
                self._iam.delete_access_key(UserName=user, AccessKeyId=access_key_id)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
                return
        log_event(logger, "storage.key.deleted", user=user, access_key_id=access_key_id)

    def delete_user(self, namespace: Namespace) -> bool:
        """Delete the user's keys, policies and the user; True when something was deleted."""
        return self.delete_user_named(namespace.user_name)

    def delete_user_named(self, user_name: str) -> bool:
        """Delete a store user by name with its keys, inline and attached policies; True when it existed."""
        user = user_name
        with storage_errors(f"looking up store user {user}", self._endpoint):
            try:
                self._iam.get_user(UserName=user)
            except ClientError as exc:
                if is_not_found(exc):
                    return False
                raise
        for key in self._list_keys(user):
            self._delete_key(user, key.access_key_id)
        with storage_errors(f"deleting store user {user}", self._endpoint):
            try:
                for name in self._policy_names(user):
                    self._iam.delete_user_policy(UserName=user, PolicyName=name)
                # IAM refuses to delete a user that still has managed policies attached (DeleteConflict).
                paginator = self._iam.get_paginator("list_attached_user_policies")
                for page in paginator.paginate(UserName=user):
                    for attached in page.get("AttachedPolicies", []):
                        self._iam.detach_user_policy(UserName=user, PolicyArn=attached["PolicyArn"])
                self._iam.delete_user(UserName=user)
            except ClientError as exc:
                if not is_not_found(exc):
                    raise
        log_event(logger, "storage.user.deleted", user=user)
        return True

    def list_users(self) -> list[str]:
        """The names of every store user that looks like a product's (``dp-…``), whoever created it."""
        with storage_errors("listing store users", self._endpoint):
            paginator = self._iam.get_paginator("list_users")
            pages = paginator.paginate(PaginationConfig={"PageSize": 1000})  # IAM's largest page; the default is 100
            names = [u["UserName"] for page in pages for u in page.get("Users", [])]
        return sorted(n for n in names if is_product_user(n))

    def _put_policy(
        self,
        user: str,
        bucket: BucketName,
        namespace: Namespace,
        grants: Sequence[ReadGrant],
        current: dict[str, Any] | None,
    ) -> bool:
        """Write the scope policy, with the explicit Deny of IAM actions where the store takes it; True if written.

        SeaweedFS refuses any statement but "Allow" (MalformedPolicyDocument): then this client stops sending the
        Deny, and writes nothing when the store already holds the document without it.
        """
        deny = self._deny_iam  # read once: worker threads share this client, and another may flip it meanwhile
        desired = product_policy(bucket, namespace, grants, deny_iam=deny)
        try:
            self._iam.put_user_policy(UserName=user, PolicyName=POLICY_NAME, PolicyDocument=policy_json(desired))
            return True
        except ClientError as exc:
            if not (deny and error_code(exc) == "MalformedPolicyDocument" and "Allow" in str(exc)):
                raise
        self._deny_iam = False
        log_event(logger, "storage.iam_deny_unsupported", level=logging.WARNING, endpoint=self._endpoint)
        desired = product_policy(bucket, namespace, grants, deny_iam=False)
        if current is not None and normalize_policy(current) == normalize_policy(desired):
            return False
        self._iam.put_user_policy(UserName=user, PolicyName=POLICY_NAME, PolicyDocument=policy_json(desired))
        return True

    def _policy_names(self, user: str) -> list[str]:
        paginator = self._iam.get_paginator("list_user_policies")
        return [name for page in paginator.paginate(UserName=user) for name in page.get("PolicyNames", [])]

    def _current_policy(self, user: str) -> dict[str, Any] | None:
        try:
            document = self._iam.get_user_policy(UserName=user, PolicyName=POLICY_NAME)["PolicyDocument"]
        except ClientError as exc:
            if is_not_found(exc):
                return None
            raise
        # boto3 decodes AWS's URL-encoded JSON into a dict; some servers hand back the JSON text.
        return json.loads(document) if isinstance(document, str) else dict(document)
