"""Per-target state (``provisioner_target_state``) and the reads each target granted (``provisioner_target_grants``):
migration 013."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from provisioner.persistence.records import TargetGrantRecord, TargetState

_SAVE_STATE = """
INSERT INTO provisioner_target_state (target, product_id, aspect, state, detail, updated_at)
VALUES (%s, %s, %s, %s, %s, now())
ON CONFLICT (target, product_id, aspect) DO UPDATE SET state = EXCLUDED.state, detail = EXCLUDED.detail,
    updated_at = now()
"""


def save_state(
    conn: psycopg.Connection[Any], target: str, product_id: str, aspect: str, state: str, detail: Mapping[str, Any]
) -> None:
    """Record the last outcome of ``target`` for one product and aspect."""
    conn.execute(_SAVE_STATE, (target, product_id, aspect, state, Jsonb(dict(detail))))


def states(conn: psycopg.Connection[Any], product_id: str | None = None) -> list[TargetState]:
    """Every target state row (of one product when given), ordered."""
    where, params = ("WHERE product_id = %s", (product_id,)) if product_id is not None else ("", ())
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT * FROM provisioner_target_state {where} ORDER BY product_id, target, aspect",
            params,
        )
        return [
            TargetState(r["target"], r["product_id"], r["aspect"], r["state"], r["detail"], r["updated_at"])
            for r in cur.fetchall()
        ]


def grants_held(conn: psycopg.Connection[Any], target: str, consumer_id: str) -> list[TargetGrantRecord]:
    """The reads ``target`` granted ``consumer_id``."""
    return _grants(conn, "target = %s AND consumer_id = %s", (target, consumer_id))


def grants_on(conn: psycopg.Connection[Any], target: str, producer_id: str) -> list[TargetGrantRecord]:
    """The reads ``target`` granted anyone on ``producer_id``'s resources."""
    return _grants(conn, "target = %s AND producer_id = %s", (target, producer_id))


def replace_held(
    conn: psycopg.Connection[Any], target: str, consumer_id: str, held: Sequence[TargetGrantRecord]
) -> None:
    """Make ``held`` the complete set of reads ``target`` granted ``consumer_id`` (call inside a transaction)."""
    conn.execute("DELETE FROM provisioner_target_grants WHERE target = %s AND consumer_id = %s", (target, consumer_id))
    for g in held:
        conn.execute(
            "INSERT INTO provisioner_target_grants (target, consumer_id, producer_id, resource, principal) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (target, consumer_id, g.producer_id, g.resource, g.principal),
        )


def forget_grants_on(conn: psycopg.Connection[Any], target: str, producer_id: str) -> None:
    """Forget every read ``target`` granted on ``producer_id``'s resources (after they were removed)."""
    conn.execute("DELETE FROM provisioner_target_grants WHERE target = %s AND producer_id = %s", (target, producer_id))


def _grants(conn: psycopg.Connection[Any], where: str, params: Sequence[object]) -> list[TargetGrantRecord]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(
            f"SELECT * FROM provisioner_target_grants WHERE {where} ORDER BY consumer_id, producer_id, resource",
            params,
        )
        return [
            TargetGrantRecord(r["target"], r["consumer_id"], r["producer_id"], r["resource"], r["principal"])
            for r in cur.fetchall()
        ]
