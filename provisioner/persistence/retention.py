"""What retention deletes, table by table (the policy and its schedule: ``provisioner.retention``).

Every statement deletes one batch (``DELETE … WHERE id IN (SELECT … LIMIT n)``) and is repeated until a batch comes
back short, each batch its own short transaction on an autocommit connection.
"""

from __future__ import annotations

from typing import Any

import psycopg

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

# The subject of a tokenization run is its tenant and policy; a run a grant or an output port's outcome names stays.
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


def delete_old_inbox(conn: psycopg.Connection[Any], *, days: int, batch: int) -> int:
    """Inbox rows received more than ``days`` ago; how many went."""
    return _in_batches(conn, _INBOX, {"days": days, "batch": batch})


def delete_old_inbox_keys(conn: psycopg.Connection[Any], *, days: int, batch: int) -> int:
    """Delivery keys last seen more than ``days`` ago; how many went."""
    return _in_batches(conn, _INBOX_KEYS, {"days": days, "batch": batch})


def delete_finished_jobs(conn: psycopg.Connection[Any], *, days: int, batch: int, finished: list[str]) -> int:
    """Jobs in a ``finished`` state with no event in ``days`` (their events go with them); how many went."""
    return _in_batches(conn, _JOBS, {"days": days, "batch": batch, "finished": finished})


def delete_old_runs(conn: psycopg.Connection[Any], *, days: int, keep: int, batch: int) -> int:
    """Finished runs older than ``days`` beyond the newest ``keep`` of their subject; how many went."""
    return _in_batches(conn, _RUNS, {"days": days, "keep": keep, "batch": batch})


def delete_old_tokenize_runs(conn: psycopg.Connection[Any], *, days: int, keep: int, batch: int) -> int:
    """Tokenization runs older than ``days`` beyond the newest ``keep`` of their tenant and policy, unless running
    or named by a grant or an outcome; how many went."""
    return _in_batches(conn, _TOKENIZE_RUNS, {"days": days, "keep": keep, "batch": batch})


def _in_batches(conn: psycopg.Connection[Any], statement: str, params: dict[str, Any]) -> int:
    total = 0
    while True:
        deleted = conn.execute(statement, params).rowcount  # autocommit: each batch commits on its own
        total += deleted
        if deleted < int(params["batch"]):
            return total
