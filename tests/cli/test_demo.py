"""`provisioner demo` runs in CI as a test: exit code 0 and every one of its checks passes."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


@pytest.mark.slow
def test_demo_runs_end_to_end_and_its_checks_pass() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env["COLUMNS"] = "120"
    # Outside pytest's 0700 tmp dir: the embedded PostgreSQL runs as its own system user when we are root.
    work = Path(tempfile.mkdtemp(prefix="provisioner-demo-test-"))
    try:
        result = subprocess.run(
            [sys.executable, "-m", "provisioner", "demo", "--dir", str(work)],
            env=env,
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
        )
        _check(result, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


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
