"""Helpers for the tokenization tests: a key, options, and tables in a fresh database."""

from __future__ import annotations

import psycopg
import pytest

from provisioner.tokenize import TokenFormat, TokenizeOptions

KEY = "test-key-0123456789"


@pytest.fixture
def options() -> TokenizeOptions:
    return TokenizeOptions(format=TokenFormat(), key=KEY, lock_timeout_ms=1000)


def create_people(url: str, rows: list[tuple[str | None, str | None]], table: str = "people") -> None:
    """A table ``table(id, email, phone, age)`` holding ``rows`` as (email, phone)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, email text, phone varchar(64), age int)")
        with conn.cursor() as cur, cur.copy(f"COPY {table} (id, email, phone, age) FROM STDIN") as copy:
            for i, (email, phone) in enumerate(rows, start=1):
                copy.write_row((i, email, phone, 20 + i % 50))


def add_trigger(url: str, body: str, table: str = "people") -> None:
    """A BEFORE UPDATE row trigger on ``table`` that runs the PL/pgSQL ``body`` (to inject failures)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE FUNCTION injected() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {body} END $$")
        conn.execute(f"CREATE TRIGGER injected BEFORE UPDATE ON {table} FOR EACH ROW EXECUTE FUNCTION injected()")


def snapshot(url: str, table: str = "people") -> list[tuple[object, ...]]:
    """Every row with its physical position and inserting transaction: unchanged only if nothing was committed."""
    with psycopg.connect(url) as conn:
        return conn.execute(f"SELECT ctid::text, xmin::text, t.* FROM {table} t ORDER BY id").fetchall()


def column(url: str, name: str, table: str = "people") -> list[str | None]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(f"SELECT {name} FROM {table} ORDER BY id")]
