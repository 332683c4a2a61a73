"""What the provisioner recorded about each product, grant and run, in its own PostgreSQL.

Only ids and outcomes live here: access key ids, never secrets (the secret goes only into the project's .env).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from provisioner.errors import TemporaryError
from provisioner.logs import log_event

log = logging.getLogger(__name__)


class EntityBusy(TemporaryError):
    """Another process held an entity's lock for longer than the wait allowed; retrying later will work."""


@dataclass(frozen=True)
class ProductRecord:
    """One row of provisioner_products."""

    product_id: str
    namespace: str
    name: str
    state: str
    access_key_id: str | None
    read_prefixes: tuple[str, ...]  # as the .env's S3_READ_PREFIXES lists them: <bucket>/<producer>/published/<port>/
    seeded: bool
    fingerprint: str | None
    verified_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class GrantRecord:
    """A grant decision: the consumer may read this output port's folder of the producer (tokenized first if the
    policy says so). The store policy is computed from the portal's approvals *and* these rows, never from the rows
    alone, so a row can only narrow access (see reconcile/grants.py)."""

    consumer_id: str
    output_port_id: str
    producer_id: str
    producer_namespace: str
    output_port_namespace: str = ""
    tokenize_run_id: str | None = None
    tokenize_note: str = ""


@dataclass(frozen=True)
class GrantWait:
    """An approved output port that is not granted, and why."""

    consumer_id: str
    output_port_id: str
    producer_id: str
    producer_namespace: str
    output_port_namespace: str
    reason: str
    since: datetime | None = None


@dataclass
class Run:
    """A run being recorded: the steps that changed something, counts, and its final status."""

    id: int
    kind: str
    subject: str
    namespace: str | None = None
    steps: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)

    def step(self, name: str) -> None:
        """Note that step ``name`` changed something."""
        self.steps.append(name)


