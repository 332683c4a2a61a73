"""Run liveness (``provisioner_processes``, migration 006): the processes that record runs, and the sweep that fails
the runs of a process that stopped beating ("worker died"), in ``provisioner_runs`` and ``tokenize_runs``.

The heartbeat thread and its timing live in ``provisioner.db`` (``ProcessHeartbeat``, ``fail_dead_runs``).
"""

from __future__ import annotations

from typing import Any

import psycopg

_DEAD = """
NOT EXISTS (SELECT 1 FROM provisioner_processes p
             WHERE p.owner = r.owner AND p.heartbeat_at > now() - make_interval(secs => %(stale)s))
"""
_FAIL_RUNS = (
    """
UPDATE provisioner_runs r
   SET status = 'failure', finished_at = now(),
       error = 'worker died: process ' || r.owner || ' stopped before the run finished'
 WHERE r.status = 'running' AND r.owner IS NOT NULL AND r.owner <> %(self)s AND """
    + _DEAD
    + " RETURNING r.id"
)
_FAIL_TOKENIZE_RUNS = (
    """
UPDATE tokenize_runs r
   SET state = 'COMPLETE', result = 'FAILURE', finished_at = now(),
       error = 'worker died: process ' || r.owner || ' stopped before the run finished'
 WHERE r.state = 'RUNNING' AND r.owner IS NOT NULL AND r.owner <> %(self)s AND """
    + _DEAD
    + " RETURNING r.run_id"
)


def register(conn: psycopg.Connection[Any], owner: str, host: str, pid: int, command: str) -> None:
    """Say that process ``owner`` is alive (registering it again if a sweep forgot it)."""
    conn.execute(
        "INSERT INTO provisioner_processes (owner, host, pid, command) VALUES (%s, %s, %s, %s)"
        " ON CONFLICT (owner) DO UPDATE SET heartbeat_at = now()",
        (owner, host, pid, command),
    )


def leave(conn: psycopg.Connection[Any], owner: str) -> None:
    """Process ``owner`` stops: its runs still open cannot finish any more (failed), and its entry goes."""
    conn.execute(
        "UPDATE provisioner_runs SET status = 'failure', finished_at = now(),"
        " error = 'the process stopped before the run finished' WHERE status = 'running' AND owner = %s",
        (owner,),
    )
    conn.execute("DELETE FROM provisioner_processes WHERE owner = %s", (owner,))


def fail_runs_of_dead(conn: psycopg.Connection[Any], stale_after: float, alive: str) -> tuple[int, int]:
    """Fail the running runs whose process has not beaten for ``stale_after`` seconds, but never ``alive``'s own;
    return how many (runs, tokenization runs). Then forget processes silent for a day (they have no run left)."""
    params = {"stale": stale_after, "self": alive}
    runs = len(conn.execute(_FAIL_RUNS, params).fetchall())
    tokenize = len(conn.execute(_FAIL_TOKENIZE_RUNS, params).fetchall())  # its table is migration 012's
    conn.execute("DELETE FROM provisioner_processes WHERE heartbeat_at < now() - interval '1 day'")
    return runs, tokenize
