"""A run never says SUCCESS while plaintext is left (issue 13 §4), on both rewrite paths, on a real server.

Each case was seen in a fault run: a trigger that puts the old value back, row-level security hiding rows from the
tenant role, the table renamed and replaced while the run waited for its lock; and an administrator's cancel that
was reported as a statement_timeout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import psycopg
import pytest

from provisioner.tokenize import RunRecorder, RunResult, TokenFormat, TokenizeOptions, Tokenizer, plan, run
from tests.tokenize.conftest import KEY, add_trigger, column, create_people, snapshot

PEOPLE = {"tenant": "t1", "schema": "public", "table": "people", "columns": ["email", "phone"]}
REFERENCE = Tokenizer(TokenFormat(), KEY)
ROWS = [(f"user{i}@example.com", f"+32 470 {i:06d}") for i in range(1, 3001)]  # ~25 pages: several batches
# The two rewrite paths: one UPDATE, and page batches whose tokens a helper connection computes.
PATHS = {
    "one UPDATE": TokenizeOptions(key=KEY, lock_timeout_ms=10_000, batch_pages=0),
    "batched": TokenizeOptions(key=KEY, lock_timeout_ms=10_000, batch_pages=3),
}
CONNECTIONS = {"one UPDATE": 1, "batched": 2}  # the writer, and for batches the helper


@pytest.fixture(params=list(PATHS))
def path(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def counting(url: str, opened: list[str]) -> Callable[[str], psycopg.Connection]:
    """A tenant connector that records each connection it opens (which tells the rewrite path taken)."""

    def connect(tenant: str) -> psycopg.Connection:
        opened.append(tenant)
        return psycopg.connect(url)

    return connect


def plaintext(url: str, table: str = "people") -> int:
    """Values of the policy's columns that are not tokens, as a person checking the table would count them."""
    values = [v for name in ("email", "phone") for v in column(url, name, table)]
    return sum(1 for v in values if v and not REFERENCE.is_token(v))


# -- a BEFORE UPDATE trigger that puts the old value back --------------------------------------------------------


def test_a_trigger_that_puts_the_old_value_back_fails_the_table(pg_empty_url: str, path: str) -> None:
    create_people(pg_empty_url, ROWS)
    add_trigger(pg_empty_url, "NEW.email := OLD.email; RETURN NEW;")  # every row still counts as updated
    before = snapshot(pg_empty_url)
    opened: list[str] = []
    result = run(plan(PEOPLE, PATHS[path]), connect=counting(pg_empty_url, opened))
    assert len(opened) == CONNECTIONS[path]
    assert result.status == "FAILURE" and not result.retryable
    assert result.error == (
        "table public.people: after the rewrite 3000 values were still not tokens (email: 3000); a trigger or rule"
        " on the table must have changed them back. The transaction was rolled back, nothing in it was changed;"
        " fix or disable that trigger or rule, then rerun"
    )
    assert result.total_rows == 0 and result.tables == ()
    assert snapshot(pg_empty_url) == before  # phone was tokenized in the same transaction: rolled back too


# -- row-level security ----------------------------------------------------------------------------------------


@contextmanager
def tenant_role(url: str, *, owner: bool = False, bypassrls: bool = False) -> Iterator[str]:
    """A login role for the tenant with SELECT and UPDATE on ``people`` (or owning it); dropped afterwards."""
    role = f"tenant_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN {'BYPASSRLS' if bypassrls else ''}")
        conn.execute(f"GRANT SELECT, UPDATE ON people TO {role}")
        if owner:
            conn.execute(f"ALTER TABLE people OWNER TO {role}")
    try:
        yield role
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"REASSIGN OWNED BY {role} TO current_user")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def hide_even_rows(conn: psycopg.Connection, force: bool = False) -> None:
    """Row-level security with a policy that shows the tenant only odd ids (for reading and writing alike)."""
    conn.execute("ALTER TABLE people ENABLE ROW LEVEL SECURITY")
    if force:
        conn.execute("ALTER TABLE people FORCE ROW LEVEL SECURITY")
    conn.execute("CREATE POLICY odd_only ON people USING (id % 2 = 1)")


