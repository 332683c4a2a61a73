import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from provisioner import db


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
    killed = _embedded_process(embedded_dir, "hang")
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
    other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
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
