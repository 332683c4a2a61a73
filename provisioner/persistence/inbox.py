"""The webhook inbox (``provisioner_inbox``, ``provisioner_inbox_keys``; migrations 002, 004, 005 and 007).

A delivery is recorded, deduplicated and its jobs deferred by the SQL function ``provisioner_intake``, in one
statement; ``provisioner_intake_batch`` runs it for many deliveries in one transaction (the intake's group commit).
"""

from __future__ import annotations

from typing import Any

import psycopg

#: What the intake learns of one recorded delivery: (inbox id, outcome, new job ids, triggers coalesced).
IntakeRow = tuple[int, str, list[int], int]

_BATCH = "SELECT inbox_id, outcome, job_ids, coalesced FROM provisioner_intake_batch(%s::jsonb) ORDER BY n"


def delivery_item(head: str, body: str, jobs: str) -> str:
    """One delivery as ``provisioner_intake_batch`` takes it: the JSON array of ``provisioner_intake``'s arguments.

    ``head`` is the JSON array of the first seven (generation, delivery id, dedup key, dedup window, event type,
    entity, ignored reason); ``body`` and ``jobs`` are JSON texts spliced in as they are (never re-encoded).
    """
    return f"{head[:-1]},{body},{jobs}]"


async def record_deliveries(conn: psycopg.AsyncConnection[Any], items: list[str]) -> list[IntakeRow]:
    """Record ``items`` (``delivery_item`` texts) in one statement, so one transaction on an autocommit connection;
    the rows in the same order."""
    cur = await conn.execute(_BATCH, ("[" + ",".join(items) + "]",))
    return [(int(r[0]), str(r[1]), list(r[2]), int(r[3])) for r in await cur.fetchall()]
