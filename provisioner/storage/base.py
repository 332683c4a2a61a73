"""The one interface every store admin backend implements (AWS IAM API, MinIO admin API).

A backend manages, for each product namespace, a prefix ``<namespace>/`` in the shared bucket and a store
user ``dp-<namespace>`` whose policy allows that prefix (read, write, list) and nothing else, plus read-only
grants on other namespaces' prefixes. Every method is idempotent: calling it twice leaves the same state.
The real names come from the namespace's ``prefix`` and ``user_name`` (provisioner/names.py), never from
formatting the namespace here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from provisioner.names import BucketName, Namespace
from provisioner.storage.policy import ReadGrant


@dataclass(frozen=True)
class AccessKey:
    """A freshly issued key. The secret exists only here and in the project's .env, never in our database."""

    access_key_id: str
    secret_key: str = field(repr=False)


@dataclass(frozen=True)
class KeyInfo:
    """What the store tells us about an existing key (never its secret)."""

    access_key_id: str
    active: bool
    created_at: datetime | None = None


class StoreAdmin(Protocol):
    """Bucket, prefix, user, policy and key management on one S3-compatible store."""

    def ensure_bucket(self, bucket: BucketName) -> bool:
        """Create ``bucket`` if missing; True when it was created."""
        ...

    def ensure_prefix(self, bucket: BucketName, namespace: Namespace) -> bool:
        """Create the prefix's marker object ``<namespace>/`` if missing; True when created."""
        ...

    def ensure_user(self, bucket: BucketName, namespace: Namespace, grants: Sequence[ReadGrant] = ()) -> bool:
        """Make user ``dp-<namespace>`` exist with exactly the scoped policy; True when anything changed."""
        ...

    def create_user(self, bucket: BucketName, namespace: Namespace, grants: Sequence[ReadGrant] = ()) -> bool:
        """Create user ``dp-<namespace>`` with its scoped policy; False, changing nothing, when it already exists.

        The fast path for a product never provisioned: a new user has no keys and no policy to compare.
        """
        ...

    def user_exists(self, namespace: Namespace) -> bool:
        """True when the store user of ``namespace`` exists."""
        ...

    def list_keys(self, namespace: Namespace) -> list[KeyInfo]:
        """The user's access keys (ids and state only); empty when the user does not exist."""
        ...

    def create_key(self, namespace: Namespace) -> AccessKey:
        """Issue a new access key for the user."""
        ...

    def delete_key(self, namespace: Namespace, access_key_id: str) -> None:
        """Deactivate then delete a key; no error when it is already gone."""
        ...

    def delete_user(self, namespace: Namespace) -> bool:
        """Delete the user's keys, policies and the user; True when something was deleted."""
        ...

    def delete_prefix(self, bucket: BucketName, namespace: Namespace) -> int:
        """Delete every object under ``<namespace>/``; return how many were deleted."""
        ...

    def move_prefix(self, bucket: BucketName, namespace: Namespace, target: str) -> int:
        """Move every object under ``<namespace>/`` to ``<target><rest of its key>``; return how many moved.

        S3 has no rename: each object is copied, then the originals are deleted (a crash in between leaves
        copies that the next call writes again). Cost grows with the number and size of the objects.
        """
        ...

    def list_users(self) -> list[str]:
        """The names of every store user that looks like a product's (``dp-…``), whoever created it."""
        ...

    def delete_user_named(self, user_name: str) -> bool:
        """Delete a store user by name, with its keys and policies; True when something was deleted."""
        ...

    def object_exists(self, bucket: BucketName, key: str) -> bool:
        """True when ``key`` exists in ``bucket``."""
        ...

    def put_object(self, bucket: BucketName, key: str, body: bytes) -> None:
        """Write one object (used to seed a new product's example raw data)."""
        ...
