"""Retention against real PostgreSQL: old rows go, live jobs, running runs and the newest runs per subject stay."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest

from provisioner import jobs
from provisioner.events import Trigger
from provisioner.retention import PruneReport, RetentionPolicy, prune
from provisioner.tokenize.records import SCHEMA as TOKENIZE_RUNS_SCHEMA

OLD = "now() - interval '40 days'"
RECENT = "now() - interval '1 day'"
# Batches of 2: every table needs several rounds, so the batching is exercised too.
POLICY = RetentionPolicy(days=30, keep_runs=3, batch_size=2)


def _inbox(conn: psycopg.Connection, tag: str, at: str) -> None:
    conn.execute(
        "INSERT INTO provisioner_inbox (dedup_key, generation, event_type, outcome, body, received_at)"
        f" VALUES (%s, 'v2', 'data_product.event', 'enqueued', '{{}}', {at})",
        (tag,),
    )
    conn.execute(f"INSERT INTO provisioner_inbox_keys (dedup_key, seen_at) VALUES (%s, {at})", (tag,))


def _job(conn: psycopg.Connection, tag: str, status: str, at: str) -> None:
    """A procrastinate job moved to ``status``, every event of it dated ``at``."""
    row = conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args) VALUES ('provisioner', %s, %s, '{}')"
        " RETURNING id",
        (jobs.TASK_PRODUCT, tag),
    ).fetchone()
    assert row is not None
    if status in ("doing", "succeeded", "failed", "aborted"):
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (row[0],))
    if status != "doing" and status != "todo":
        conn.execute("UPDATE procrastinate_jobs SET status = %s WHERE id = %s", (status, row[0]))
    conn.execute(f"UPDATE procrastinate_events SET at = {at} WHERE job_id = %s", (row[0],))


def _runs(conn: psycopg.Connection, subject: str, statuses: Sequence[str], at: str) -> None:
    """Runs of ``subject``, oldest first, a minute apart, ending at ``at``."""
    for n, status in enumerate(statuses):
        conn.execute(
            "INSERT INTO provisioner_runs (kind, subject, status, started_at)"
            f" VALUES ('product', %s, %s, {at} - make_interval(mins => %s))",
            (subject, status, len(statuses) - n),
        )


def _tokenize_run(conn: psycopg.Connection, policy: str, state: str, at: str, minutes: int) -> str:
    run_id = str(uuid.uuid4())
    conn.execute(
        "INSERT INTO tokenize_runs (run_id, tenant, policy, dry_run, state, result, started_at)"
        f" VALUES (%s, 'sales', %s, false, %s, %s, {at} - make_interval(mins => %s))",
        (run_id, policy, state, None if state == "RUNNING" else "SUCCESS", minutes),
    )
    return run_id


def _left(conn: psycopg.Connection, query: str) -> list[Any]:
    return sorted(r[0] for r in conn.execute(query))  # type: ignore[arg-type]


def test_prune_deletes_what_is_old_and_keeps_live_jobs_running_runs_and_the_newest_runs(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for tag in ("old-1", "old-2", "old-3"):
            _inbox(conn, tag, OLD)
        for tag in ("new-1", "new-2"):
            _inbox(conn, tag, RECENT)
        for status in ("succeeded", "failed", "cancelled", "aborted"):
            _job(conn, f"old-{status}", status, OLD)
        _job(conn, "old-todo", "todo", OLD)  # waiting since long (a retry far in the future): live
        _job(conn, "old-doing", "doing", OLD)  # running for long (or its worker died): live
        _job(conn, "new-succeeded", "succeeded", RECENT)
        _runs(conn, "many-old", ["success", "failure", "success", "skipped", "success", "success"], OLD)
        _runs(conn, "few-old", ["success", "failure"], OLD)
        _runs(conn, "many-new", ["success"] * 6, RECENT)
        _runs(conn, "old-running", ["running", "success", "success", "success", "failure"], OLD)
        conn.execute(TOKENIZE_RUNS_SCHEMA)
        old_runs = [_tokenize_run(conn, "sales/orders", "COMPLETE", OLD, m) for m in (60, 50, 40, 30, 20, 10)]
        running = _tokenize_run(conn, "sales/orders", "RUNNING", OLD, 90)
        granted, outcome = old_runs[0], old_runs[1]  # the oldest two, but a grant and an outcome name them
        conn.execute(
            "INSERT INTO provisioner_grants (consumer_id, output_port_id, producer_id, producer_namespace,"
            " tokenize_run_id) VALUES ('c', 'op', 'p', 'sales', %s)",
            (granted,),
        )
        conn.execute(
            "INSERT INTO provisioner_tokenize_outcomes (output_port_id, producer_id, status, run_id)"
            " VALUES ('op', 'p', 'SUCCESS', %s)",
            (outcome,),
        )

    report = prune(pg_url, POLICY)

    with psycopg.connect(pg_url) as conn:
        assert _left(conn, "SELECT dedup_key FROM provisioner_inbox") == ["new-1", "new-2"]
        assert _left(conn, "SELECT dedup_key FROM provisioner_inbox_keys") == ["new-1", "new-2"]
        assert _left(conn, "SELECT lock FROM procrastinate_jobs") == ["new-succeeded", "old-doing", "old-todo"]
        events = conn.execute(
            "SELECT count(*) FROM procrastinate_events e LEFT JOIN procrastinate_jobs j ON j.id = e.job_id"
            " WHERE j.id IS NULL"
        ).fetchone()
        assert events == (0,)  # a deleted job's events went with it
        runs = conn.execute(
            "SELECT subject, array_agg(status ORDER BY started_at) FROM provisioner_runs GROUP BY subject"
        ).fetchall()
        assert dict(runs) == {
            "many-old": ["skipped", "success", "success"],  # the newest 3
            "few-old": ["success", "failure"],  # fewer than 3: all kept, however old
            "many-new": ["success"] * 6,  # not old
            "old-running": ["running", "success", "success", "failure"],  # the running one stays
        }
        assert _left(conn, "SELECT run_id::text FROM tokenize_runs") == sorted(
            [running, granted, outcome, *old_runs[-3:]]
        )
    assert report.inbox == 3 and report.inbox_keys == 3 and report.jobs == 4
    assert report.runs == 3 + 1 and report.tokenize_runs == 1


def test_retention_days_0_keeps_everything(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _inbox(conn, "old", OLD)
        _job(conn, "old-succeeded", "succeeded", OLD)
        _runs(conn, "p", ["success"] * 5, OLD)
    assert prune(pg_url, RetentionPolicy(days=0, keep_runs=1)) == PruneReport()
    with psycopg.connect(pg_url) as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM provisioner_inbox), (SELECT count(*) FROM procrastinate_jobs),"
            " (SELECT count(*) FROM provisioner_runs)"
        ).fetchone()
    assert counts == (1, 1, 5)


def test_prune_before_any_tokenization_run(pg_url: str) -> None:
    # tokenize_runs is a migration's table (012) since issue 14: it exists before the engine's first run.
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM tokenize_runs").fetchone() == (0,)
    assert prune(pg_url, POLICY).tokenize_runs == 0


def test_a_policy_must_keep_at_least_the_newest_run() -> None:
    with pytest.raises(ValueError, match="keep_runs"):
        RetentionPolicy(days=30, keep_runs=0)


class _NoHandlers:
    def reconcile_product(self, product_id: str) -> None: ...

    def reconcile_access(self, consumer_id: str) -> None: ...

    def reconcile_output_port(self, producer_id: str, output_port_id: str) -> None: ...

    def resync(self) -> Sequence[Trigger]:
        return []


async def test_the_worker_prunes_hourly_through_its_periodic_task(pg_url: str) -> None:
    app = jobs.build_app(pg_url, _NoHandlers(), max_attempts=1, resync_seconds=0, retention=POLICY)
    periodic = {pt.periodic_id: pt for pt in app.periodic_registry.periodic_tasks.values()}
    assert periodic["retention"].cron == jobs.RETENTION_CRON
    assert periodic["retention"].task.name == jobs.TASK_RETENTION
    with psycopg.connect(pg_url, autocommit=True) as conn:
        _inbox(conn, "old", OLD)
        _job(conn, "old-succeeded", "succeeded", OLD)
    async with app.open_async():
        await app.configure_task(jobs.TASK_RETENTION).defer_async(timestamp=0)
    await jobs.run_worker(app, concurrency=1, wait=False, install_signal_handlers=False)
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM provisioner_inbox").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE lock = 'old-succeeded'").fetchone() == (0,)
        pruned = conn.execute(
            "SELECT status::text FROM procrastinate_jobs WHERE task_name = %s", (jobs.TASK_RETENTION,)
        ).fetchall()
    # The deferred job, and possibly the hourly one: the worker's periodic deferrer also queues a run whose time
    # passed less than ten minutes ago, so near the scheduled minute two retention jobs run.
    assert pruned and set(pruned) == {("succeeded",)}


def test_retention_off_is_not_scheduled(pg_url: str) -> None:
    app = jobs.build_app(
        pg_url, _NoHandlers(), max_attempts=1, resync_seconds=0, retention=RetentionPolicy(days=0, keep_runs=1)
    )
    assert "retention" not in {pt.periodic_id for pt in app.periodic_registry.periodic_tasks.values()}
    assert jobs.TASK_RETENTION in app.tasks  # still known, so one already queued can run


def test_serve_and_worker_schedule_retention_from_the_settings(pg_url: str) -> None:
    from provisioner.settings import Settings
    from provisioner.site import job_app

    def scheduled(env: dict[str, str]) -> set[str]:
        app = job_app(Settings.from_env(env), pg_url, _NoHandlers())
        return {pt.periodic_id for pt in app.periodic_registry.periodic_tasks.values()}

    assert "retention" in scheduled({})  # on by default: 30 days, newest 20 runs per subject
    assert "retention" not in scheduled({"PROVISIONER_RETENTION_DAYS": "0"})
