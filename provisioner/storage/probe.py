"""The doctor's probe of a store admin key: it can manage users, policies and keys (``provisioner check``).

The probe does, on a throwaway store user, what provisioning does for a product: create the user with its scoped
policy, issue a key, see the key listed, delete the key, delete the user with its policy. The user is deleted
whatever happened in between; a user the cleanup could not delete is named in the error, so nobody has to hunt
for it. The user name carries ``PROBE_PREFIX``, so a leftover is recognisable as the doctor's.
"""

from __future__ import annotations

import secrets

from provisioner.errors import ProvisionerError, StorageError
from provisioner.names import BucketName, Namespace
from provisioner.storage.base import StoreAdmin

#: Namespaces of the probe's throwaway users start with this (their store user is ``dp-`` + it).
PROBE_PREFIX = "provisioner-check-"


def probe_admin(store: StoreAdmin, bucket: BucketName) -> str:
    """One line when the admin key could create and delete a user, its policy and a key; StorageError otherwise."""
    namespace = Namespace(PROBE_PREFIX + secrets.token_hex(4))
    step = "create a user with its policy"
    try:
        store.create_user(bucket, namespace)
        step = "issue an access key"
        key = store.create_key(namespace)
        step = "list the user's keys"
        if key.access_key_id not in {k.access_key_id for k in store.list_keys(namespace)}:
            raise StorageError(f"the store does not list the key {key.access_key_id} it has just issued")
        step = "delete the access key"
        store.delete_key(namespace, key.access_key_id)
        step = "delete the user and its policy"
        store.delete_user(namespace)
        step = "see the user gone"
        if store.user_exists(namespace):
            raise StorageError(f"store user {namespace.user_name} still exists after it was deleted")
    except Exception as exc:
        leftover = _clean_up(store, namespace)
        reason = str(exc) if isinstance(exc, ProvisionerError) else f"{type(exc).__name__}: {exc}"
        raise StorageError(
            f"the store admin key could not {step} ({reason}){leftover}: it needs the rights to manage users, "
            "policies and keys (PROVISIONER_S3_ACCESS_KEY)"
        ) from exc
    return "the admin key created and deleted a user, its policy and a key"


def _clean_up(store: StoreAdmin, namespace: Namespace) -> str:
    """Delete the probe's user if it is still there; a sentence naming what is left when that fails."""
    try:
        store.delete_user(namespace)
    except Exception as exc:  # the probe's own failure is the news; this only adds what to delete by hand
        return f"; store user {namespace.user_name} is left behind ({type(exc).__name__}): delete it by hand"
    return ""
