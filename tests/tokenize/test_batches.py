"""The batched rewrite of tables larger than one batch (a helper connection computes tokens), on a real server."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest

from provisioner.tokenize import RunResult, TokenFormat, TokenizeOptions, Tokenizer, plan, run
from tests.tokenize.conftest import KEY, add_trigger, column, create_people, snapshot

PEOPLE = {"tenant": "t1", "schema": "public", "table": "people", "columns": ["email", "phone"]}
REFERENCE = Tokenizer(TokenFormat(), KEY)
BATCHED = TokenizeOptions(key=KEY, lock_timeout_ms=1000, batch_pages=3)


def mixed_rows(count: int) -> list[tuple[str | None, str | None]]:
    """Plain values, tokens already there, NULLs, empty strings and non-ASCII text, spread over every page."""
    rows: list[tuple[str | None, str | None]] = []
    for i in range(count):
        email = [f"user{i}@example.com", REFERENCE.token(f"old{i}"), None, "", f"Zoë {i} ✓ 😀"][i % 5]
        phone = [f"+32 470 {i:06d}", None, f"☎ {i}", REFERENCE.token(f"tel{i}"), ""][i % 7 % 5]
        rows.append((email, phone))
    return rows


def pages(url: str, table: str = "people") -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT pg_relation_size(%s::regclass) / 8192", (table,)).fetchone()
        assert row
        return int(row[0])


def test_batched_rewrite_equals_one_statement_and_the_reference(pg_empty_url: str) -> None:
    rows = mixed_rows(3000)
    create_people(pg_empty_url, rows)
    create_people(pg_empty_url, rows, table="twin")
    size = pages(pg_empty_url)
    assert size > 3 * BATCHED.batch_pages  # several batches, so batches meet pages they did not read

    batched = run(plan(PEOPLE, BATCHED), connect=pg_empty_url)
    single = run(
        plan({**PEOPLE, "table": "twin"}, TokenizeOptions(key=KEY, batch_pages=0)),
        connect=pg_empty_url,
    )
    assert batched.ok and single.ok, (batched.error, single.error)
    assert batched.tables[0].batches == -(-size // BATCHED.batch_pages)
    assert single.tables[0].batches == 1
    assert batched.total_rows == single.total_rows > 0
    assert list(batched.rows_by_column.values()) == list(single.rows_by_column.values())
    for name in ("email", "phone"):
        expected = [REFERENCE.tokenize(r[0 if name == "email" else 1]) for r in rows]
        assert column(pg_empty_url, name) == expected
        assert column(pg_empty_url, name, table="twin") == expected

    before = snapshot(pg_empty_url)
    again = run(plan(PEOPLE, BATCHED), connect=pg_empty_url)
    assert again.ok and again.total_rows == 0 and again.tables[0].batches >= batched.tables[0].batches
    assert snapshot(pg_empty_url) == before


def test_helper_connection_is_closed_after_the_run(pg_empty_url: str) -> None:
    create_people(pg_empty_url, mixed_rows(2000))
    opened: list[psycopg.Connection] = []

    def connect(_tenant: str) -> psycopg.Connection:
        opened.append(psycopg.connect(pg_empty_url))
        return opened[-1]

    assert run(plan(PEOPLE, BATCHED), connect=connect).ok
    assert len(opened) == 2  # the writer and one helper
    assert all(c.closed for c in opened)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "IF NEW.id = 2950 THEN RAISE EXCEPTION 'injected failure at row %', NEW.id; END IF; RETURN NEW;",
            "injected failure at row 2950",
        ),
        # A trigger that silently skips a row would leave a value untokenized: the batch's count catches it.
        (
            "IF NEW.id = 2950 THEN RETURN NULL; END IF; RETURN NEW;",
            r"in pages \d+-\d+, (\d+) rows needed tokens but (\d+) were rewritten \(a trigger or a row-level security",
        ),
    ],
    ids=["raises", "skips"],
)
def test_failure_in_a_late_batch_leaves_the_table_byte_identical(pg_empty_url: str, body: str, message: str) -> None:
    create_people(pg_empty_url, [(f"user{i}@example.com", f"+32 {i}") for i in range(1, 3001)])
    add_trigger(pg_empty_url, body)
    before = snapshot(pg_empty_url)
    result = run(plan(PEOPLE, BATCHED), connect=pg_empty_url)
    assert result.status == "FAILURE"
    found = re.search(message, result.error or "")
    assert found and "public.people" in (result.error or ""), result.error
    if found.groups():
        assert int(found[2]) == int(found[1]) - 1  # the one row the trigger skipped
    assert result.total_rows == 0
    assert snapshot(pg_empty_url) == before


def test_without_a_second_connection_the_table_is_rewritten_in_one_update(
    pg_empty_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    rows = mixed_rows(2000)
    create_people(pg_empty_url, rows)
    calls: list[int] = []

    def connect(_tenant: str) -> psycopg.Connection:
        calls.append(1)
        if len(calls) > 1:  # e.g. the tenant role's CONNECTION LIMIT 1
            raise psycopg.OperationalError("too many connections for role (injected)")
        return psycopg.connect(pg_empty_url)

    with caplog.at_level("WARNING", logger="provisioner.tokenize"):
        result = run(plan(PEOPLE, BATCHED), connect=connect)
    assert result.ok, result.error
    assert len(calls) == 2 and result.tables[0].batches == 1
    assert column(pg_empty_url, "email") == [REFERENCE.tokenize(e) for e, _ in rows]
    warned = [r for r in caplog.records if getattr(r, "event", None) == "tokenize.helper_unavailable"]
    assert warned and "too many connections" in warned[0].fields["error"]  # type: ignore[attr-defined]


def test_statement_timeout_bounds_the_whole_batched_table(pg_empty_url: str) -> None:
    create_people(pg_empty_url, mixed_rows(3000))
    before = snapshot(pg_empty_url)
    slow = TokenizeOptions(key=KEY, batch_pages=1, statement_timeout_ms=1)
    result = run(plan(PEOPLE, slow), connect=pg_empty_url)
    assert result.status == "FAILURE"
    assert "cancelled after statement_timeout=1ms" in (result.error or "")
    assert snapshot(pg_empty_url) == before


def test_statement_timeout_bounds_the_table_even_when_every_statement_is_quick(pg_empty_url: str) -> None:
    # Two rows in different batches each hold their batch's UPDATE for 0.3 s: no statement reaches 500 ms, the
    # table as a whole does. Only the check between batches can stop it.
    create_people(pg_empty_url, [(f"user{i}@example.com", f"+32 {i}") for i in range(1, 3001)])
    add_trigger(pg_empty_url, "IF NEW.id IN (500, 1500) THEN PERFORM pg_sleep(0.3); END IF; RETURN NEW;")
    before = snapshot(pg_empty_url)
    result = run(plan(PEOPLE, TokenizeOptions(key=KEY, batch_pages=3, statement_timeout_ms=500)), connect=pg_empty_url)
    assert result.status == "FAILURE"
    assert (result.error or "").startswith("table public.people: cancelled after statement_timeout=500ms")
    assert snapshot(pg_empty_url) == before


def _partitioned(url: str, rows: list[tuple[str | None, str | None]]) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int, email text, phone text, age int) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE people_low PARTITION OF people FOR VALUES FROM (0) TO (1000)")
        conn.execute("CREATE TABLE people_high PARTITION OF people FOR VALUES FROM (1000) TO (MAXVALUE)")
        with conn.cursor() as cur, cur.copy("COPY people (id, email, phone) FROM STDIN") as copy:
            for i, (email, phone) in enumerate(rows, start=1):
                copy.write_row((i, email, phone))


def _inherited(url: str, rows: list[tuple[str | None, str | None]]) -> None:
    create_people(url, rows[:1000])
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE people_child () INHERITS (people)")
        with conn.cursor() as cur, cur.copy("COPY people_child (id, email, phone) FROM STDIN") as copy:
            for i, (email, phone) in enumerate(rows[1000:], start=1001):
                copy.write_row((i, email, phone))


@pytest.mark.parametrize("build", [_partitioned, _inherited], ids=["partitioned", "inheritance"])
def test_tables_with_children_are_rewritten_in_one_statement(
    pg_empty_url: str, build: Callable[[str, list[tuple[str | None, str | None]]], None]
) -> None:
    # Children repeat each other's ctids (and the parent's), so a ctid cannot name a row: no batches there.
    rows = mixed_rows(2000)
    build(pg_empty_url, rows)
    result = run(plan(PEOPLE, BATCHED), connect=pg_empty_url)
    assert result.ok, result.error
    assert result.tables[0].batches == 1
    assert column(pg_empty_url, "email") == [REFERENCE.tokenize(e) for e, _ in rows]
    assert column(pg_empty_url, "phone") == [REFERENCE.tokenize(p) for _, p in rows]


@contextmanager
def _held_in_a_middle_batch(url: str) -> Iterator[tuple[Future[RunResult], psycopg.Connection]]:
    """A batched run of 3,000 rows started in a thread and held by a trigger in a middle batch for a second,
    with another session to act meanwhile."""
    create_people(url, [(f"user{i}@example.com", f"+32 {i}") for i in range(1, 3001)])
    add_trigger(url, "IF NEW.id = 1500 THEN PERFORM pg_sleep(1); END IF; RETURN NEW;")
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(run, plan(PEOPLE, BATCHED), connect=url)
        with psycopg.connect(url, autocommit=True) as other:
            waiting = "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'"
            while not other.execute(waiting).fetchone():
                assert not running.done(), running.result().error
                time.sleep(0.01)
            yield running, other


def test_writers_wait_for_the_whole_batched_rewrite(pg_empty_url: str) -> None:
    with _held_in_a_middle_batch(pg_empty_url) as (running, writer):
        writer.execute("SET lock_timeout = '100ms'")
        with pytest.raises(psycopg.errors.LockNotAvailable):
            writer.execute("UPDATE people SET email = 'late@example.com' WHERE id = 2999")
    result = running.result()
    assert result.ok and result.total_rows == 3000 and result.tables[0].batches > 1
    assert column(pg_empty_url, "email")[2998] == REFERENCE.token("user2999@example.com")


def test_losing_the_helper_mid_table_rolls_back_retryably(pg_empty_url: str) -> None:
    with _held_in_a_middle_batch(pg_empty_url) as (running, admin):
        before = snapshot(pg_empty_url)  # what is committed: the run's rewrite so far is not
        # The helper is the session that imported the writer's snapshot: it has read its batches with array_agg.
        killed = admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query LIKE '%array_agg%' AND pid <> pg_backend_pid()"
        ).fetchall()
        assert killed == [(True,)]
    result = running.result()
    assert result.status == "FAILURE" and result.retryable, result.error
    assert "public.people: terminating connection" in (result.error or ""), result.error
    assert snapshot(pg_empty_url) == before
