"""The suite's own environment: a developer's ``PROVISIONER_*`` shell settings stay out, the test database stays in."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_no_provisioner_setting_reaches_a_test(pg_server_url: str) -> None:
    assert sorted(name for name in os.environ if name.startswith("PROVISIONER_")) == []
    expected = os.environ.get("HYGIENE_EXPECTED_DATABASE_URL")
    if expected:  # set by the test below: the shell's test database is still the one used
        assert pg_server_url == expected


def test_a_shell_with_provisioner_settings_runs_the_suite_without_them(pg_server_url: str) -> None:
    env = {
        **os.environ,
        "PROVISIONER_LOG_LEVEL": "DEBUG",
        "PROVISIONER_PORTAL_URL": "http://portal.invalid",
        "PROVISIONER_DATABASE_URL": pg_server_url,  # honoured, as the suite's test server
        "HYGIENE_EXPECTED_DATABASE_URL": pg_server_url,
    }
    test = f"{Path(__file__).relative_to(ROOT)}::test_no_provisioner_setting_reaches_a_test"
    inner = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--no-cov", test],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert inner.returncode == 0, inner.stdout + inner.stderr
    assert "1 passed" in inner.stdout
