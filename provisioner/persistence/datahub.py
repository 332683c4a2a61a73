"""``provisioner_datahub_runs`` (migration 011): tokenization runs requested from DataHub, keyed by (dataset urn,
audit stamp), with what each run did and whether DataHub has accepted its report.

``enqueue`` is one call of the SQL function ``provisioner_datahub_enqueue``, which records a request and queues its
``tokenize_dataset`` job unless the key is known (a redelivery). ``DatahubRuns`` reads and writes the rows for the
worker, over short connections (a job writes a few rows per run).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import psycopg

from provisioner.persistence.connections import ConnectionSource, connection
from provisioner.persistence.records import DatahubRun

_ENQUEUE = "SELECT provisioner_datahub_enqueue(%s, %s, %s, %s, %s)"

_COLUMNS = (
    "dataset_urn, stamp, actor, fields, origin, state, result, retryable, run_id::text, dpi_urn, detail, reported"
)


def enqueue(
    conn: psycopg.Connection[Any], dataset_urn: str, stamp: int, field_path: str | None, actor: str | None, origin: str
) -> int | None:
    """Record a request and queue its job; the job id, or None when the request was absorbed (a known key)."""
    row = conn.execute(_ENQUEUE, (dataset_urn, stamp, field_path, actor, origin)).fetchone()
    return None if row is None or row[0] is None else int(row[0])


class DatahubRuns:
    """The worker's access to the request rows, each call on its own short autocommit connection (borrowed from the
    process's pool, or opened on a conninfo)."""

    def __init__(self, connections: ConnectionSource) -> None:
        self._connections = connections

    def get(self, dataset_urn: str, stamp: int) -> DatahubRun | None:
        """The row of a request, or None."""
        with connection(self._connections, autocommit=True) as conn:
            row = conn.execute(
                f"SELECT {_COLUMNS} FROM provisioner_datahub_runs WHERE dataset_urn = %s AND stamp = %s",
                (dataset_urn, stamp),
            ).fetchone()
        return _run(row) if row else None

    def for_dataset(self, dataset_urn: str) -> list[DatahubRun]:
        """Every request of a dataset, newest stamp first."""
        with connection(self._connections, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM provisioner_datahub_runs WHERE dataset_urn = %s ORDER BY stamp DESC",
                (dataset_urn,),
            ).fetchall()
        return [_run(r) for r in rows]

    def unreported(self) -> list[DatahubRun]:
        """Runs that ended but whose end DataHub has not accepted yet."""
        with connection(self._connections, autocommit=True) as conn:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM provisioner_datahub_runs WHERE NOT reported AND state = 'complete'"
                " ORDER BY created_at"
            ).fetchall()
        return [_run(r) for r in rows]

    def start(self, dataset_urn: str, stamp: int, dpi_urn: str, detail: Mapping[str, Any]) -> DatahubRun:
        """Mark a request running (again, after a crash) and return it with the fields its job absorbed."""
        with connection(self._connections, autocommit=True) as conn:
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
        with connection(self._connections, autocommit=True) as conn:
            conn.execute(
                "UPDATE provisioner_datahub_runs SET state = 'complete', result = %s, retryable = %s, run_id = %s,"
                " detail = %s, reported = false, finished_at = now() WHERE dataset_urn = %s AND stamp = %s",
                (result, retryable, run_id, json.dumps(dict(detail)), dataset_urn, stamp),
            )

    def mark_reported(self, dataset_urn: str, stamp: int) -> None:
        """DataHub accepted the run's end."""
        with connection(self._connections, autocommit=True) as conn:
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
