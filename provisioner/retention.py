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
never holds locks for long, and one that stops half-way has still deleted only what it should.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psycopg

from provisioner.logs import log_event

log = logging.getLogger(__name__)

#: procrastinate's final job states; ``todo`` and ``doing`` are never touched.
FINISHED_JOB_STATES = ("succeeded", "failed", "cancelled", "aborted")

_INBOX = """
DELETE FROM provisioner_inbox WHERE id IN (
    SELECT id FROM provisioner_inbox WHERE received_at < now() - make_interval(days => %(days)s) LIMIT %(batch)s
)
"""

_INBOX_KEYS = """
DELETE FROM provisioner_inbox_keys WHERE dedup_key IN (
    SELECT dedup_key FROM provisioner_inbox_keys WHERE seen_at < now() - make_interval(days => %(days)s)
    LIMIT %(batch)s
)
"""

# A finished job is old when none of its events (deferred, started, succeeded, retried...) is recent.
_JOBS = """
DELETE FROM procrastinate_jobs WHERE id IN (
    SELECT j.id FROM procrastinate_jobs j
    WHERE j.status::text = ANY(%(finished)s)
      AND NOT EXISTS (
          SELECT 1 FROM procrastinate_events e
          WHERE e.job_id = j.id AND e.at >= now() - make_interval(days => %(days)s)
      )
    LIMIT %(batch)s
)
"""

# Old, finished runs of which the subject has at least keep_runs newer ones (index provisioner_runs_subject).
_RUNS = """
DELETE FROM provisioner_runs WHERE id IN (
    SELECT r.id FROM provisioner_runs r
    WHERE r.started_at < now() - make_interval(days => %(days)s)
      AND r.status <> 'running'
      AND EXISTS (
          SELECT 1 FROM provisioner_runs n
          WHERE n.subject = r.subject AND (n.started_at, n.id) > (r.started_at, r.id)
          ORDER BY n.started_at DESC, n.id DESC
          OFFSET %(keep)s - 1 LIMIT 1
      )
    LIMIT %(batch)s
)
"""

# tokenize_runs belongs to the tokenization engine, which creates it on first use: it may not exist yet.
_TOKENIZE_RUNS = """
DELETE FROM tokenize_runs WHERE run_id IN (
    SELECT run_id FROM (
        SELECT run_id, state, started_at,
               row_number() OVER (PARTITION BY tenant, policy ORDER BY started_at DESC, run_id DESC) AS newest
        FROM tokenize_runs
    ) t
    WHERE t.newest > %(keep)s
      AND t.started_at < now() - make_interval(days => %(days)s)
      AND t.state <> 'RUNNING'
      AND NOT EXISTS (SELECT 1 FROM provisioner_grants g WHERE g.tokenize_run_id = t.run_id::text)
      AND NOT EXISTS (SELECT 1 FROM provisioner_tokenize_outcomes o WHERE o.run_id = t.run_id::text)
    LIMIT %(batch)s
)
"""


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


def prune(conninfo: str, policy: RetentionPolicy) -> PruneReport:
    """Delete what ``policy`` no longer keeps from the database at ``conninfo``; return how many rows went."""
    if not policy.enabled:
        return PruneReport()
    params = {
        "days": policy.days,
        "keep": policy.keep_runs,
        "batch": policy.batch_size,
        "finished": list(FINISHED_JOB_STATES),
    }
    with psycopg.connect(conninfo, autocommit=True) as conn:
        report = PruneReport(
            inbox=_in_batches(conn, _INBOX, params),
            inbox_keys=_in_batches(conn, _INBOX_KEYS, params),
            jobs=_in_batches(conn, _JOBS, params),
            runs=_in_batches(conn, _RUNS, params),
            tokenize_runs=_in_batches(conn, _TOKENIZE_RUNS, params) if _exists(conn, "tokenize_runs") else 0,
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


def _in_batches(conn: psycopg.Connection, statement: str, params: dict[str, object]) -> int:
    total = 0
    while True:
        deleted = conn.execute(statement, params).rowcount  # autocommit: each batch commits on its own
        total += deleted
        if deleted < int(params["batch"]):  # type: ignore[call-overload]
            return total


def _exists(conn: psycopg.Connection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])
