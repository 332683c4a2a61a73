import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from provisioner import db
from provisioner.persistence.state import StateStore
from provisioner.tokenize import RunRecorder


def test_migrations_apply_once_and_leave_nothing_pending(pg_empty_url: str) -> None:
    first = db.migrate(pg_empty_url)
    assert first[0] == db.PROCRASTINATE_MIGRATION
    assert "001_runs" in first
    assert db.migrate(pg_empty_url) == []
    with psycopg.connect(pg_empty_url) as conn:
        assert db.pending_migrations(conn) == []
        assert conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone() == (True,)


def test_fresh_database_reports_pending(pg_empty_url: str) -> None:
    with psycopg.connect(pg_empty_url) as conn:
        assert db.PROCRASTINATE_MIGRATION in db.pending_migrations(conn)


def test_pg_url_fixture_is_migrated(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert db.pending_migrations(conn) == []


# -- the embedded server across kill -9 (issue 13 §2) ------------------------------------------------------------

_START = """
import sys
from pathlib import Path
from provisioner import db
server = db.start_embedded(Path(sys.argv[1]))
print(server.url, flush=True)
if sys.argv[2] == "hang":
    sys.stdin.read()  # until the test kills us
"""


def _embedded_process(data_dir: Path, mode: str) -> subprocess.Popen[str]:
    """A Python process that starts the embedded server of ``data_dir``, prints its URL, then hangs or exits."""
    return subprocess.Popen(
        [sys.executable, "-c", _START, str(data_dir), mode],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _postmaster_pid(data_dir: Path) -> int | None:
    """The pid of a postgres server running on ``data_dir``, if any."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if Path(os.fsdecode(args[0])).name == "postgres" and os.fsencode(data_dir) in args:
            return int(proc.name)
    return None


@pytest.fixture
def embedded_dir() -> Iterator[Path]:
    """A data dir the embedded server's own user can reach (pytest's tmp_path is 0700); its server stopped after."""
    base = Path(tempfile.mkdtemp(prefix="provisioner-test-embedded-"))
    base.chmod(0o755)
    data_dir = base / "pg"
    yield data_dir
    pid = _postmaster_pid(data_dir)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)  # the server this test started, found by its own data dir
    shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_a_graceful_exit_after_a_killed_process_stops_embedded_postgres(embedded_dir: Path) -> None:
    with _embedded_process(embedded_dir, "hang") as killed:
        assert killed.stdout is not None and killed.stdout.readline().startswith("postgresql://")
        killed.kill()  # kill -9: its handle stays in embedded-postgres's list of users of the server
        killed.wait()
    running = _postmaster_pid(embedded_dir)
    assert running is not None  # pg_ctl daemonised it: it outlives the killed process

    # The next process takes the running server over and, exiting normally as the only live user, stops it.
    nxt = _embedded_process(embedded_dir, "exit")
    out, _ = nxt.communicate(timeout=60)
    assert nxt.returncode == 0 and out.startswith("postgresql://")
    assert _postmaster_pid(embedded_dir) is None


@pytest.mark.slow
def test_a_postmaster_pid_file_naming_another_process_does_not_block_the_start(embedded_dir: Path) -> None:
    first = _embedded_process(embedded_dir, "exit")
    first.communicate(timeout=60)
    assert first.returncode == 0 and _postmaster_pid(embedded_dir) is None
    # A crashed server's lock file whose pid now belongs to another process.
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as other:
        try:
            (embedded_dir / "postmaster.pid").write_text(
                f"{other.pid}\n{embedded_dir}\n1700000000\n5432\n{embedded_dir}\n\n  1 2\nready   \n"
            )
            again = _embedded_process(embedded_dir, "exit")
            out, _ = again.communicate(timeout=60)
            assert again.returncode == 0 and out.startswith("postgresql://"), "the start failed on the stale lock file"
            assert other.poll() is None, "the process named by the stale lock file was left alone"
        finally:
            other.kill()
            other.wait()


# -- no run stays running forever (issue 13 §3) --------------------------------------------------------------------


def _run_status(url: str, run_id: int) -> tuple[str, str | None]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT status, error FROM provisioner_runs WHERE id = %s", (run_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_runs_whose_process_stopped_beating_become_failures(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO provisioner_processes (owner, host, pid, command, heartbeat_at) VALUES"
            " ('dead', 'h', 1, 'provisioner worker', now() - interval '5 minutes'),"
            " ('alive', 'h', 2, 'provisioner worker', now())"
        )
        ids = {
            label: conn.execute(
                "INSERT INTO provisioner_runs (kind, subject, status, owner) VALUES ('product', %s, %s, %s)"
                " RETURNING id",
                (label, status, owner),
            ).fetchone()[0]  # type: ignore[index]
            for label, status, owner in [
                ("of-dead", "running", "dead"),
                ("of-unknown", "running", "never-registered"),
                ("of-alive", "running", "alive"),
                ("no-owner", "running", None),
                ("finished", "success", "dead"),
            ]
        }
    recorder = RunRecorder(pg_url, owner="dead")
    started = datetime.now(UTC)
    recorder.start(run_id=str(uuid.uuid4()), tenant="t", policy="p", dry_run=False, tables=["a"], started_at=started)
    tokenize_run = recorder.last(1)[0].run_id

    with psycopg.connect(pg_url) as conn:
        assert db.fail_dead_runs(conn) == (2, 1)
        assert db.fail_dead_runs(conn) == (0, 0)  # idempotent

    for label in ("of-dead", "of-unknown"):
        status, error = _run_status(pg_url, ids[label])
        assert status == "failure" and error and error.startswith("worker died"), (label, status, error)
    assert _run_status(pg_url, ids["of-alive"]) == ("running", None)
    assert _run_status(pg_url, ids["no-owner"]) == ("running", None)
    assert _run_status(pg_url, ids["finished"]) == ("success", None)
    record = recorder.get(tokenize_run)
    assert record is not None and (record.state, record.result) == ("COMPLETE", "FAILURE")
    assert record.error and record.error.startswith("worker died")


_RUN_AND_HANG = """
import sys
from provisioner import db
from provisioner.persistence.state import StateStore
url = sys.argv[1]
with db.ProcessHeartbeat(url, interval=0.2) as heartbeat, db.open_pool(url, max_size=2) as pool:
    run = StateStore(pool, owner=heartbeat.owner).start_run("product", "p-killed")
    print(run.id, flush=True)
    sys.stdin.read()  # until the test kills us
"""


def test_the_run_of_a_killed_worker_becomes_a_failure_and_status_says_so(pg_url: str) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", _RUN_AND_HANG, pg_url], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as proc:
        assert proc.stdout is not None
        run_id = int(proc.stdout.readline())
        proc.kill()  # kill -9 mid-run: nothing of the process gets to say the run ended
        proc.wait()
    assert _run_status(pg_url, run_id)[0] == "running"

    # The next process that records runs (a restarted worker) sweeps at start and with every beat.
    with db.ProcessHeartbeat(pg_url, interval=0.1, stale_after=0.5):
        deadline = time.monotonic() + 30
        while _run_status(pg_url, run_id)[0] == "running" and time.monotonic() < deadline:
            time.sleep(0.05)  # the dead process's last beat must age past stale_after first
    status, error = _run_status(pg_url, run_id)
    assert status == "failure" and error and error.startswith("worker died: process ")

    with db.open_pool(pg_url, max_size=1) as pool:
        shown = StateStore(pool).last_run_per_subject()["p-killed"]  # what `provisioner status` prints
    assert (shown["status"], shown["error"]) == ("failure", error)


def test_a_process_that_stops_with_a_run_open_fails_it(pg_url: str) -> None:
    with db.ProcessHeartbeat(pg_url) as heartbeat, db.open_pool(pg_url, max_size=1) as pool:
        run = StateStore(pool, owner=heartbeat.owner).start_run("product", "p-interrupted")
        assert _run_status(pg_url, run.id) == ("running", None)
    assert _run_status(pg_url, run.id) == ("failure", "the process stopped before the run finished")
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM provisioner_processes").fetchone() == (0,)


def test_a_killed_tokenize_command_leaves_no_run_running(pg_url: str, pg_empty_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO people VALUES (1, 'ada@example.com')")
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "policies:\n  - producer: sales\n    output_port: customers\n    tenant: sales\n"
        "    tables:\n      - {schema: public, table: people, columns: [email]}\n"
    )
    parts = psycopg.conninfo.conninfo_to_dict(pg_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATABASE_URL=f"postgresql://{parts['user']}@/{parts['dbname']}?host={parts['host']}",
        PROVISIONER_TENANT_SALES_DSN=pg_empty_url,
        PROVISIONER_TOKENIZE_KEY="k" * 32,
        PROVISIONER_TOKENIZE_LOCK_TIMEOUT_MS="600000",
    )
    with psycopg.connect(pg_empty_url) as holder:
        holder.execute("LOCK TABLE people IN ACCESS EXCLUSIVE MODE")  # the run waits here, recorded as RUNNING
        proc = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "tokenize", "--policy", str(policy)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            recorder = RunRecorder(pg_url)
            deadline = time.monotonic() + 60
            while not any(r.state == "RUNNING" for r in recorder.last(5)):
                assert proc.poll() is None and time.monotonic() < deadline, "the run never started"
                time.sleep(0.05)
        finally:
            proc.kill()  # kill -9 while the run waits for its lock
            proc.wait()
    with db.ProcessHeartbeat(pg_url, interval=0.1, stale_after=0.5):
        deadline = time.monotonic() + 30
        while recorder.last(1)[0].state == "RUNNING" and time.monotonic() < deadline:
            time.sleep(0.05)
    record = recorder.last(1)[0]
    assert (record.state, record.result) == ("COMPLETE", "FAILURE")
    assert record.error and record.error.startswith("worker died")
