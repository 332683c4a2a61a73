"""Parked products: those that failed permanently, retried only when something that could fix them changes.

A permanent failure (a changed namespace, a refused name, a namespace conflict, a refusal by the portal or the
store) cannot pass by itself, so retrying it every resync only fills the logs. The product is parked with a
fingerprint of the portal's product as it was when it failed. It is tried again when:

- the portal shows it differently (another fingerprint: renamed, namespace changed back, deleted, retagged...),
- an operator runs ``provisioner provision <namespace|id>`` (or ``--parked`` for all of them),
- the namespace it conflicted with is released (the product holding it is deleted).

Table: ``provisioner_parked`` (persistence/parked.py).
"""

from __future__ import annotations

import hashlib

from provisioner.persistence.records import Parked
from provisioner.persistence.state import StateStore
from provisioner.portal import Product

#: The fingerprint of a product the portal no longer has (404).
GONE = "gone"


def portal_fingerprint(product: Product | None) -> str:
    """A digest of everything the portal shows about ``product`` that a person could change to fix a failure.

    Finalizers are left out: ours is written by the provisioner itself, sometimes just before a failure.
    """
    if product is None:
        return GONE
    fields = (
        product.namespace,
        product.name,
        product.status,
        product.description,
        "\x1e".join(sorted(product.tags)),
        product.lifecycle or "",
        product.domain.id if product.domain else "",
        product.type.id if product.type else "",
    )
    return hashlib.sha256("\x1f".join(fields).encode()).hexdigest()[:32]


def holds(parked: Parked, product: Product | None) -> bool:
    """True while the portal still shows the product as it was when it was parked."""
    return parked.fingerprint == portal_fingerprint(product)


class ParkingLot:
    """Parks and unparks products in the state store (``provisioner_parked``, persistence/parked.py)."""

    def __init__(self, state: StateStore) -> None:
        self.state = state

    def park(self, product_id: str, product: Product | None, exc: BaseException) -> Parked:
        """Park ``product_id`` for ``exc``, as the portal shows it now; replaces an older parking."""
        parked = Parked(
            product_id=product_id,
            # A namespace outside the portal's rule (product.problem) may hold a NUL, which PostgreSQL refuses.
            namespace=product.namespace if product is not None and product.problem is None else "",
            fingerprint=portal_fingerprint(product),
            reason=type(exc).__name__,
            error=str(exc).replace("\x00", "\\x00"),  # PostgreSQL text cannot hold a NUL
        )
        self.state.park(parked)
        return parked

    def unpark(self, product_id: str) -> bool:
        """Forget the parking of ``product_id``; True when it was parked."""
        return self.state.unpark(product_id)

    def release_namespace(self, namespace: str, reason: str) -> list[str]:
        """Unpark the products parked for ``reason`` on ``namespace`` (it was freed); return their ids."""
        return self.state.release_parked(namespace, reason)

    def get(self, product_id: str) -> Parked | None:
        """The parking of ``product_id``, if any."""
        return self.state.parked(product_id)

    def by_namespace(self, namespace: str) -> list[Parked]:
        """Products parked with ``namespace`` (as the portal showed it)."""
        return self.state.parked_on(namespace)

    def all(self) -> dict[str, Parked]:
        """Every parked product by id."""
        return self.state.all_parked()