@pytest.mark.parametrize(
    ("owner", "force", "message"),
    [
        (False, False, "has row-level security enabled and role {role} does not bypass it"),
        (True, True, "has row-level security enabled and forced (FORCE ROW LEVEL SECURITY applies it to the owner"),
    ],
    ids=["other role", "owner, forced"],
)
def test_row_level_security_hiding_rows_is_refused_before_any_write(
    pg_empty_url: str, path: str, owner: bool, force: bool, message: str
) -> None:
    create_people(pg_empty_url, ROWS)
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        hide_even_rows(conn, force=force)
    before = snapshot(pg_empty_url)
    with tenant_role(pg_empty_url, owner=owner) as role:
        as_tenant = psycopg.conninfo.make_conninfo(pg_empty_url, user=role)
        result = run(plan(PEOPLE, PATHS[path]), connect=as_tenant)
        dry = run(plan(PEOPLE, PATHS[path]), dry_run=True, connect=as_tenant)  # would count only the rows shown
    assert result.status == "FAILURE" and not result.retryable
    assert (result.error or "").startswith(f"table public.people {message.format(role=role)}"), result.error
    assert "rows its policies hide" in (result.error or "")
    assert (dry.status, dry.error) == ("FAILURE", result.error)
    assert snapshot(pg_empty_url) == before


@pytest.mark.parametrize(("owner", "bypassrls"), [(True, False), (False, True)], ids=["owner", "BYPASSRLS"])
def test_roles_that_bypass_row_level_security_tokenize_every_row(
    pg_empty_url: str, path: str, owner: bool, bypassrls: bool
) -> None:
    create_people(pg_empty_url, ROWS)
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        hide_even_rows(conn)
    with tenant_role(pg_empty_url, owner=owner, bypassrls=bypassrls) as role:
        opened: list[str] = []
        as_tenant = psycopg.conninfo.make_conninfo(pg_empty_url, user=role)
        result = run(plan(PEOPLE, PATHS[path]), connect=counting(as_tenant, opened))
    assert result.ok, result.error
    assert len(opened) == CONNECTIONS[path]
    assert result.total_rows == 3000 and plaintext(pg_empty_url) == 0


# -- changes made while the run waits for its lock ---------------------------------------------------------------


@contextmanager
def waiting_for_its_lock(
    url: str, options: TokenizeOptions, connect: Callable[[str], psycopg.Connection] | str | None = None
) -> Iterator[tuple[psycopg.Connection, Future[RunResult]]]:
    """A run started in a thread while another session holds a writer's lock on ``people``.

    Yields that session, inside its transaction, once the run waits for its lock; the session commits on leaving,
    which lets the run go on. The future holds the run's result.
    """
    with ThreadPoolExecutor(1) as pool, psycopg.connect(url) as holder:
        holder.execute("LOCK TABLE people IN ROW EXCLUSIVE MODE")  # what any open writing transaction holds
        running = pool.submit(run, plan(PEOPLE, options), connect=connect or url)
        waiting = "SELECT 1 FROM pg_locks WHERE relation = 'people'::regclass AND mode = 'ShareRowExclusiveLock'"
        with psycopg.connect(url, autocommit=True) as watcher:
            while not watcher.execute(waiting + " AND NOT granted").fetchone():
                assert not running.done(), running.result().error
                time.sleep(0.01)
        yield holder, running
        holder.commit()


