"""The persistence room against real PostgreSQL: what moved there keeps its shape (issue 14 items 2 and 4)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from provisioner import db
from provisioner.errors import PermanentError
from provisioner.persistence.state import StateStore
from provisioner.tokenize import RunRecorder
from provisioner.tokenize.records import TABLE_COLUMNS


@pytest.fixture
def state(pg_url: str) -> Iterator[StateStore]:
    with db.open_pool(pg_url, max_size=2) as pool:
        yield StateStore(pool, owner=None)


def _only_run(state: StateStore, subject: str) -> dict[str, object]:
    (run,) = state.last_runs(subject)
    return run


def test_recording_writes_one_run_with_its_steps_detail_and_outcome(state: StateStore) -> None:
    with state.recording("product", "p-1") as run:
        assert _only_run(state, "p-1")["status"] == "running"  # recorded when the block starts
        run.namespace = "sales"
        run.step("user")
        run.detail["outcome"] = "provisioned"
    row = _only_run(state, "p-1")
    assert (row["kind"], row["status"], row["namespace"], row["error"]) == ("product", "success", "sales", None)
    assert row["steps"] == ["user"] and row["detail"] == {"outcome": "provisioned"}
    assert row["finished_at"] is not None


def test_a_run_that_learns_its_kind_on_the_way_is_recorded_with_it(state: StateStore) -> None:
    with state.recording("product", "p-4") as run:
        run.kind = "delete"  # what reconcile_product does when it finds the product deleting
    assert _only_run(state, "p-4")["kind"] == "delete"


def test_a_run_whose_outcome_is_skipped_is_recorded_skipped(state: StateStore) -> None:
    with state.recording("access", "c-1") as run:
        run.detail.update(outcome="skipped", reason="the consumer is parked")
    assert _only_run(state, "c-1")["status"] == "skipped"


def test_a_failure_is_recorded_with_its_message_and_raised_again(state: StateStore) -> None:
    with pytest.raises(PermanentError), state.recording("rotate", "p-2") as run:
        run.step("key_rotated")
        raise PermanentError("namespace 'x' is not provisioned here")
    row = _only_run(state, "p-2")
    assert (row["status"], row["error"]) == ("failure", "namespace 'x' is not provisioned here")
    assert row["steps"] == ["key_rotated"]  # what it changed before it failed
    assert row["finished_at"] is not None


def test_an_unexpected_error_is_recorded_with_its_type(state: StateStore) -> None:
    with pytest.raises(KeyError), state.recording("product", "p-3"):
        raise KeyError("bucket")
    assert _only_run(state, "p-3")["error"] == "unexpected error: KeyError: 'bucket'"


# -- migration 015: a port's tokenization outcome names its run; the run holds the counts -------------------------


def test_a_ports_outcome_takes_its_row_count_from_the_run_record(state: StateStore, pg_url: str) -> None:
    recorder = RunRecorder(state.pool)
    run_id, now = str(uuid.uuid4()), datetime.now(UTC)
    recorder.start(run_id=run_id, tenant="t", policy="sales/orders", dry_run=False, tables=["s.c"], started_at=now)
    recorder.finish(
        run_id=run_id,
        result="SUCCESS",
        rows_by_column={"s.c.email": 7},
        total_rows=7,
        error=None,
        finished_at=now,
        duration_ms=1.0,
    )
    state.record_tokenize_outcome("op-1", "p-1", "SUCCESS", run_id, None)
    state.record_tokenize_outcome("op-2", "p-1", "FAILURE", None, "the tenant is unreachable")

    outcomes = state.tokenize_outcomes()
    assert (outcomes["op-1"]["status"], outcomes["op-1"]["rows_changed"]) == ("SUCCESS", 7)
    assert (outcomes["op-2"]["rows_changed"], outcomes["op-2"]["error"]) == (0, "the tenant is unreachable")
    with psycopg.connect(pg_url) as conn:  # one place for the count: the outcome keeps no copy to disagree with
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'provisioner_tokenize_outcomes'"
            )
        }
    assert "rows_changed" not in columns and {"run_id", "status", "error"} <= columns


# -- migration 012: tokenize_runs is versioned, a product's readable prefixes come from its grants -----------------

_OLD_ENGINE_TABLE = """
CREATE TABLE tokenize_runs (
    run_id uuid PRIMARY KEY, tenant text NOT NULL, policy text NOT NULL DEFAULT '', dry_run boolean NOT NULL,
    state text NOT NULL CHECK (state IN ('RUNNING', 'COMPLETE')), result text CHECK (result IN ('SUCCESS', 'FAILURE')),
    tables jsonb NOT NULL DEFAULT '[]'::jsonb, rows_by_column jsonb NOT NULL DEFAULT '{}'::jsonb,
    total_rows bigint NOT NULL DEFAULT 0, error text, started_at timestamptz NOT NULL, finished_at timestamptz,
    duration_ms double precision
)
"""


def _shape(url: str) -> tuple[list[tuple[object, ...]], ...]:
    """Columns (in order, with types, nullability and defaults), constraints and indexes of tokenize_runs."""
    with psycopg.connect(url) as conn:
        columns = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_name = 'tokenize_runs' ORDER BY ordinal_position"
        ).fetchall()
        constraints = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid = 'tokenize_runs'::regclass ORDER BY conname"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tokenize_runs' ORDER BY indexname"
        ).fetchall()
    return columns, constraints, indexes


def test_the_migration_makes_the_table_the_tokenize_library_makes_on_its_own(pg_url: str, pg_empty_url: str) -> None:
    assert RunRecorder(pg_empty_url).last(1) == []  # the library on its own: it creates its table
    assert _shape(pg_url) == _shape(pg_empty_url)
    assert len(_shape(pg_url)[0]) == len(TABLE_COLUMNS)


def test_migration_012_keeps_the_runs_of_a_table_the_engine_made_and_drops_the_copied_prefixes(
    pg_empty_url: str,
) -> None:
    db.migrate(pg_empty_url)
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        # A database as it was before 012: the engine's table made on first use by an older engine, with a run.
        conn.execute("DELETE FROM provisioner_migrations WHERE version = '012_one_source_of_truth'")
        conn.execute("DROP TABLE tokenize_runs")
        conn.execute(_OLD_ENGINE_TABLE)
        conn.execute(
            "INSERT INTO tokenize_runs (run_id, tenant, dry_run, state, started_at)"
            " VALUES ('6f1c1b57-3d2c-4b8e-9a57-0f0f3c1d2e4a', 'sales', false, 'COMPLETE', now())"
        )
        conn.execute("ALTER TABLE provisioner_products ADD COLUMN read_prefixes text[] NOT NULL DEFAULT '{}'")
    assert db.migrate(pg_empty_url) == ["012_one_source_of_truth"]
    (run,) = RunRecorder(pg_empty_url).last(5)
    assert (run.run_id, run.tenant, run.kind, run.detail) == (
        "6f1c1b57-3d2c-4b8e-9a57-0f0f3c1d2e4a",
        "sales",
        "tokenize",
        {},
    )
    with psycopg.connect(pg_empty_url) as conn:
        columns = {
            r[0]
            for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = 'provisioner_products'"
            )
        }
    assert "read_prefixes" not in columns and {"product_id", "access_key_id"} <= columns


# -- only the room runs SQL on the provisioner's tables ---------------------------------------------------------

#: SQL naming one of the provisioner's tables, procrastinate's, or the tokenization runs (prose in docstrings names
#: tables without an SQL keyword before them, so it does not match).
_SQL_ON_TABLES = re.compile(
    r"\b(?:FROM|INTO|UPDATE|JOIN|TABLE|EXISTS|SELECT)\s+(?:provisioner_\w+|procrastinate_\w+|tokenize_runs)\b"
)
PACKAGE = Path(__file__).resolve().parents[1] / "provisioner"
#: The room, and the tokenization library, which writes its own run records (and creates them when used alone).
_ALLOWED = ("persistence/", "tokenize/records.py")


def test_only_the_persistence_room_runs_sql_on_the_provisioners_tables() -> None:
    """import-linter cannot see SQL in strings, so this is the check (the contract keeps psycopg out of reconcile)."""
    found = [
        f"{path.relative_to(PACKAGE)}:{n}: {line.strip()}"
        for path in sorted(PACKAGE.rglob("*.py"))
        if not str(path.relative_to(PACKAGE)).startswith(_ALLOWED)
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if _SQL_ON_TABLES.search(line)
    ]
    assert found == [], "SQL on the provisioner's tables outside provisioner/persistence:\n" + "\n".join(found)
