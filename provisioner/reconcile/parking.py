"""Parked products: those that failed permanently, retried only when something that could fix them changes.

A permanent failure (a changed namespace, a refused name, a namespace conflict, a refusal by the portal or the
store) cannot pass by itself, so retrying it every resync only fills the logs. The product is parked with a
fingerprint of the portal's product as it was when it failed. It is tried again when:

- the portal shows it differently (another fingerprint: renamed, namespace changed back, deleted, retagged...),
- an operator runs ``provisioner provision <namespace|id>`` (or ``--parked`` for all of them),
- the namespace it conflicted with is released (the product holding it is deleted).

Table: ``provisioner_parked`` (sql/005_catch_up.sql).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

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


@dataclass(frozen=True)
class Parked:
    """One parked product and why."""

    product_id: str
    namespace: str
    fingerprint: str
    reason: str
    error: str
    parked_at: datetime | None = None

    def holds(self, product: Product | None) -> bool:
        """True while the portal still shows the product as it was when it was parked."""
        return self.fingerprint == portal_fingerprint(product)


class ParkingLot:
    """Reads and writes ``provisioner_parked``."""

    def __init__(self, pool: ConnectionPool) -> None:
        self.pool = pool

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
        with self.pool.connection() as conn:
            conn.execute(
                """
                INSERT INTO provisioner_parked (product_id, namespace, fingerprint, reason, error)
                VALUES (%s, %s, %s, %s, %s)
                ON CONFLICT (product_id) DO UPDATE SET namespace = EXCLUDED.namespace,
                    fingerprint = EXCLUDED.fingerprint, reason = EXCLUDED.reason, error = EXCLUDED.error,
                    parked_at = now()
                """,
                (parked.product_id, parked.namespace, parked.fingerprint, parked.reason, parked.error),
            )
        return parked

    def unpark(self, product_id: str) -> bool:
        """Forget the parking of ``product_id``; True when it was parked."""
        with self.pool.connection() as conn:
            cur = conn.execute("DELETE FROM provisioner_parked WHERE product_id = %s", (product_id,))
            return cur.rowcount > 0

    def release_namespace(self, namespace: str, reason: str) -> list[str]:
        """Unpark the products parked for ``reason`` on ``namespace`` (it was freed); return their ids."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "DELETE FROM provisioner_parked WHERE namespace = %s AND reason = %s RETURNING product_id",
                (namespace, reason),
            ).fetchall()
        return sorted(r[0] for r in rows)

    def get(self, product_id: str) -> Parked | None:
        """The parking of ``product_id``, if any."""
        rows = self._select("WHERE product_id = %s", (product_id,))
        return rows[0] if rows else None

    def by_namespace(self, namespace: str) -> list[Parked]:
        """Products parked with ``namespace`` (as the portal showed it)."""
        return self._select("WHERE namespace = %s", (namespace,))

    def all(self) -> dict[str, Parked]:
        """Every parked product by id."""
        return {p.product_id: p for p in self._select("", ())}

    def _select(self, where: str, params: tuple[Any, ...]) -> list[Parked]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(f"SELECT * FROM provisioner_parked {where} ORDER BY parked_at, product_id", params)  # type: ignore[arg-type]
            return [Parked(**row) for row in cur.fetchall()]
