"""Tables and tenant roles for the profiling tests (real PostgreSQL)."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

import psycopg
from psycopg import sql


def create_table(url: str, name: str, columns: str, rows: Iterable[Sequence[object]]) -> None:
    """``CREATE TABLE name (columns)`` and COPY ``rows`` into it, as the database owner."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} ({columns})")
        with conn.cursor() as cur, cur.copy(f"COPY {name} FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def tenant_role(url: str, grants: Sequence[str]) -> str:
    """A new LOGIN role with ``grants`` (``GRANT <g> TO role`` each); its connection string."""
    role = f"tenant_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for grant in grants:
            conn.execute(sql.SQL(f"GRANT {grant} TO {{}}").format(sql.Identifier(role)))  # type: ignore[arg-type]
    return psycopg.conninfo.make_conninfo(url, user=role)


def people(n: int, *, start: int = 0) -> list[tuple[object, ...]]:
    """Rows of ``(id, email, tier, notes, age)``: every 10th email NULL, every 7th note holds an address."""
    rows = []
    for i in range(start, start + n):
        email = None if i % 10 == 0 else f"person{i}@example.com"
        notes = f"asked person{i}.b@mail.nl to call back" if i % 7 == 0 else "no contact yet"
        rows.append((i, email, ("gold", "silver", "bronze")[i % 3], notes, 18 + i % 60))
    return rows


PEOPLE = "id int PRIMARY KEY, email text, tier text, notes text, age int"
