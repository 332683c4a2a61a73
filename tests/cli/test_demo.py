"""`provisioner demo` runs in CI as a test: exit code 0 and every one of its checks passes."""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from provisioner.scaffold import read_env


@pytest.mark.slow
def test_demo_runs_end_to_end_and_its_checks_pass_and_keep_says_how_to_attach_the_cli() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["COLUMNS"] = "120"
    # Outside pytest's 0700 tmp dir: the embedded PostgreSQL runs as its own system user when we are root.
    work = Path(tempfile.mkdtemp(prefix="provisioner-demo-test-"))
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "provisioner", "demo", "--keep", "--dir", str(work)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        ) as demo:
            try:
                shown = _read_until(demo, "Ctrl+C stops everything.", timeout=240)
                # Issue 15 §6: --keep says where the projects are and how to attach the CLI; doing so works.
                assert f"projects (one folder per product, each with its .env): {work / 'products'}" in shown
                env_file = work / "demo.env"
                assert f"set -a; . {env_file}; set +a" in shown
                assert env_file.stat().st_mode & 0o777 == 0o600  # it holds the demo's keys
                attached = {**env, **read_env(env_file)}
                grants = subprocess.run(
                    [sys.executable, "-m", "provisioner", "grants"],
                    env=attached,
                    capture_output=True,
                    text=True,
                    timeout=120,
                    check=False,
                )
                assert grants.returncode == 0, grants.stderr
                assert "marketing-insights" in grants.stdout and "SUCCESS 5 rows" in grants.stdout
            finally:
                demo.send_signal(signal.SIGINT)
                rest, stderr = demo.communicate(timeout=60)
        result = subprocess.CompletedProcess(demo.args, demo.returncode, shown + rest.decode(), stderr.decode())
        _check(result, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _read_until(proc: subprocess.Popen[bytes], marker: str, timeout: float) -> str:
    """What ``proc`` printed until ``marker`` (fails when it exits or takes too long); unbuffered reads, so that
    nothing printed waits in a buffer while select() says there is nothing to read."""
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    out = b""
    deadline = time.monotonic() + timeout
    while marker.encode() not in out:
        assert time.monotonic() < deadline, out[-3000:]
        if not select.select([fd], [], [], 1)[0]:
            continue
        chunk = os.read(fd, 65536)
        assert chunk, f"the demo exited ({proc.wait()}): {out[-3000:]!r}"
        out += chunk
    return out.decode()


def _check(result: subprocess.CompletedProcess[str], work: Path) -> None:
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    summary = re.search(r"^(\d+) passed, (\d+) failed$", out, re.MULTILINE)
    assert summary and int(summary[1]) >= 12 and summary[2] == "0", out[-2000:]
    assert "FAIL" not in out
    assert "AccessDenied" in out
    # The work directory holds real projects with 0600 .env files and no secret in the provisioner's state.
    env_file = work / "products" / "marketing-insights" / ".env"
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert "S3_READ_PREFIXES=data-products/customer-360/published/customers/" in env_file.read_text()
