"""Grant decisions (``provisioner_grants``), approved ports that wait (``provisioner_grant_waits``) and each output
port's last tokenization outcome (``provisioner_tokenize_outcomes``): migrations 003 and 009."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from provisioner.persistence.records import GrantRecord, GrantWait
from provisioner.persistence.rows import select_records

# An unchanged decision is not written again (no dead tuple, no WAL for a converged consumer).
_UPSERT_GRANT = """
INSERT INTO provisioner_grants (consumer_id, output_port_id, producer_id, producer_namespace,
                                output_port_namespace, tokenize_run_id, tokenize_note)
VALUES (%s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (consumer_id, output_port_id) DO UPDATE SET
    producer_id = EXCLUDED.producer_id, producer_namespace = EXCLUDED.producer_namespace,
    output_port_namespace = EXCLUDED.output_port_namespace,
    tokenize_run_id = EXCLUDED.tokenize_run_id, tokenize_note = EXCLUDED.tokenize_note
WHERE (provisioner_grants.producer_id, provisioner_grants.producer_namespace,
       provisioner_grants.output_port_namespace, provisioner_grants.tokenize_run_id,
       provisioner_grants.tokenize_note)
      IS DISTINCT FROM (EXCLUDED.producer_id, EXCLUDED.producer_namespace,
                        EXCLUDED.output_port_namespace, EXCLUDED.tokenize_run_id,
                        EXCLUDED.tokenize_note)
"""

# A port that keeps waiting keeps its ``since``.
_UPSERT_WAIT = """
INSERT INTO provisioner_grant_waits (consumer_id, output_port_id, producer_id, producer_namespace,
                                     output_port_namespace, reason)
VALUES (%s, %s, %s, %s, %s, %s)
ON CONFLICT (consumer_id, output_port_id) DO UPDATE SET producer_id = EXCLUDED.producer_id,
    producer_namespace = EXCLUDED.producer_namespace,
    output_port_namespace = EXCLUDED.output_port_namespace, reason = EXCLUDED.reason
"""

_RECORD_OUTCOME = """
INSERT INTO provisioner_tokenize_outcomes
    (output_port_id, producer_id, status, run_id, rows_changed, error, finished_at)
VALUES (%s, %s, %s, %s, %s, %s, now())
ON CONFLICT (output_port_id) DO UPDATE SET producer_id = EXCLUDED.producer_id,
    status = EXCLUDED.status, run_id = EXCLUDED.run_id, rows_changed = EXCLUDED.rows_changed,
    error = EXCLUDED.error, finished_at = now()
"""


# -- grant decisions ---------------------------------------------------------------------------------------------


def grants_of(conn: psycopg.Connection[Any], consumer_id: str) -> list[GrantRecord]:
    """The grant decisions of one consumer, by output port."""
    return select_records(
        conn,
        GrantRecord,
        "SELECT * FROM provisioner_grants WHERE consumer_id = %s ORDER BY output_port_id",
        [consumer_id],
    )


def all_grants(conn: psycopg.Connection[Any]) -> list[GrantRecord]:
    """Every grant decision."""
    return select_records(conn, GrantRecord, "SELECT * FROM provisioner_grants ORDER BY consumer_id, output_port_id")


def consumers_of(conn: psycopg.Connection[Any], producer_id: str) -> list[str]:
    """Consumers holding a grant decision on ``producer_id``."""
    rows = conn.execute(
        "SELECT DISTINCT consumer_id FROM provisioner_grants WHERE producer_id = %s ORDER BY 1", (producer_id,)
    ).fetchall()
    return [r[0] for r in rows]


def delete_grants_except(conn: psycopg.Connection[Any], consumer_id: str, keep: Sequence[str]) -> None:
    """Forget the consumer's decisions on every output port but ``keep``."""
    conn.execute(
        "DELETE FROM provisioner_grants WHERE consumer_id = %s AND NOT (output_port_id = ANY(%s))",
        (consumer_id, list(keep)),
    )


def upsert_grants(conn: psycopg.Connection[Any], consumer_id: str, grants: Sequence[GrantRecord]) -> None:
    """Record (or update) decisions of ``consumer_id``."""
    for g in grants:
        conn.execute(
            _UPSERT_GRANT,
            (
                consumer_id,
                g.output_port_id,
                g.producer_id,
                g.producer_namespace,
                g.output_port_namespace,
                g.tokenize_run_id,
                g.tokenize_note,
            ),
        )


# -- ports waiting for their grant -------------------------------------------------------------------------------


def replace_waits(conn: psycopg.Connection[Any], consumer_id: str, waits: Sequence[GrantWait]) -> None:
    """Make ``waits`` the consumer's complete set of waiting ports (call inside a transaction)."""
    conn.execute(
        "DELETE FROM provisioner_grant_waits WHERE consumer_id = %s AND NOT (output_port_id = ANY(%s))",
        (consumer_id, [w.output_port_id for w in waits]),
    )
    for w in waits:
        conn.execute(
            _UPSERT_WAIT,
            (consumer_id, w.output_port_id, w.producer_id, w.producer_namespace, w.output_port_namespace, w.reason),
        )


def all_waits(conn: psycopg.Connection[Any]) -> list[GrantWait]:
    """Every approved port that waits for its grant, oldest first."""
    return select_records(
        conn, GrantWait, "SELECT * FROM provisioner_grant_waits ORDER BY since, consumer_id, output_port_id"
    )


# -- last tokenization outcome per output port -------------------------------------------------------------------


def record_tokenize_outcome(
    conn: psycopg.Connection[Any],
    output_port_id: str,
    producer_id: str,
    status: str,
    run_id: str | None,
    rows: int,
    error: str | None,
) -> None:
    """Remember the last tokenization outcome of an output port."""
    conn.execute(_RECORD_OUTCOME, (output_port_id, producer_id, status, run_id, rows, error))


def tokenize_outcomes(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Last tokenization outcome per output port id."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SELECT * FROM provisioner_tokenize_outcomes")
        return {r["output_port_id"]: dict(r) for r in cur.fetchall()}
