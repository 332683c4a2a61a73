"""Keys and the project's .env: exactly one live key per product, its secret only in the .env.

Crash safety comes from the order of writes: a new key is written into the .env before it is recorded, and old
keys are deleted last. Whatever step a crash interrupts, the next converge keeps the key the .env can use and
deletes the others (every key of a ``dp-<namespace>`` user was issued by us).

``S3_READ_PREFIXES`` in the .env is written together with a newly issued key, in one atomic write: it names the
grant set the key was issued for. So an access reconcile rotates only when the grants changed since (or the policy
changed now), and a retry after a crash that followed the .env write issues no second key.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from provisioner import scaffold
from provisioner.logs import log_event
from provisioner.names import Namespace
from provisioner.reconcile.inputs import ReconcileConfig
from provisioner.storage.base import StoreAdmin

log = logging.getLogger(__name__)
MAX_KEYS_PER_USER = 2  # AWS IAM's limit; rotation needs one free slot
READ_PREFIXES = "S3_READ_PREFIXES"


@dataclass(frozen=True)
class KeyState:
    """The key a product's project uses after converging, and what it took."""

    access_key_id: str | None
    created: bool = False
    deleted: tuple[str, ...] = ()
    env_changed: bool = False
    secret_missing: bool = False  # the store has our key but the .env lost its secret: `provisioner rotate`
    # The .env lists other read prefixes than the grants: an access reconcile must settle the key (and rotate).
    prefixes_stale: bool = False


def project_dir(config: ReconcileConfig, namespace: Namespace) -> Path:
    """Where the project of ``namespace`` lives (its folder name comes from provisioner/names.py)."""
    return config.products_dir / namespace.folder


def env_path(config: ReconcileConfig, namespace: Namespace) -> Path:
    """The project's .env file."""
    return project_dir(config, namespace) / ".env"


def env_values(config: ReconcileConfig, namespace: Namespace, read_prefixes: Sequence[str]) -> dict[str, str]:
    """The non-secret S3 settings of a project's .env; ``read_prefixes`` as ``S3_READ_PREFIXES`` lists them."""
    return scaffold.env_values(
        endpoint=config.s3_endpoint,
        bucket=str(config.bucket),
        namespace=namespace,
        region=config.s3_region,
        read_prefixes=read_prefixes,
    )


def listed_prefixes(env: dict[str, str]) -> str | None:
    """The ``S3_READ_PREFIXES`` line of a .env as written (None when the .env has none)."""
    return env.get(READ_PREFIXES)


def converge_key(
    store: StoreAdmin,
    config: ReconcileConfig,
    namespace: Namespace,
    read_prefixes: Sequence[str],
    recorded_key_id: str | None,
    *,
    new_user: bool = False,
) -> KeyState:
    """Make the project's .env hold a working key; create one only when the user has none we can use.

    A key kept as it is keeps the ``S3_READ_PREFIXES`` it was issued with: when the grants moved on, the
    result says ``prefixes_stale`` and the access reconcile settles (rotates) it. ``new_user``: the user was created
    in this converge, so it has no keys and none need listing.
    """
    path = env_path(config, namespace)
    env = scaffold.read_env(path) if path.exists() else {}
    live = set() if new_user else {k.access_key_id for k in store.list_keys(namespace)}
    env_key = env.get("S3_ACCESS_KEY")
    values = env_values(config, namespace, read_prefixes)
    stale = listed_prefixes(env) is not None and listed_prefixes(env) != values[READ_PREFIXES]
    if listed_prefixes(env) is not None:
        del values[READ_PREFIXES]  # the marker of the key's grant set: only a new key rewrites it

    if env_key in live and env.get("S3_SECRET_KEY"):
        chosen: str | None = env_key
        changed = scaffold.write_env(path, {**values, "S3_ACCESS_KEY": env_key})
        deleted = _delete_others(store, namespace, live, keep=env_key)
        return KeyState(chosen, deleted=deleted, env_changed=changed, prefixes_stale=stale)

    if recorded_key_id in live:
        # The key exists but its secret is gone from the .env; only a rotation can bring one back.
        assert recorded_key_id is not None
        changed = scaffold.write_env(path, {**values, "S3_ACCESS_KEY": recorded_key_id})
        log_event(
            log,
            "product.env_secret_missing",
            level=logging.WARNING,
            namespace=namespace,
            access_key_id=recorded_key_id,
            hint=f"run `provisioner rotate {namespace}`",
        )
        deleted = _delete_others(store, namespace, live, keep=recorded_key_id)
        return KeyState(
            recorded_key_id, deleted=deleted, env_changed=changed, secret_missing=True, prefixes_stale=stale
        )

    return rotate(store, config, namespace, read_prefixes, live)


def settle_key(
    store: StoreAdmin,
    config: ReconcileConfig,
    namespace: Namespace,
    read_prefixes: Sequence[str],
    *,
    policy_changed: bool,
) -> KeyState:
    """After an access change: rotate the key unless it was already issued for exactly these grants.

    The .env's key was issued for this grant set when it is live, its secret is there, and ``S3_READ_PREFIXES``
    (written in the same atomic write as the key) already lists ``read_prefixes``. Then only keys left over by an
    interrupted rotation are deleted; nothing is issued. A policy that changed now always rotates.
    """
    path = env_path(config, namespace)
    env = scaffold.read_env(path) if path.exists() else {}
    live = {k.access_key_id for k in store.list_keys(namespace)}
    env_key = env.get("S3_ACCESS_KEY")
    wanted = env_values(config, namespace, read_prefixes)[READ_PREFIXES]
    if not policy_changed and env_key in live and env.get("S3_SECRET_KEY") and listed_prefixes(env) == wanted:
        assert env_key is not None
        return KeyState(env_key, deleted=_delete_others(store, namespace, live, keep=env_key))
    return rotate(store, config, namespace, read_prefixes, live)


def rotate(
    store: StoreAdmin,
    config: ReconcileConfig,
    namespace: Namespace,
    read_prefixes: Sequence[str],
    live: set[str] | None = None,
) -> KeyState:
    """Issue a new key, write it and ``read_prefixes`` into the .env atomically, then delete every other key."""
    if live is None:
        live = {k.access_key_id for k in store.list_keys(namespace)}
    path = env_path(config, namespace)
    if len(live) >= MAX_KEYS_PER_USER:
        # A crash between issuing and pruning left two keys; AWS allows no third. Keep only the one in use.
        in_use = scaffold.read_env(path).get("S3_ACCESS_KEY") if path.exists() else None
        for key_id in sorted(live - {in_use}):
            store.delete_key(namespace, key_id)
        live = live & {in_use} if in_use else set()
    key = store.create_key(namespace)
    values = env_values(config, namespace, read_prefixes)
    scaffold.write_env(path, {**values, "S3_ACCESS_KEY": key.access_key_id, "S3_SECRET_KEY": key.secret_key})
    deleted = _delete_others(store, namespace, live, keep=key.access_key_id)
    log_event(log, "product.key_issued", namespace=namespace, access_key_id=key.access_key_id, deleted=list(deleted))
    return KeyState(key.access_key_id, created=True, deleted=deleted, env_changed=True)


def _delete_others(store: StoreAdmin, namespace: Namespace, live: set[str], keep: str) -> tuple[str, ...]:
    others = tuple(sorted(k for k in live if k != keep))
    for key_id in others:
        store.delete_key(namespace, key_id)
    return others
