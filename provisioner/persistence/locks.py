"""Entity locks: PostgreSQL advisory locks that make CLI commands and workers take turns on one product."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from provisioner.errors import TemporaryError
from provisioner.logs import log_event

log = logging.getLogger(__name__)


class EntityBusy(TemporaryError):
    """Another process held an entity's lock for longer than the wait allowed; retrying later will work."""


@contextmanager
def entity_lock(pool: ConnectionPool, entity: str, wait_s: float = 120.0) -> Iterator[None]:
    """Hold the PostgreSQL advisory lock of ``entity`` (e.g. ``product:<id>``) for the block.

    Workers already take turns per entity through the job queue's locks; this lock makes CLI commands
    (``provision``, ``rotate``) and workers take turns too. It is a session lock on one pooled connection,
    so it is gone if the process dies; EntityBusy after ``wait_s``.
    """
    key = (entity,)
    with pool.connection() as conn:
        deadline = time.monotonic() + wait_s
        while not _fetch_flag(conn, "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", key):
            if time.monotonic() > deadline:
                raise EntityBusy(
                    f"{entity} is being changed by another process (a worker or a command) for more than "
                    f"{wait_s:.0f}s; try again later"
                )
            time.sleep(0.05)
        try:
            yield
        finally:
            try:
                _fetch_flag(conn, "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", key)
            except psycopg.Error as exc:
                # Closing ends the session, and with it the lock; the pool then discards the connection.
                conn.close()
                log_event(log, "state.unlock_failed", level=logging.WARNING, entity=entity, error=type(exc).__name__)


def _fetch_flag(conn: psycopg.Connection[Any], query: str, params: Sequence[object]) -> bool:
    # Committed at once: the session lock outlives the transaction, the snapshot should not.
    row = conn.execute(query, params).fetchone()
    conn.commit()
    return bool(row and row[0])
