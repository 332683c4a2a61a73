"""The README's test webhooks work as printed: run by bash, with curl and openssl, against `provisioner serve`."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_serve import Server, _env, as_url

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- The two blocks below are run as they stand by tests/cli/test_readme_webhooks.py. -->"
# Prints the status after each curl answer, so that the test sees it without changing the README's commands.
CURL_WITH_STATUS = "curl() { command curl -w '\\nHTTP %{http_code}\\n' \"$@\"; }\n"


def readme_blocks() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert MARKER in text, "the README's test webhooks lost their marker"
    return re.findall(r"^```bash\n(.*?)^```", text.split(MARKER, 1)[1], re.MULTILINE | re.DOTALL)[:2]


@pytest.fixture
def server(pg_url: str) -> Iterator[Server]:
    started = Server(_env(PROVISIONER_DATABASE_URL=as_url(pg_url)), "--no-worker")
    yield started
    started.stop()


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_the_readme_test_webhooks_are_accepted_as_printed(server: Server) -> None:
    blocks = readme_blocks()
    assert [b.split(":", 1)[0] for b in blocks] == ["# v2", "# v1"]
    # The reader's shell: the provisioner's secret exported, the provisioner command on PATH.
    env = {**_env(), "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for block, status in zip(blocks, (202, 200), strict=True):
        assert "http://localhost:8090" in block
        script = CURL_WITH_STATUS + block.replace("http://localhost:8090", server.base)
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 0, result.stderr
        body, code = result.stdout.strip().rsplit("\nHTTP ", 1)
        assert int(code) == status, body
        assert json.loads(body)["outcome"] == "enqueued", body
