"""recorded_run, the one way engine, profiler, gate and the DataHub worker keep a tokenize_runs record (issue 14
item 4): RUNNING at the start, COMPLETE once at the end, never left RUNNING by a block that raises."""

from __future__ import annotations

import pytest

from provisioner.tokenize import RecorderError, RunRecorder
from provisioner.tokenize.recording import recorded_run


def test_a_run_is_recorded_running_then_complete_with_its_counts(pg_empty_url: str) -> None:
    recorder = RunRecorder(pg_empty_url)
    with recorded_run(
        recorder, tenant="t1", policy="p", dry_run=False, tables=["public.people"], kind="profile"
    ) as opened:
        running = recorder.get(opened.run_id)
        assert running is not None and (running.state, running.kind, running.tables) == (
            "RUNNING",
            "profile",
            ["public.people"],
        )
        finished_at, seconds = opened.close(
            "SUCCESS", error=None, total_rows=3, rows_by_column={"public.people.email": 3}, detail={"n": 1}
        )
    record = recorder.get(opened.run_id)
    assert record is not None
    assert (record.state, record.result, record.total_rows, record.rows_by_column, record.detail) == (
        "COMPLETE",
        "SUCCESS",
        3,
        {"public.people.email": 3},
        {"n": 1},
    )
    assert record.finished_at == finished_at and record.duration_ms == pytest.approx(seconds * 1000)


def test_a_block_that_raises_before_closing_leaves_no_run_running(pg_empty_url: str) -> None:
    recorder = RunRecorder(pg_empty_url)
    with pytest.raises(KeyError), recorded_run(recorder, tenant="t1", policy="p", dry_run=True, tables=[]) as opened:
        raise KeyError("defect")
    record = recorder.get(opened.run_id)
    assert record is not None and (record.state, record.result) == ("COMPLETE", "FAILURE")
    assert record.error == "internal error (KeyError); see the provisioner's log"


def test_without_a_recorder_the_run_still_has_its_id_and_timing() -> None:
    with recorded_run(None, tenant="t1", policy="p", dry_run=False, tables=[]) as opened:
        finished_at, seconds = opened.close("FAILURE", error="x")
    assert opened.run_id and finished_at >= opened.started_at and seconds >= 0


def test_errors_of_the_recorder_itself_propagate() -> None:
    recorder = RunRecorder("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(RecorderError), recorded_run(recorder, tenant="t1", policy="p", dry_run=False, tables=[]):
        pass
