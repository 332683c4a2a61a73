"""The room's migrations (``migrations/NNN_name.sql``) and their ledger, ``provisioner_migrations``.

``provisioner.db.migrate`` applies them in order, each in its own transaction, under an advisory lock; a version is
the file's name without ``.sql`` and is recorded here once applied.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import psycopg


def migration_files() -> list[tuple[str, str]]:
    """The room's migrations as ``(version, sql)``, in order.

    A file keeps its name for ever: a renamed one would be applied again by every database.
    """
    folder = resources.files("provisioner") / "persistence" / "migrations"
    files = sorted((p for p in folder.iterdir() if p.name.endswith(".sql")), key=lambda p: p.name)
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def ensure_ledger(conn: psycopg.Connection[Any]) -> None:
    """Create ``provisioner_migrations`` when this database has none yet."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS provisioner_migrations ("
        " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )


def applied_versions(conn: psycopg.Connection[Any]) -> set[str]:
    """The versions this database has applied (empty when it has no ledger yet)."""
    if not has_table(conn, "provisioner_migrations"):
        return set()
    return {r[0] for r in conn.execute("SELECT version FROM provisioner_migrations")}


def mark_applied(conn: psycopg.Connection[Any], version: str) -> None:
    """Record ``version`` as applied (in the transaction that applied it)."""
    conn.execute("INSERT INTO provisioner_migrations (version) VALUES (%s)", (version,))


def has_table(conn: psycopg.Connection[Any], name: str) -> bool:
    """True when the table (or any relation) ``name`` exists in the search path."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])
