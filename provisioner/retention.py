"""Retention: delete from the provisioner's own database what it no longer needs, in small batches.

Older than ``days`` (``PROVISIONER_RETENTION_DAYS``), these go:

* webhook inbox rows (``provisioner_inbox``), and the delivery keys that recognise a redelivered CloudEvent or
  Standard Webhooks id (``provisioner_inbox_keys``): the portal never retries, so a redelivery weeks later does not
  happen, and one that did would only run a reconcile again (reconciles are level triggered);
* finished jobs: procrastinate jobs that ``succeeded``, ``failed``, were ``cancelled`` or ``aborted`` and saw no
  event since, with their events (``procrastinate_events`` rows go with their job);
* run records (``provisioner_runs``, and the tokenization engine's ``tokenize_runs``) beyond the newest
  ``keep_runs`` (``PROVISIONER_RETENTION_KEEP_RUNS``) of their subject (a product, a consumer; for tokenization a
  tenant and policy).

What stays, however old: jobs waiting or running (``todo``, ``doing``), a run still ``running``, the newest
``keep_runs`` runs of every subject, and a tokenization run that a grant or an output port's last outcome names.

Every batch is its own short transaction (``DELETE … WHERE id IN (SELECT … LIMIT n)``), so a large first clean-up
never holds locks for long, and one that stops half-way has still deleted only what it should. The statements are in
the persistence room (``persistence/retention.py``); here are the policy and the order.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from provisioner.logs import log_event
from provisioner.persistence import retention as tables
from provisioner.persistence.connections import ConnectionSource, connection

log = logging.getLogger(__name__)

#: procrastinate's final job states; ``todo`` and ``doing`` are never touched.
FINISHED_JOB_STATES = ("succeeded", "failed", "cancelled", "aborted")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long records are kept: ``days`` (0 = forever) and, however old, the newest ``keep_runs`` per subject."""

    days: int = 30
    keep_runs: int = 20
    batch_size: int = 5000

    def __post_init__(self) -> None:
        if self.days < 0 or self.keep_runs < 1 or self.batch_size < 1:
            raise ValueError("retention needs days >= 0, keep_runs >= 1 and batch_size >= 1")

    @property
    def enabled(self) -> bool:
        """False when ``days`` is 0: everything is kept."""
        return self.days > 0


@dataclass(frozen=True)
class PruneReport:
    """Rows deleted by one ``prune``, per table."""

    inbox: int = 0
    inbox_keys: int = 0
    jobs: int = 0
    runs: int = 0
    tokenize_runs: int = 0


def prune(connections: ConnectionSource, policy: RetentionPolicy) -> PruneReport:
    """Delete what ``policy`` no longer keeps from the database (the pool's, or a conninfo's); return how many rows
    went."""
    if not policy.enabled:
        return PruneReport()
    days, keep, batch = policy.days, policy.keep_runs, policy.batch_size
    with connection(connections, autocommit=True) as conn:
        report = PruneReport(
            inbox=tables.delete_old_inbox(conn, days=days, batch=batch),
            inbox_keys=tables.delete_old_inbox_keys(conn, days=days, batch=batch),
            jobs=tables.delete_finished_jobs(conn, days=days, batch=batch, finished=list(FINISHED_JOB_STATES)),
            runs=tables.delete_old_runs(conn, days=days, keep=keep, batch=batch),
            tokenize_runs=tables.delete_old_tokenize_runs(conn, days=days, keep=keep, batch=batch),
        )
    log_event(
        log,
        "retention.pruned",
        days=policy.days,
        keep_runs=policy.keep_runs,
        inbox=report.inbox,
        inbox_keys=report.inbox_keys,
        jobs=report.jobs,
        runs=report.runs,
        tokenize_runs=report.tokenize_runs,
    )
    return report
