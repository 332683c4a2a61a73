"""Store users named like products (``dp-…``) that belong to no product: reported by resync, removed after a grace.

A first provisioning that crashed before it was recorded, a deletion by hand, or a product deleted while the
provisioner was down can leave a user (and its keys) behind. Resync lists the store's product users before it
lists the portal's products, so a user created for a product the portal has is always claimed by it; whatever no
portal product and no live record claims is an orphan. Each orphan is remembered with the time it was first seen
(table ``provisioner_orphan_users``, persistence/orphans.py); once it has been an orphan for the grace period it
is deleted with its keys and policies. The grace covers what the portal may briefly not list, and gives an operator
time to object.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from provisioner.errors import InvalidName
from provisioner.logs import log_event
from provisioner.names import Namespace
from provisioner.persistence.records import ProductRecord
from provisioner.persistence.state import StateStore
from provisioner.portal import Product
from provisioner.storage.base import StoreAdmin

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OrphanReport:
    """What one sweep found: every orphan user, and those it removed (their grace had passed)."""

    orphans: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()


def claimed_users(products: Iterable[Product], records: Iterable[ProductRecord]) -> set[str]:
    """Store user names that belong to a product: every portal product's, and every live record's."""
    claimed: set[str] = set()
    namespaces = [p.namespace for p in products] + [r.namespace for r in records if r.state == "provisioned"]
    for raw in namespaces:
        try:
            claimed.add(Namespace(raw).user_name)
        except InvalidName:
            continue  # a namespace outside the rule never got a user
    return claimed


class OrphanUsers:
    """Remembers orphan users between resyncs and removes them once their grace has passed."""

    def __init__(self, state: StateStore, store: StoreAdmin) -> None:
        self.state = state
        self.store = store

    def sweep(self, users: Iterable[str], claimed: set[str], grace_seconds: int | None) -> OrphanReport:
        """Record the orphans among ``users``, remove those orphaned for ``grace_seconds`` (None: report only)."""
        orphans = sorted(set(users) - claimed)
        due = self.state.note_orphans(orphans, grace_seconds)
        if orphans:
            log_event(
                log,
                "resync.orphan_users",
                level=logging.WARNING,
                users=orphans,
                grace_seconds=grace_seconds,
                hint="store users named like products that belong to no product; removed once their grace passes",
            )
        removed: list[str] = []
        for user in due:
            self.store.delete_user_named(user)
            self.state.forget_orphan(user)
            removed.append(user)
            log_event(log, "resync.orphan_user_removed", level=logging.WARNING, user=user)
        return OrphanReport(orphans=tuple(orphans), removed=tuple(removed))