class StateStore:
    """Reads and writes the provisioner's own tables through a sync connection pool."""

    def __init__(self, pool: ConnectionPool, owner: str | None = None) -> None:
        """``owner``: the id of this process's heartbeat (db.ProcessHeartbeat), written on every run it starts,
        so that its runs become failures if the process dies; None leaves runs without an owner."""
        self.pool = pool
        self.owner = owner

    # -- locks ------------------------------------------------------------------------------
    @contextmanager
    def entity_lock(self, entity: str, wait_s: float = 120.0) -> Iterator[None]:
        """Hold the PostgreSQL advisory lock of ``entity`` (e.g. ``product:<id>``) for the block.

        Workers already take turns per entity through the job queue's locks; this lock makes CLI commands
        (``provision``, ``rotate``) and workers take turns too. It is a session lock on one pooled connection,
        so it is gone if the process dies; EntityBusy after ``wait_s``.
        """
        key = (entity,)
        with self.pool.connection() as conn:
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
                    log_event(
                        log, "state.unlock_failed", level=logging.WARNING, entity=entity, error=type(exc).__name__
                    )

    # -- products ---------------------------------------------------------------------------
    def product(self, product_id: str) -> ProductRecord | None:
        """The record of ``product_id``, deleted ones included."""
        return self._one_product("SELECT * FROM provisioner_products WHERE product_id = %s", (product_id,))

    def live_by_namespace(self, namespace: str) -> ProductRecord | None:
        """The provisioned product that owns ``namespace``, if any."""
        return self._one_product(
            "SELECT * FROM provisioner_products WHERE namespace = %s AND state = 'provisioned'", (namespace,)
        )

    def all_products(self) -> list[ProductRecord]:
        """Every product we ever provisioned, deleted ones included."""
        return self._products("SELECT * FROM provisioner_products ORDER BY namespace, updated_at DESC", ())

    def save_product(self, record: ProductRecord) -> None:
        """Insert or update ``record``; ``verified_at`` becomes now."""
        with self.pool.connection() as conn:
            conn.execute(
                """
                INSERT INTO provisioner_products
                    (product_id, namespace, name, state, access_key_id, read_prefixes, seeded, fingerprint,
                     verified_at, updated_at)
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, now(), now())
                ON CONFLICT (product_id) DO UPDATE SET
                    namespace = EXCLUDED.namespace, name = EXCLUDED.name, state = EXCLUDED.state,
                    access_key_id = EXCLUDED.access_key_id, read_prefixes = EXCLUDED.read_prefixes,
                    seeded = EXCLUDED.seeded, fingerprint = EXCLUDED.fingerprint,
                    verified_at = now(), updated_at = now()
                """,
                (
                    record.product_id,
                    record.namespace,
                    record.name,
                    record.state,
                    record.access_key_id,
                    list(record.read_prefixes),
                    record.seeded,
                    record.fingerprint,
                ),
            )

    def _one_product(self, query: str, params: Sequence[object]) -> ProductRecord | None:
        rows = self._products(query, params)
        return rows[0] if rows else None

    def _products(self, query: str, params: Sequence[object]) -> list[ProductRecord]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)  # type: ignore[arg-type]
            return [
                ProductRecord(
                    product_id=r["product_id"],
                    namespace=r["namespace"],
                    name=r["name"],
                    state=r["state"],
                    access_key_id=r["access_key_id"],
                    read_prefixes=tuple(r["read_prefixes"]),
                    seeded=r["seeded"],
                    fingerprint=r["fingerprint"],
                    verified_at=r["verified_at"],
                    updated_at=r["updated_at"],
                )
                for r in cur.fetchall()
            ]

    # -- grants -----------------------------------------------------------------------------
    def grants_of(self, consumer_id: str) -> list[GrantRecord]:
        """The read grants a consumer holds now."""
        return self._grants(
            "SELECT * FROM provisioner_grants WHERE consumer_id = %s ORDER BY output_port_id", [consumer_id]
        )

    def all_grants(self) -> list[GrantRecord]:
        """Every read grant."""
        return self._grants("SELECT * FROM provisioner_grants ORDER BY consumer_id, output_port_id", [])

    def consumers_of(self, producer_id: str) -> list[str]:
        """Consumers holding a grant on ``producer_id``'s prefix."""
        with self.pool.connection() as conn:
            rows = conn.execute(
                "SELECT DISTINCT consumer_id FROM provisioner_grants WHERE producer_id = %s ORDER BY 1", (producer_id,)
            ).fetchall()
        return [r[0] for r in rows]

    def replace_grants(self, consumer_id: str, grants: Iterable[GrantRecord]) -> None:
        """Make ``grants`` the consumer's complete grant set, in one transaction."""
        grants = list(grants)
        with self.pool.connection() as conn, conn.transaction():
            self._delete_grants_except(conn, consumer_id, [g.output_port_id for g in grants])
            self._upsert_grants(conn, consumer_id, grants)

    def add_grants(self, consumer_id: str, grants: Iterable[GrantRecord]) -> None:
        """Record (or update) grant decisions before the store policy that uses them is written."""
        with self.pool.connection() as conn, conn.transaction():
            self._upsert_grants(conn, consumer_id, list(grants))

    def keep_only_grants(self, consumer_id: str, output_port_ids: Iterable[str]) -> None:
        """Forget the consumer's grant decisions on every other port (after the store policy dropped them)."""
        with self.pool.connection() as conn, conn.transaction():
            self._delete_grants_except(conn, consumer_id, list(output_port_ids))

    @staticmethod
    def _delete_grants_except(conn: psycopg.Connection[Any], consumer_id: str, keep: list[str]) -> None:
        conn.execute(
            "DELETE FROM provisioner_grants WHERE consumer_id = %s AND NOT (output_port_id = ANY(%s))",
            (consumer_id, keep),
        )

    @staticmethod
    def _upsert_grants(conn: psycopg.Connection[Any], consumer_id: str, grants: list[GrantRecord]) -> None:
        for g in grants:
            conn.execute(
                """
                INSERT INTO provisioner_grants (consumer_id, output_port_id, producer_id, producer_namespace,
                                                output_port_namespace, tokenize_run_id, tokenize_note)
                VALUES (%s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (consumer_id, output_port_id) DO UPDATE SET
                    producer_id = EXCLUDED.producer_id, producer_namespace = EXCLUDED.producer_namespace,
                    output_port_namespace = EXCLUDED.output_port_namespace,
                    tokenize_run_id = EXCLUDED.tokenize_run_id, tokenize_note = EXCLUDED.tokenize_note
                WHERE (provisioner_grants.producer_id, provisioner_grants.producer_namespace,
                       provisioner_grants.output_port_namespace, provisioner_grants.tokenize_run_id,
                       provisioner_grants.tokenize_note)
                      IS DISTINCT FROM (EXCLUDED.producer_id, EXCLUDED.producer_namespace,
                                        EXCLUDED.output_port_namespace, EXCLUDED.tokenize_run_id,
                                        EXCLUDED.tokenize_note)
                """,
                (
                    consumer_id,
                    g.output_port_id,
                    g.producer_id,
                    g.producer_namespace,
                    g.output_port_namespace,
                    g.tokenize_run_id,
                    g.tokenize_note,
                ),
            )

    def replace_waits(self, consumer_id: str, waits: Iterable[GrantWait]) -> None:
        """Make ``waits`` the consumer's complete set of waiting ports (a port keeps its ``since``)."""
        waits = list(waits)
        with self.pool.connection() as conn, conn.transaction():
            conn.execute(
                "DELETE FROM provisioner_grant_waits WHERE consumer_id = %s AND NOT (output_port_id = ANY(%s))",
                (consumer_id, [w.output_port_id for w in waits]),
            )
            for w in waits:
                conn.execute(
                    """
                    INSERT INTO provisioner_grant_waits (consumer_id, output_port_id, producer_id, producer_namespace,
                                                         output_port_namespace, reason)
                    VALUES (%s, %s, %s, %s, %s, %s)
                    ON CONFLICT (consumer_id, output_port_id) DO UPDATE SET producer_id = EXCLUDED.producer_id,
                        producer_namespace = EXCLUDED.producer_namespace,
                        output_port_namespace = EXCLUDED.output_port_namespace, reason = EXCLUDED.reason
                    """,
                    (
                        consumer_id,
                        w.output_port_id,
                        w.producer_id,
                        w.producer_namespace,
                        w.output_port_namespace,
                        w.reason,
                    ),
                )

    def all_waits(self) -> list[GrantWait]:
        """Every approved port that waits for its grant, oldest first."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SELECT * FROM provisioner_grant_waits ORDER BY since, consumer_id, output_port_id")
            return [
                GrantWait(
                    consumer_id=r["consumer_id"],
                    output_port_id=r["output_port_id"],
                    producer_id=r["producer_id"],
                    producer_namespace=r["producer_namespace"],
                    output_port_namespace=r["output_port_namespace"],
                    reason=r["reason"],
                    since=r["since"],
                )
                for r in cur.fetchall()
            ]

    def _grants(self, query: str, params: Sequence[object]) -> list[GrantRecord]:
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(query, params)  # type: ignore[arg-type]
            return [
                GrantRecord(
                    consumer_id=r["consumer_id"],
                    output_port_id=r["output_port_id"],
                    producer_id=r["producer_id"],
                    producer_namespace=r["producer_namespace"],
                    output_port_namespace=r["output_port_namespace"],
                    tokenize_run_id=r["tokenize_run_id"],
                    tokenize_note=r["tokenize_note"],
                )
                for r in cur.fetchall()
            ]

    def record_tokenize_outcome(
        self, output_port_id: str, producer_id: str, status: str, run_id: str | None, rows: int, error: str | None
    ) -> None:
        """Remember the last tokenization outcome of an output port."""
        with self.pool.connection() as conn:
            conn.execute(
                """
                INSERT INTO provisioner_tokenize_outcomes
                    (output_port_id, producer_id, status, run_id, rows_changed, error, finished_at)
                VALUES (%s, %s, %s, %s, %s, %s, now())
                ON CONFLICT (output_port_id) DO UPDATE SET producer_id = EXCLUDED.producer_id,
                    status = EXCLUDED.status, run_id = EXCLUDED.run_id, rows_changed = EXCLUDED.rows_changed,
                    error = EXCLUDED.error, finished_at = now()
                """,
                (output_port_id, producer_id, status, run_id, rows, error),
            )

    def tokenize_outcomes(self) -> dict[str, dict[str, Any]]:
        """Last tokenization outcome per output port id."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute("SELECT * FROM provisioner_tokenize_outcomes")
            return {r["output_port_id"]: dict(r) for r in cur.fetchall()}

    # -- runs -------------------------------------------------------------------------------
    def start_run(self, kind: str, subject: str, namespace: str | None = None) -> Run:
        """Insert a ``running`` run row."""
        with self.pool.connection() as conn:
            row = conn.execute(
                "INSERT INTO provisioner_runs (kind, subject, namespace, status, owner)"
                " VALUES (%s, %s, %s, 'running', %s) RETURNING id",
                (kind, subject, namespace, self.owner),
            ).fetchone()
        assert row is not None
        return Run(id=row[0], kind=kind, subject=subject, namespace=namespace)

    def finish_run(self, run: Run, status: str, error: str | None = None) -> None:
        """Close a run with ``status`` (success, failure, skipped), its steps, detail and error."""
        with self.pool.connection() as conn:
            conn.execute(
                "UPDATE provisioner_runs SET status = %s, steps = %s, detail = %s, error = %s, namespace = %s, "
                "finished_at = now() WHERE id = %s",
                (status, json.dumps(run.steps), json.dumps(run.detail, default=str), error, run.namespace, run.id),
            )

    def last_runs(self, subject: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs, optionally of one subject."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            if subject:
                cur.execute(
                    "SELECT * FROM provisioner_runs WHERE subject = %s ORDER BY id DESC LIMIT %s", (subject, limit)
                )
            else:
                cur.execute("SELECT * FROM provisioner_runs ORDER BY id DESC LIMIT %s", (limit,))
            return [dict(r) for r in cur.fetchall()]

    def last_run_per_subject(self) -> dict[str, dict[str, Any]]:
        """The newest run of every subject that did something (for status tables): a skipped run, such as the echo
        of our own finalizer removal after a deletion, does not hide the run before it."""
        with self.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
            cur.execute(
                "SELECT DISTINCT ON (subject) * FROM provisioner_runs WHERE kind IN ('product', 'access', 'delete', "
                "'rotate') ORDER BY subject, status = 'skipped', id DESC"
            )
            return {r["subject"]: dict(r) for r in cur.fetchall()}


def _fetch_flag(conn: psycopg.Connection[Any], query: str, params: Sequence[object]) -> bool:
    # Committed at once: the session lock outlives the transaction, the snapshot should not.
    row = conn.execute(query, params).fetchone()
    conn.commit()
    return bool(row and row[0])
