"""``provisioner_products``: what the provisioner has converged each data product to (migrations 003 and 012)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from provisioner.persistence.records import ProductRecord
from provisioner.persistence.rows import select_records

_SAVE = """
INSERT INTO provisioner_products
    (product_id, namespace, name, state, access_key_id, seeded, fingerprint, verified_at, updated_at)
VALUES (%s, %s, %s, %s, %s, %s, %s, now(), now())
ON CONFLICT (product_id) DO UPDATE SET
    namespace = EXCLUDED.namespace, name = EXCLUDED.name, state = EXCLUDED.state,
    access_key_id = EXCLUDED.access_key_id, seeded = EXCLUDED.seeded, fingerprint = EXCLUDED.fingerprint,
    verified_at = now(), updated_at = now()
"""


def product(conn: psycopg.Connection[Any], product_id: str) -> ProductRecord | None:
    """The record of ``product_id``, deleted ones included."""
    return _first(_select(conn, "SELECT * FROM provisioner_products WHERE product_id = %s", (product_id,)))


def live_by_namespace(conn: psycopg.Connection[Any], namespace: str) -> ProductRecord | None:
    """The provisioned product that owns ``namespace``, if any."""
    return _first(
        _select(conn, "SELECT * FROM provisioner_products WHERE namespace = %s AND state = 'provisioned'", (namespace,))
    )


def all_products(conn: psycopg.Connection[Any]) -> list[ProductRecord]:
    """Every product ever provisioned, deleted ones included."""
    return _select(conn, "SELECT * FROM provisioner_products ORDER BY namespace, updated_at DESC", ())


def save_product(conn: psycopg.Connection[Any], record: ProductRecord) -> None:
    """Insert or update ``record``; ``verified_at`` becomes now."""
    conn.execute(
        _SAVE,
        (
            record.product_id,
            record.namespace,
            record.name,
            record.state,
            record.access_key_id,
            record.seeded,
            record.fingerprint,
        ),
    )


def _first(rows: list[ProductRecord]) -> ProductRecord | None:
    return rows[0] if rows else None


def _select(conn: psycopg.Connection[Any], query: str, params: Sequence[object]) -> list[ProductRecord]:
    return select_records(conn, ProductRecord, query, params)
