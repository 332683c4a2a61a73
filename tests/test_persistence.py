"""The persistence room against real PostgreSQL: what moved there keeps its shape (issue 14 items 2 and 4)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from provisioner import db
from provisioner.errors import PermanentError
from provisioner.persistence.state import StateStore


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
