"""The durable side of the plugin: requests recorded and queued in the provisioner's PostgreSQL.

``RequestQueue.enqueue`` is all that ``act()`` does: one call of ``provisioner_datahub_enqueue`` (persistence/
datahub.py) on a connection kept open, which records the request under its key (dataset urn, audit stamp) and queues
a ``tokenize_dataset`` job unless the key is known (a redelivery). The worker reads and writes those rows through
``persistence.datahub.DatahubRuns``: the run's state, its result, and whether DataHub has accepted its report.
"""

from __future__ import annotations

import logging
import threading
from typing import Literal

import psycopg

from provisioner.datahub.events import TokenizeRequest
from provisioner.errors import TemporaryError
from provisioner.logs import redact_text
from provisioner.persistence import datahub as datahub_runs

log = logging.getLogger(__name__)

Origin = Literal["event", "scan"]


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
                    return datahub_runs.enqueue(self._connection(), *params)
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
