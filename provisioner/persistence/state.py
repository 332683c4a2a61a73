"""``StateStore``: the door the reconcilers and the CLI use to the provisioner's own tables, over one sync pool.

Each method borrows a pooled connection (and a transaction where several statements must hold together) and calls
the table module that holds the SQL: products.py, grants.py, runs.py, parked.py, orphans.py, locks.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from psycopg_pool import ConnectionPool

from provisioner.persistence import grants, locks, orphans, parked, products, runs, targets
from provisioner.persistence.records import (
    GrantRecord,
    GrantWait,
    Parked,
    ProductRecord,
    TargetGrantRecord,
    TargetState,
)
from provisioner.persistence.runs import Run


class StateStore:
    """Reads and writes the provisioner's own tables through a sync connection pool."""

    def __init__(self, pool: ConnectionPool, owner: str | None = None) -> None:
        """``owner``: the id of this process's heartbeat (db.ProcessHeartbeat), written on every run it starts,
        so that its runs become failures if the process dies; None leaves runs without an owner."""
        self.pool = pool
        self.owner = owner

    # -- locks ------------------------------------------------------------------------------
    def entity_lock(self, entity: str, wait_s: float = 120.0) -> AbstractContextManager[None]:
        """Hold the advisory lock of ``entity`` for the block (locks.entity_lock); EntityBusy after ``wait_s``."""
        return locks.entity_lock(self.pool, entity, wait_s)

    # -- products ---------------------------------------------------------------------------
    def product(self, product_id: str) -> ProductRecord | None:
        """The record of ``product_id``, deleted ones included."""
        with self.pool.connection() as conn:
            return products.product(conn, product_id)

    def live_by_namespace(self, namespace: str) -> ProductRecord | None:
        """The provisioned product that owns ``namespace``, if any."""
        with self.pool.connection() as conn:
            return products.live_by_namespace(conn, namespace)

    def all_products(self) -> list[ProductRecord]:
        """Every product we ever provisioned, deleted ones included."""
        with self.pool.connection() as conn:
            return products.all_products(conn)

    def save_product(self, record: ProductRecord) -> None:
        """Insert or update ``record``; ``verified_at`` becomes now."""
        with self.pool.connection() as conn:
            products.save_product(conn, record)

    # -- grants -----------------------------------------------------------------------------
    def grants_of(self, consumer_id: str) -> list[GrantRecord]:
        """The read grants a consumer holds now."""
        with self.pool.connection() as conn:
            return grants.grants_of(conn, consumer_id)

    def all_grants(self) -> list[GrantRecord]:
        """Every read grant."""
        with self.pool.connection() as conn:
            return grants.all_grants(conn)

    def consumers_of(self, producer_id: str) -> list[str]:
        """Consumers holding a grant on ``producer_id``'s prefix."""
        with self.pool.connection() as conn:
            return grants.consumers_of(conn, producer_id)

    def replace_grants(self, consumer_id: str, decided: Iterable[GrantRecord]) -> None:
        """Make ``decided`` the consumer's complete grant set, in one transaction."""
        decided = list(decided)
        with self.pool.connection() as conn, conn.transaction():
            grants.delete_grants_except(conn, consumer_id, [g.output_port_id for g in decided])
            grants.upsert_grants(conn, consumer_id, decided)

    def add_grants(self, consumer_id: str, decided: Iterable[GrantRecord]) -> None:
        """Record (or update) grant decisions before the store policy that uses them is written."""
        with self.pool.connection() as conn, conn.transaction():
            grants.upsert_grants(conn, consumer_id, list(decided))

    def keep_only_grants(self, consumer_id: str, output_port_ids: Iterable[str]) -> None:
        """Forget the consumer's grant decisions on every other port (after the store policy dropped them)."""
        with self.pool.connection() as conn, conn.transaction():
            grants.delete_grants_except(conn, consumer_id, list(output_port_ids))

    def replace_waits(self, consumer_id: str, waits: Iterable[GrantWait]) -> None:
        """Make ``waits`` the consumer's complete set of waiting ports (a port keeps its ``since``)."""
        with self.pool.connection() as conn, conn.transaction():
            grants.replace_waits(conn, consumer_id, list(waits))

    def all_waits(self) -> list[GrantWait]:
        """Every approved port that waits for its grant, oldest first."""
        with self.pool.connection() as conn:
            return grants.all_waits(conn)

    def record_tokenize_outcome(
        self, output_port_id: str, producer_id: str, status: str, run_id: str | None, error: str | None
    ) -> None:
        """Remember the last tokenization outcome of an output port: its run (which holds the counts) and verdict."""
        with self.pool.connection() as conn:
            grants.record_tokenize_outcome(conn, output_port_id, producer_id, status, run_id, error)

    def tokenize_outcomes(self) -> dict[str, dict[str, Any]]:
        """Last tokenization outcome per output port id."""
        with self.pool.connection() as conn:
            return grants.tokenize_outcomes(conn)

    # -- parked products --------------------------------------------------------------------
    def park(self, record: Parked) -> None:
        """Park a product (replacing an older parking of it)."""
        with self.pool.connection() as conn:
            parked.park(conn, record)

    def unpark(self, product_id: str) -> bool:
        """Forget the parking of ``product_id``; True when it was parked."""
        with self.pool.connection() as conn:
            return parked.unpark(conn, product_id)

    def release_parked(self, namespace: str, reason: str) -> list[str]:
        """Unpark the products parked for ``reason`` on ``namespace``; return their ids."""
        with self.pool.connection() as conn:
            return parked.release_namespace(conn, namespace, reason)

    def parked(self, product_id: str) -> Parked | None:
        """The parking of ``product_id``, if any."""
        with self.pool.connection() as conn:
            return parked.parked(conn, product_id)

    def parked_on(self, namespace: str) -> list[Parked]:
        """Products parked with ``namespace`` (as the portal showed it)."""
        with self.pool.connection() as conn:
            return parked.parked_on(conn, namespace)

    def all_parked(self) -> dict[str, Parked]:
        """Every parked product by id."""
        with self.pool.connection() as conn:
            return parked.all_parked(conn)

    # -- orphan store users -----------------------------------------------------------------
    def note_orphans(self, users: Sequence[str], grace_seconds: int | None) -> list[str]:
        """Remember ``users`` as the orphans now; return those orphaned for ``grace_seconds`` (None: none)."""
        with self.pool.connection() as conn, conn.transaction():
            return orphans.note_orphans(conn, users, grace_seconds)

    def forget_orphan(self, user_name: str) -> None:
        """An orphan user was removed from the store."""
        with self.pool.connection() as conn:
            orphans.forget_orphan(conn, user_name)

    # -- targets (migration 013) ------------------------------------------------------------
    def save_target_state(
        self, target: str, product_id: str, aspect: str, state: str, detail: dict[str, Any] | None = None
    ) -> None:
        """Record a target's last outcome for one product and aspect (resources, grants)."""
        with self.pool.connection() as conn:
            targets.save_state(conn, target, product_id, aspect, state, detail or {})

    def target_states(self, product_id: str | None = None) -> list[TargetState]:
        """Every target's last outcome (of one product when given)."""
        with self.pool.connection() as conn:
            return targets.states(conn, product_id)

    def target_grants_held(self, target: str, consumer_id: str) -> list[TargetGrantRecord]:
        """The reads ``target`` granted ``consumer_id`` (or was about to)."""
        with self.pool.connection() as conn:
            return targets.grants_held(conn, target, consumer_id)

    def target_grants_on(self, target: str, producer_id: str) -> list[TargetGrantRecord]:
        """The reads ``target`` granted on ``producer_id``'s resources."""
        with self.pool.connection() as conn:
            return targets.grants_on(conn, target, producer_id)

    def replace_target_grants(self, target: str, consumer_id: str, held: Iterable[TargetGrantRecord]) -> None:
        """Make ``held`` the complete set of reads ``target`` granted ``consumer_id``, in one transaction."""
        with self.pool.connection() as conn, conn.transaction():
            targets.replace_held(conn, target, consumer_id, list(held))

    def forget_target_grants_on(self, target: str, producer_id: str) -> None:
        """Forget the reads ``target`` granted on ``producer_id``'s resources (they were removed)."""
        with self.pool.connection() as conn:
            targets.forget_grants_on(conn, target, producer_id)

    # -- runs -------------------------------------------------------------------------------
    def recording(self, kind: str, subject: str, namespace: str | None = None) -> AbstractContextManager[Run]:
        """Record the block as one run of this process (runs.recording): started, steps, outcome, error."""
        return runs.recording(self.pool, kind, subject, namespace, owner=self.owner)

    def start_run(self, kind: str, subject: str, namespace: str | None = None) -> Run:
        """Insert a ``running`` run row (prefer ``recording``, which also closes it)."""
        with self.pool.connection() as conn:
            return runs.start_run(conn, kind, subject, namespace, owner=self.owner)

    def finish_run(self, run: Run, status: str, error: str | None = None) -> None:
        """Close a run with ``status`` (success, failure, skipped), its steps, detail and error."""
        with self.pool.connection() as conn:
            runs.finish_run(conn, run, status, error)

    def last_runs(self, subject: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The newest runs, optionally of one subject."""
        with self.pool.connection() as conn:
            return runs.last_runs(conn, subject, limit)

    def last_run_per_subject(self) -> dict[str, dict[str, Any]]:
        """The newest reconcile run of every subject that did something (for status tables)."""
        with self.pool.connection() as conn:
            return runs.last_run_per_subject(conn)