def test_a_table_replaced_while_the_run_waits_for_its_lock_is_left_alone(pg_empty_url: str, path: str) -> None:
    # The fault run's case: the old table was renamed and a larger one took its name. On the batched path the pages
    # were counted on the old relation and the UPDATE ran on the new one: SUCCESS over 199,923 plaintext rows.
    create_people(pg_empty_url, ROWS[:1000])  # ~8 pages: still batched
    with waiting_for_its_lock(pg_empty_url, PATHS[path]) as (holder, running):
        holder.execute("ALTER TABLE people RENAME TO people_old")
        holder.execute("CREATE TABLE people (LIKE people_old INCLUDING ALL)")
        holder.execute(
            "INSERT INTO people (id, email, phone) SELECT i, 'new' || i || '@example.com', '+1 ' || i"
            " FROM generate_series(1, 6000) AS i"  # ~50 pages
        )
    result = running.result()
    assert not (result.ok and plaintext(pg_empty_url)), "SUCCESS with plaintext left"
    assert result.status == "FAILURE" and result.retryable, result.error
    assert result.error == (
        "table public.people was replaced (renamed, or dropped and created again) while the run waited for its lock;"
        " nothing in it was changed. Rerun to tokenize the table that now has this name"
    )
    assert column(pg_empty_url, "email", "people_old") == [e for e, _ in ROWS[:1000]]
    assert column(pg_empty_url, "email") == [f"new{i}@example.com" for i in range(1, 6001)]
    # The retry the error asks for tokenizes the table that now has the name, all of it.
    again = run(plan(PEOPLE, PATHS[path]), connect=pg_empty_url)
    assert again.ok and again.total_rows == 6000 and plaintext(pg_empty_url) == 0


def test_row_level_security_enabled_while_the_run_waits_for_its_lock_is_refused(pg_empty_url: str, path: str) -> None:
    create_people(pg_empty_url, ROWS)
    with tenant_role(pg_empty_url) as role:
        as_tenant = psycopg.conninfo.make_conninfo(pg_empty_url, user=role)
        with waiting_for_its_lock(pg_empty_url, PATHS[path], as_tenant) as (holder, running):
            hide_even_rows(holder)  # after the preflight found none
        result = running.result()
    assert result.status == "FAILURE", "SUCCESS with the even rows in plaintext"
    assert f"has row-level security enabled and role {role} does not bypass it" in (result.error or "")
    assert plaintext(pg_empty_url) == 6000


# -- an administrator's cancel -----------------------------------------------------------------------------------


def test_a_run_cancelled_by_an_administrator_is_reported_as_cancelled(pg_empty_url: str, path: str) -> None:
    create_people(pg_empty_url, ROWS)
    add_trigger(pg_empty_url, "IF NEW.id = 1500 THEN PERFORM pg_sleep(30); END IF; RETURN NEW;")
    before = snapshot(pg_empty_url)
    recorder = RunRecorder(pg_empty_url)
    with ThreadPoolExecutor(1) as pool, psycopg.connect(pg_empty_url, autocommit=True) as admin:
        running = pool.submit(run, plan(PEOPLE, PATHS[path]), connect=pg_empty_url, recorder=recorder)
        sleeping = (
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND wait_event = 'PgSleep'"
            " AND pid <> pg_backend_pid()"
        )
        while not (found := admin.execute(sleeping).fetchone()):
            assert not running.done(), running.result().error
            time.sleep(0.01)
        assert admin.execute("SELECT pg_cancel_backend(%s)", found).fetchone() == (True,)
        result = running.result()
    assert result.status == "FAILURE" and not result.retryable
    assert result.error == (
        "table public.people: cancelled by an administrator (pg_cancel_backend: canceling statement due to user"
        " request); nothing in it was changed. Rerun when it should go on"
    )
    record = recorder.get(result.run_id)
    assert record is not None and (record.state, record.result, record.error) == ("COMPLETE", "FAILURE", result.error)
    assert snapshot(pg_empty_url) == before


def test_a_statement_timeout_is_still_reported_as_one(pg_empty_url: str) -> None:
    create_people(pg_empty_url, ROWS)
    add_trigger(pg_empty_url, "IF NEW.id = 1500 THEN PERFORM pg_sleep(30); END IF; RETURN NEW;")
    result = run(plan(PEOPLE, TokenizeOptions(key=KEY, batch_pages=0, statement_timeout_ms=300)), connect=pg_empty_url)
    assert result.status == "FAILURE"
    assert result.error == "table public.people: cancelled after statement_timeout=300ms; nothing in it was changed"
