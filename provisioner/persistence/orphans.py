"""``provisioner_orphan_users`` (migration 008): store users named like products that belong to no product, with
when each was first seen an orphan. Which users are orphans, and removing them, is reconcile/orphans.py's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg


def note_orphans(conn: psycopg.Connection[Any], orphans: Sequence[str], grace_seconds: int | None) -> list[str]:
    """Make ``orphans`` the remembered set (a new one is first seen now), and return those orphaned for at least
    ``grace_seconds``, sorted (None: none is due). Call inside a transaction."""
    names = list(orphans)
    conn.execute("DELETE FROM provisioner_orphan_users WHERE NOT (user_name = ANY(%s))", (names,))
    conn.execute(
        "INSERT INTO provisioner_orphan_users (user_name) SELECT unnest(%s::text[]) "
        "ON CONFLICT (user_name) DO UPDATE SET last_seen = now()",
        (names,),
    )
    if grace_seconds is None:
        return []
    rows = conn.execute(
        "SELECT user_name FROM provisioner_orphan_users "
        "WHERE first_seen <= now() - make_interval(secs => %s) ORDER BY user_name",
        (grace_seconds,),
    ).fetchall()
    return [r[0] for r in rows]


def forget_orphan(conn: psycopg.Connection[Any], user_name: str) -> None:
    """The user was removed from the store: forget it."""
    conn.execute("DELETE FROM provisioner_orphan_users WHERE user_name = %s", (user_name,))
