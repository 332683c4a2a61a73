"""The durable side of the plugin: requests recorded and queued in the provisioner's PostgreSQL.

``RequestQueue.enqueue`` is all that ``act()`` does: ``provisioner_datahub_enqueue`` (persistence/datahub.py) on a
connection kept open, which records the request under its key (dataset urn, audit stamp) and queues a
``tokenize_dataset`` job unless the key is known (a redelivery). The worker reads and writes those rows through
``persistence.datahub.DatahubRuns``: the run's state, its result, and whether DataHub has accepted its report.

Group commit. The Actions pipeline acknowledges an event (Kafka stores its offset, pg_queue deletes it) as soon as
``act()`` returns, one event after the other; a source has no later, selective acknowledgement (Kafka's offsets are
cumulative: acknowledging a later event passes over an earlier one). So ``enqueue`` returns only once its request
is committed: an acknowledged event is durable. What it can share is the commit: callers that arrive while a
transaction is in flight wait, and the next transaction carries all of them (one round trip, one WAL flush). The
caller that finds no transaction in flight runs it (no thread hop, so a lone pipeline pays nothing for this).
Pipelines of one process (``datahub actions -c a.yaml -c b.yaml``) share one queue per database
(``shared_queue``); a batch that fails fails every ``enqueue`` in it (none of their events is acknowledged, the
pipeline retries them), and a batch commits all of its requests or none.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
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


@dataclass(eq=False)
class _Pending:
    """One caller's request, waiting for the transaction that carries it."""

    params: tuple[str, int, str | None, str | None, str]
    done: threading.Event = field(default_factory=threading.Event)
    job_id: int | None = None
    error: BaseException | None = None


class RequestQueue:
    """Records requests and queues their jobs over one long-lived connection, committing concurrent callers'
    requests together (thread-safe). ``max_batch=1`` gives one transaction per request (the benchmark's baseline)."""

    def __init__(self, database_url: str, *, synchronous_commit: str = "on", max_batch: int = 1000) -> None:
        self._url = database_url
        self._synchronous_commit = synchronous_commit
        self._max_batch = max(1, max_batch)
        self._conn: psycopg.Connection | None = None
        self._state = threading.Condition()
        self._waiting: list[_Pending] = []
        self._flushing = False

    def enqueue(self, request: TokenizeRequest, origin: Origin = "event") -> int | None:
        """Record ``request`` and queue its job; the job id, or None when the key was already recorded.

        Returns once the transaction that carries the request has committed. A broken connection is reopened once;
        QueueUnavailable when PostgreSQL still cannot be reached; any other failure of the batch is raised to every
        caller in it.
        """
        mine = _Pending((request.dataset_urn, request.stamp, request.field_path, request.actor, origin))
        with self._state:
            self._waiting.append(mine)
        while True:
            with self._state:
                # Wait while another caller's transaction is in flight; it hands over to a waiter when it ends.
                while self._flushing and not mine.done.is_set():
                    self._state.wait()
                if mine.done.is_set():  # carried by a transaction, ours or another caller's
                    return _outcome(mine)
                self._flushing = True
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
            try:
                self._commit(batch)
            finally:
                with self._state:
                    self._flushing = False
                    self._state.notify_all()

    def waiting(self) -> int:
        """How many requests wait for the next transaction (for tests and metrics)."""
        with self._state:
            return len(self._waiting)

    def close(self) -> None:
        """Close the connection (a later enqueue opens a new one)."""
        with self._state:
            while self._flushing:
                self._state.wait()
            self._drop()

    def _commit(self, batch: list[_Pending]) -> None:
        """One transaction for ``batch`` (retried once on a new connection); sets every member's outcome."""
        try:
            for attempt in (1, 2):
                try:
                    ids = self._transaction([p.params for p in batch])
                    for p, job_id in zip(batch, ids, strict=True):
                        p.job_id = job_id
                    return
                except psycopg.OperationalError as exc:
                    self._drop()
                    if attempt == 2:
                        self._fail(batch, _unavailable(batch, exc))
                except Exception as exc:  # the whole batch rolled back: every caller in it fails
                    self._drop()
                    self._fail(batch, exc)
                    return
        finally:
            for p in batch:
                p.done.set()

    @staticmethod
    def _fail(batch: list[_Pending], error: BaseException) -> None:
        for p in batch:
            p.error = error
            p.job_id = None

    def _transaction(self, params: Sequence[tuple[str, int, str | None, str | None, str]]) -> list[int | None]:
        conn = self._connection()
        if len(params) == 1:  # autocommit: the statement is its own transaction (no BEGIN/COMMIT round trips)
            return [datahub_runs.enqueue(conn, *params[0])]
        # Rows locked in one order by every batch: two processes' batches cannot deadlock on each other's keys.
        order = sorted(range(len(params)), key=lambda i: (params[i][0], params[i][1]))
        ids: list[int | None] = [None] * len(params)
        with conn.transaction():
            found = datahub_runs.enqueue_many(conn, [params[i] for i in order])
        for i, job_id in zip(order, found, strict=True):
            ids[i] = job_id
        return ids

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


def _unavailable(batch: list[_Pending], exc: Exception) -> QueueUnavailable:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    urns = sorted({p.params[0] for p in batch})
    more = f" and {len(urns) - 3} more" if len(urns) > 3 else ""
    return QueueUnavailable(f"cannot queue the tokenization of {', '.join(urns[:3])}{more}: {redact_text(first)}")


def _outcome(pending: _Pending) -> int | None:
    if pending.error is not None:
        raise pending.error
    return pending.job_id


_shared: dict[tuple[str, str], tuple[RequestQueue, int]] = {}
_shared_lock = threading.Lock()


def shared_queue(database_url: str, synchronous_commit: str = "on") -> RequestQueue:
    """The process's queue for a database: pipelines of one process share its connection and its commits.

    Each call takes a reference; ``release_queue`` gives it back and closes the queue with the last one.
    """
    key = (database_url, synchronous_commit)
    with _shared_lock:
        queue, refs = _shared.get(key) or (RequestQueue(database_url, synchronous_commit=synchronous_commit), 0)
        _shared[key] = (queue, refs + 1)
        return queue


def release_queue(queue: RequestQueue) -> None:
    """Give back a reference taken by ``shared_queue``; the last one closes the queue. Others: close it."""
    with _shared_lock:
        for key, (held, refs) in list(_shared.items()):
            if held is queue:
                if refs > 1:
                    _shared[key] = (held, refs - 1)
                    return
                del _shared[key]
                break
    queue.close()
