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
    (output_port_id, producer_id, status, run_id, error, finished_at)
VALUES (%s, %s, %s, %s, %s, now())
ON CONFLICT (output_port_id) DO UPDATE SET producer_id = EXCLUDED.producer_id,
    status = EXCLUDED.status, run_id = EXCLUDED.run_id, error = EXCLUDED.error, finished_at = now()
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
    error: str | None,
) -> None:
    """Remember the last tokenization outcome of an output port: its run (which holds the counts) and verdict."""
    conn.execute(_RECORD_OUTCOME, (output_port_id, producer_id, status, run_id, error))


#: The row count is the run's (migration 015): 0 for an outcome without a run, or whose run is not in this database.
_OUTCOMES = """
SELECT o.*, COALESCE(t.total_rows, 0) AS rows_changed
FROM provisioner_tokenize_outcomes o
LEFT JOIN tokenize_runs t ON t.run_id::text = o.run_id
"""


def tokenize_outcomes(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Last tokenization outcome per output port id, with ``rows_changed`` read from its run record."""
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(_OUTCOMES)
        return {r["output_port_id"]: dict(r) for r in cur.fetchall()}
