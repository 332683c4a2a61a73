"""The durable side of the plugin: requests recorded and queued in the provisioner's PostgreSQL, and their runs.

``RequestQueue.enqueue`` is all that ``act()`` does: one call of ``provisioner_datahub_enqueue`` (sql/011) on a
connection kept open, which records the request under its key (dataset urn, audit stamp) and queues a
``tokenize_dataset`` job unless the key is known (a redelivery). ``DatahubRuns`` reads and writes those rows for
the worker: the run's state, its result, and whether DataHub has accepted its report.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import psycopg

from provisioner.datahub.events import TokenizeRequest
from provisioner.errors import TemporaryError
from provisioner.logs import redact_text

log = logging.getLogger(__name__)

Origin = Literal["event", "scan"]
_ENQUEUE = "SELECT provisioner_datahub_enqueue(%s, %s, %s, %s, %s)"


class QueueUnavailable(TemporaryError):
    """The provisioner's PostgreSQL cannot be reached: the event is not acknowledged, so it will come again."""


class RequestQueue:
    """Records requests and queues their jobs over one long-lived autocommit connection (thread-safe)."""

    def __init__(self, database_url: str, *, synchronous_commit: str = "on") -> None:
        self._url = database_url
        self._synchronous_commit = synchronous_commit
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def enqueue(self, request: TokenizeRequest, origin: Origin = "event") -> int | None:
        """Record ``request`` and queue its job; the job id, or None when the key was already recorded.

        A broken connection is reopened once; QueueUnavailable when PostgreSQL still cannot be reached.
        """
        params = (request.dataset_urn, request.stamp, request.field_path, request.actor, origin)
        with self._lock:
            for attempt in (1, 2):
                try:
                    row = self._connection().execute(_ENQUEUE, params).fetchone()
                    return None if row is None or row[0] is None else int(row[0])
                except psycopg.OperationalError as exc:
                    self._drop()
                    if attempt == 2:
                        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                        raise QueueUnavailable(
                            f"cannot queue the tokenization of {request.dataset_urn}: {redact_text(first)}"
                        ) from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the connection (a later enqueue opens a new one)."""
        with self._lock:
            self._drop()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self._url, autocommit=True, connect_timeout=5, application_name="provisioner-datahub-action"
            )
            self._conn.execute("SELECT set_config('synchronous_commit', %s, false)", (self._synchronous_commit,))
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None


@dataclass(frozen=True)
class DatahubRun:
    """One row of ``provisioner_datahub_runs``."""

    dataset_urn: str
    stamp: int
    actor: str | None
    fields: tuple[str, ...] | None
    origin: str
    state: str
    result: str | None
    retryable: bool
    run_id: str | None
    dpi_urn: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    reported: bool = False


_COLUMNS = (
    "dataset_urn, stamp, actor, fields, origin, state, result, retryable, run_id::text, dpi_urn, detail, reported"
)


class DatahubRuns:
    """The worker's access to the request rows (short connections: a job writes a few rows per run)."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url

    def get(self, dataset_urn: str, stamp: int) -> DatahubRun | None:
        """The row of a request, or None."""
        with psycopg.connect(self._url, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM provisioner_datahub_runs WHERE dataset_urn = %s AND stamp = %s",
                (dataset_urn, stamp),
            ).fetchone()
        return _run(row) if row else None

    def for_dataset(self, dataset_urn: str) -> list[DatahubRun]:
        """Every request of a dataset, newest stamp first."""
        with psycopg.connect(self._url, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM provisioner_datahub_runs WHERE dataset_urn = %s ORDER BY stamp DESC",
                (dataset_urn,),
            ).fetchall()
        return [_run(r) for r in rows]

    def unreported(self) -> list[DatahubRun]:
        """Runs that ended but whose end DataHub has not accepted yet."""
        with psycopg.connect(self._url, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM provisioner_datahub_runs WHERE NOT reported AND state = 'complete'"
                " ORDER BY created_at"
            ).fetchall()
        return [_run(r) for r in rows]

    def start(self, dataset_urn: str, stamp: int, dpi_urn: str, detail: Mapping[str, Any]) -> DatahubRun:
        """Mark a request running (again, after a crash) and return it with the fields its job absorbed."""
        with psycopg.connect(self._url, autocommit=True) as conn:
            row = conn.execute(
                "UPDATE provisioner_datahub_runs SET state = 'running', dpi_urn = %s, detail = %s"
                f" WHERE dataset_urn = %s AND stamp = %s RETURNING {_COLUMNS}",
                (dpi_urn, json.dumps(dict(detail)), dataset_urn, stamp),
            ).fetchone()
        assert row is not None, "the job's request row exists"
        return _run(row)

    def complete(
        self,
        dataset_urn: str,
        stamp: int,
        *,
        result: str,
        retryable: bool,
        run_id: str | None,
        detail: Mapping[str, Any],
    ) -> None:
        """Record a run's end before anything is posted to DataHub: the local record comes first."""
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute(
                "UPDATE provisioner_datahub_runs SET state = 'complete', result = %s, retryable = %s, run_id = %s,"
                " detail = %s, reported = false, finished_at = now() WHERE dataset_urn = %s AND stamp = %s",
                (result, retryable, run_id, json.dumps(dict(detail)), dataset_urn, stamp),
            )

    def mark_reported(self, dataset_urn: str, stamp: int) -> None:
        """DataHub accepted the run's end."""
        with psycopg.connect(self._url, autocommit=True) as conn:
            conn.execute(
                "UPDATE provisioner_datahub_runs SET reported = true WHERE dataset_urn = %s AND stamp = %s",
                (dataset_urn, stamp),
            )


def _run(row: tuple[Any, ...]) -> DatahubRun:
    return DatahubRun(
        dataset_urn=row[0],
        stamp=int(row[1]),
        actor=row[2],
        fields=tuple(row[3]) if row[3] is not None else None,
        origin=row[4],
        state=row[5],
        result=row[6],
        retryable=bool(row[7]),
        run_id=row[8],
        dpi_urn=row[9],
        detail=dict(row[10] or {}),
        reported=bool(row[11]),
    )
