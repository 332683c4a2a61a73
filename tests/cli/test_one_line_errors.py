"""Issue 15 §2, §4, §5: every mistake ends in one clear line and exit code 1, with no traceback and nothing started.

Each case runs `provisioner …` as a user would, in a subprocess. None of them needs a running service: they fail
(or warn) before anything is started, which is part of what they check.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.fixtures.s3 import free_port


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    return {**env, "PROVISIONER_DATA_DIR": str(tmp_path / "data"), **extra}


def _run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provisioner", *args], env=env, capture_output=True, text=True, timeout=120
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    """The command failed with exit code 1 and said why in one line on stderr, without a traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("provisioner: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("variables", "args", "says", "never"),
    [
        (
            {"PROVISIONER_PORT": "abc"},
            ["serve"],
            "PROVISIONER_PORT='abc' is invalid: 'abc' is not a whole number",
            "invalid literal",
        ),
        (
            {"PROVISIONER_DATABASE_URL": "db.example.com:5432/provisioner"},
            ["status"],
            "expected a PostgreSQL URL such as postgresql://user@host:5432/dbname",
            "http://",
        ),
        (
            {"PROVISIONER_TEMPLATE": "/nowhere/template"},
            ["status"],
            "PROVISIONER_TEMPLATE=/nowhere/template is not a cookiecutter template",
            None,
        ),
        ({}, ["worker", "--concurrency", "0"], "--concurrency 0: a worker runs 1 or more jobs at once", None),
        ({}, ["grants", "Bad_NS"], "namespace 'Bad_NS' is not one the portal accepts", None),
        ({}, ["status", "Bad_NS"], "namespace 'Bad_NS' is not one the portal accepts", None),
        (
            {"PROVISIONER_TOKENIZE_KEY": "too-short-a-key"},
            ["status"],
            "PROVISIONER_TOKENIZE_KEY is 15 bytes: an HMAC key must be at least 32 bytes",
            "too-short-a-key",
        ),
    ],
)
def test_a_mistake_is_one_line_and_exit_1_before_anything_starts(
    tmp_path: Path, variables: dict[str, str], args: list[str], says: str, never: str | None
) -> None:
    line = _one_line(_run(_env(tmp_path, **variables), *args))
    assert says in line
    if never:
        assert never not in line
    assert not (tmp_path / "data").exists(), "something was started before the mistake was found"


def test_a_short_hmac_key_passes_when_explicitly_allowed(tmp_path: Path) -> None:
    env = _env(
        tmp_path,
        PROVISIONER_TOKENIZE_KEY="too-short-a-key",
        PROVISIONER_TOKENIZE_ALLOW_SHORT_KEY="true",
        PROVISIONER_WEBHOOK_SECRET="s" * 32,
    )
    assert _run(env, "webhook-url", "--base", "http://provisioner:8090").returncode == 0


def test_a_data_dir_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    line = _one_line(_run(_env(tmp_path, PROVISIONER_DATA_DIR=str(blocker / "data")), "provision", "some-product"))
    assert f"PROVISIONER_DATA_DIR={blocker / 'data'} is not writable" in line


def test_a_busy_port_is_found_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = _one_line(_run(_env(tmp_path), "serve", "--host", "127.0.0.1", "--port", str(port)))
    assert f"127.0.0.1:{port} is already in use" in line and "--port" in line
    assert not (tmp_path / "data").exists(), "PostgreSQL or the store was started for a port that was busy"


@pytest.mark.slow
def test_seaweedfs_that_cannot_start_is_an_error_not_a_throwaway_store(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="provisioner-test-nostore-"))
    base.chmod(0o755)  # embedded PostgreSQL runs as its own system user when we are root
    data = base / "data"
    (data / "s3").mkdir(parents=True)
    (data / "s3" / "s3.json").write_text("{}")  # an identity file SeaweedFS cannot use: its start fails
    env = _env(tmp_path, PROVISIONER_DATA_DIR=str(data), PROVISIONER_S3_EMBEDDED_PORT=str(free_port()))
    try:
        line = _one_line(_run(env, "provision", "some-product"))
        assert "cannot start the embedded object store (SeaweedFS)" in line
        assert "PROVISIONER_STORE_IN_MEMORY" in line
        assert not (data / "products").exists(), "no project, no .env with a key of a store that is gone"
        assert not (data / "s3" / "moto.log").exists(), "moto's in-memory server was started in SeaweedFS's place"
    finally:
        _stop_postgres(data / "postgres")
        shutil.rmtree(base, ignore_errors=True)


def _stop_postgres(pg_dir: Path) -> None:
    pid_file = pg_dir / "postmaster.pid"
    if pid_file.exists():  # the server this test started, by its own pid
        os.kill(int(pid_file.read_text().split()[0]), 15)


