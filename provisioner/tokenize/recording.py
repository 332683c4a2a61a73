"""The one way a run of the engine, or of a tool built on it, keeps its ``tokenize_runs`` record: ``recorded_run``.

Tokenization (``engine.run``), profiling (``profile.profiler``), the residual-PII gate (``profile.gate``) and the
DataHub worker's runs that end before the engine starts all open their run here: a new id, its start time and clock,
recorded RUNNING; the block then ``close``s it once with its result, counts and error, and gets back when it
finished and how long it took, for its own result and log lines. Without a recorder nothing is written, and the
id and timing are the same.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from provisioner.tokenize.errors import RecorderError
from provisioner.tokenize.records import RunRecorder

#: What a run that escaped its block with an unexpected exception is closed with (the log has the traceback).
INTERNAL_ERROR = "internal error ({}); see the provisioner's log"


@dataclass
class OpenRun:
    """A run that has started (recorded RUNNING when there is a recorder): its id and start; ``close`` ends it."""

    run_id: str
    started_at: datetime
    recorder: RunRecorder | None
    clock: float = field(default_factory=time.perf_counter)
    closed: bool = False

    def close(
        self,
        result: str,
        *,
        error: str | None,
        total_rows: int = 0,
        rows_by_column: Mapping[str, int] | None = None,
        detail: Mapping[str, Any] | None = None,
    ) -> tuple[datetime, float]:
        """Record the run COMPLETE with ``result`` (SUCCESS or FAILURE); return when it finished and its seconds.

        ``detail`` holds the counts of runs that are not tokenization (profile, gate); None keeps the record's.
        """
        finished_at = datetime.now(UTC)
        duration = time.perf_counter() - self.clock
        self.closed = True  # before the write: a recorder that fails is not asked again by recorded_run
        if self.recorder is not None:
            self.recorder.finish(
                run_id=self.run_id,
                result=result,
                rows_by_column=dict(rows_by_column or {}),
                total_rows=total_rows,
                error=error,
                finished_at=finished_at,
                duration_ms=duration * 1000,
                detail=detail,
            )
        return finished_at, duration


@contextmanager
def recorded_run(
    recorder: RunRecorder | None,
    *,
    tenant: str,
    policy: str,
    dry_run: bool,
    tables: list[str],
    kind: str = "tokenize",
) -> Iterator[OpenRun]:
    """Open a run of ``kind`` (recorded RUNNING), let the block ``close`` it, and never leave it RUNNING.

    A block that raises before closing its run closes it as FAILURE with an internal-error message, then the
    exception goes on; errors of the recorder itself (RecorderError) propagate as they are. A block that ends
    without closing its run is a defect: the run is closed as FAILURE saying so.
    """
    run = OpenRun(run_id=str(uuid.uuid4()), started_at=datetime.now(UTC), recorder=recorder)
    if recorder is not None:
        recorder.start(
            run_id=run.run_id,
            tenant=tenant,
            policy=policy,
            dry_run=dry_run,
            tables=tables,
            started_at=run.started_at,
            kind=kind,
        )
    try:
        yield run
    except RecorderError:
        raise
    except Exception as exc:
        if not run.closed:
            run.close("FAILURE", error=INTERNAL_ERROR.format(type(exc).__name__))
        raise
    if not run.closed:
        run.close("FAILURE", error="the run ended without an outcome (a defect); see the provisioner's log")
