"""``provisioner_parked`` (migration 005): products that failed permanently, with the portal's fingerprint of them
when they failed. When a parked product is tried again is decided in reconcile/parking.py."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

from provisioner.persistence.records import Parked
from provisioner.persistence.rows import select_records

_PARK = """
INSERT INTO provisioner_parked (product_id, namespace, fingerprint, reason, error)
VALUES (%s, %s, %s, %s, %s)
ON CONFLICT (product_id) DO UPDATE SET namespace = EXCLUDED.namespace,
    fingerprint = EXCLUDED.fingerprint, reason = EXCLUDED.reason, error = EXCLUDED.error,
    parked_at = now()
"""

_FOR_STATUS = "SELECT product_id, namespace, reason, error, parked_at FROM provisioner_parked ORDER BY parked_at"


def park(conn: psycopg.Connection[Any], parked: Parked) -> None:
    """Park a product; replaces an older parking of it (``parked_at`` becomes now)."""
    conn.execute(_PARK, (parked.product_id, parked.namespace, parked.fingerprint, parked.reason, parked.error))


def unpark(conn: psycopg.Connection[Any], product_id: str) -> bool:
    """Forget the parking of ``product_id``; True when it was parked."""
    return conn.execute("DELETE FROM provisioner_parked WHERE product_id = %s", (product_id,)).rowcount > 0


def release_namespace(conn: psycopg.Connection[Any], namespace: str, reason: str) -> list[str]:
    """Unpark the products parked for ``reason`` on ``namespace``; return their ids, sorted."""
    rows = conn.execute(
        "DELETE FROM provisioner_parked WHERE namespace = %s AND reason = %s RETURNING product_id", (namespace, reason)
    ).fetchall()
    return sorted(r[0] for r in rows)


def parked(conn: psycopg.Connection[Any], product_id: str) -> Parked | None:
    """The parking of ``product_id``, if any."""
    rows = _select(conn, "WHERE product_id = %s", (product_id,))
    return rows[0] if rows else None


def parked_on(conn: psycopg.Connection[Any], namespace: str) -> list[Parked]:
    """Products parked with ``namespace`` (as the portal showed it)."""
    return _select(conn, "WHERE namespace = %s", (namespace,))


def all_parked(conn: psycopg.Connection[Any]) -> dict[str, Parked]:
    """Every parked product by id."""
    return {p.product_id: p for p in _select(conn, "", ())}


async def parked_for_status(conn: psycopg.AsyncConnection[Any]) -> list[dict[str, Any]]:
    """Every parked product, oldest first, as ``GET /status/products`` lists them (no fingerprint)."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(_FOR_STATUS)
    return await cur.fetchall()


def _select(conn: psycopg.Connection[Any], where: str, params: tuple[Any, ...]) -> list[Parked]:
    return select_records(
        conn, Parked, f"SELECT * FROM provisioner_parked {where} ORDER BY parked_at, product_id", params
    )