def test_an_unknown_variable_warns_with_the_closest_setting(tmp_path: Path) -> None:
    env = _env(tmp_path, PROVISIONER_PROT="8091", PROVISIONER_WEBHOOK_SECRET="s" * 32)
    result = _run(env, "webhook-url", "--base", "http://provisioner:8090")
    assert result.returncode == 0
    assert "PROVISIONER_PROT is not a provisioner setting and is ignored; did you mean PROVISIONER_PORT?" in (
        result.stderr
    )


@pytest.mark.parametrize(
    ("how", "human"), [([], False), (["--log-format", "human"], True), (["--log-format", "json"], False)]
)
def test_logs_are_json_without_a_terminal_and_human_when_asked(tmp_path: Path, how: list[str], human: bool) -> None:
    env = _env(tmp_path, PROVISIONER_PROT="1", PROVISIONER_WEBHOOK_SECRET="s" * 32)
    result = _run(env, *how, "webhook-url", "--base", "http://x:1")
    [line] = [line for line in result.stderr.splitlines() if "PROVISIONER_PROT" in line]
    assert line.startswith("{") is not human
    if human:
        assert "warning" in line and "settings.unknown_variable" in line


def test_the_log_format_setting_forces_human_lines(tmp_path: Path) -> None:
    env = _env(tmp_path, PROVISIONER_PROT="1", PROVISIONER_WEBHOOK_SECRET="s" * 32, PROVISIONER_LOG_FORMAT="human")
    result = _run(env, "webhook-url", "--base", "http://x:1")
    assert not result.stderr.startswith("{") and "did you mean PROVISIONER_PORT" in result.stderr


@pytest.mark.parametrize(("host", "warns"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_serve_without_auth_on_a_public_address_warns_how_to_turn_it_on(tmp_path: Path, host: str, warns: bool) -> None:
    # The database cannot be reached, so serve stops right after its start-up checks: the warning comes first.
    env = _env(tmp_path, PROVISIONER_DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    result = _run(env, "serve", "--host", host, "--port", str(free_port()))
    assert result.returncode == 1 and "cannot reach PostgreSQL" in result.stderr
    warned = "webhook authentication is OFF" in result.stderr
    assert warned is warns
    if warns:
        assert "PROVISIONER_WEBHOOK_SECRET" in result.stderr and "provisioner webhook-url" in result.stderr


POLICY = """policies:
  - producer: some-producer
    output_port: '*'
    tenant: demo
    tables:
      - {schema: public, table: customers, columns: [email]}
"""


def test_tokenize_asks_on_a_terminal_and_a_no_changes_nothing(tmp_path: Path) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    env = _env(
        tmp_path,
        PROVISIONER_TOKENIZE_KEY="k" * 32,
        # Nothing listens there: answering no must not even connect.
        PROVISIONER_TENANT_DEMO_DSN="postgresql://nobody@127.0.0.1:9/tenant",
        TERM="dumb",
    )
    pid, fd = pty.fork()
    if pid == 0:  # the child: a user's terminal on stdin, stdout and stderr
        os.execve(sys.executable, [sys.executable, "-m", "provisioner", "tokenize", "--policy", str(policy)], env)  # noqa: S606
    seen = _read_until(fd, b"[y/N]")
    assert b"rewrites values in place" in seen and b"tenant demo: 1 column(s)" in seen
    os.write(fd, b"n\n")
    seen += _read_until(fd, None)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1
    assert b"nothing tokenized (not confirmed" in seen and b"Traceback" not in seen
    assert not (tmp_path / "data").exists()


def _read_until(fd: int, marker: bytes | None, timeout: float = 60) -> bytes:
    """Read the terminal until ``marker`` shows (or, for None, until the child closes it)."""
    out = b""
    deadline = time.monotonic() + timeout
    while marker is None or marker not in out:
        assert time.monotonic() < deadline, out
        if not select.select([fd], [], [], 1)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child exited and closed the terminal
            break
        if not chunk:
            break
        out += chunk
    return out


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["status"], 0, "nothing recorded yet: no database in"),
        (["grants"], 0, "nothing recorded yet: no database in"),
        (["runs"], 0, "nothing recorded yet: no database in"),
        (["status", "sales"], 1, "namespace 'sales' is not provisioned here"),
    ],
)
def test_read_only_commands_start_nothing_on_a_fresh_data_dir(
    tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    result = _run(_env(tmp_path), *args)
    assert result.returncode == code, result.stderr
    assert says in result.stdout + result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "data").exists(), "a command that only reads created (started) a database or a store"
