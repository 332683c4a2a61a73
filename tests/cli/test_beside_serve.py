"""Issue 15 §1, §4, §6: the CLI beside a running `provisioner serve` on embedded defaults, run as a user would.

One `serve` (embedded PostgreSQL and SeaweedFS in its data dir, a portal stand-in) is shared by the module. Each
command runs as a subprocess with the same settings; it must attach to the service's database and store (never
start a second store, never stop the service's), exit as documented, and leave the service healthy.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest

from provisioner.scaffold import read_env
from provisioner.storage.botocall import make_client
from provisioner.testing.portal import PortalState, StandinServer, serve_standin
from tests.cli.test_serve import _processes_of
from tests.fixtures.s3 import free_port

pytestmark = pytest.mark.slow


@dataclass
class Served:
    """The running service: its settings, data dir, web address, log file and the portal stand-in behind it."""

    env: dict[str, str]
    data_dir: Path
    base: str
    log: Path
    proc: subprocess.Popen[bytes]
    portal: StandinServer

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        """``provisioner <args>`` as a user runs it beside the service (same data dir), with its output."""
        return subprocess.run(
            [sys.executable, "-m", "provisioner", *args],
            env={**self.env, **extra},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def store_pid_file(self) -> dict[str, object]:
        return dict(json.loads((self.data_dir / "s3" / "store.pid").read_text()))

    def healthy(self) -> bool:
        return self.proc.poll() is None and httpx.get(f"{self.base}/readyz", timeout=10).status_code == 200


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    base_dir = Path(tempfile.mkdtemp(prefix="provisioner-test-beside-"))
    base_dir.chmod(0o755)  # embedded PostgreSQL runs as its own system user when we are root
    data_dir = base_dir / "data"
    portal = serve_standin(PortalState())
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATA_DIR=str(data_dir),
        PROVISIONER_S3_EMBEDDED_PORT=str(free_port()),
        PROVISIONER_PORTAL_URL=portal.url,
        PROVISIONER_RESYNC_SECONDS="0",
        PROVISIONER_TOKENIZE_REQUIRE_POLICY="false",
        COLUMNS="200",
    )
    port = free_port()
    log = base_dir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while not _ready(port):
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield Served(env, data_dir, f"http://127.0.0.1:{port}", log, proc, portal)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        portal.stop()
        for pid in _processes_of(data_dir):  # only what this module started, found by its own data dir
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base_dir, ignore_errors=True)


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """The single error line of a failed command (logs aside); fails on a traceback or more than one line."""
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("provisioner:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def test_every_product_command_works_beside_serve_and_leaves_it_running(served: Served) -> None:
    store_before = served.store_pid_file()
    product = served.portal.state.create_product("Beside", "beside-serve", notify=False)

    provisioned = served.run("provision", product.id)
    assert provisioned.returncode == 0, provisioned.stderr
    assert "success" in provisioned.stdout
    env = read_env(served.data_dir / "products" / "beside-serve" / ".env")
    # The key lives in the service's store (not in a store of the command's own that is gone now): it works.
    s3 = make_client(
        "s3",
        endpoint=env["S3_ENDPOINT"],
        access_key=env["S3_ACCESS_KEY"],
        secret_key=env["S3_SECRET_KEY"],
        region=env["S3_REGION"],
        max_attempts=1,
    )
    s3.put_object(Bucket=env["S3_BUCKET"], Key="beside-serve/raw/x.csv", Body=b"x")

    status = served.run("status")
    assert status.returncode == 0, status.stderr
    assert "beside-serve" in status.stdout and env["S3_ACCESS_KEY"] in status.stdout

    rotated = served.run("rotate", "beside-serve")
    assert rotated.returncode == 0, rotated.stderr
    assert read_env(served.data_dir / "products" / "beside-serve" / ".env")["S3_ACCESS_KEY"] != env["S3_ACCESS_KEY"]

    resync = served.run("resync")
    assert resync.returncode == 0, resync.stderr
    assert "resync: reading the products of the portal" in resync.stderr  # said before the (long) listing
    assert "0 failed" in resync.stderr

    for command in (["grants"], ["runs"], ["status", "beside-serve"]):
        result = served.run(*command)
        assert result.returncode == 0, (command, result.stderr)
        assert "Traceback" not in result.stderr

    assert served.store_pid_file() == store_before, "a command replaced or stopped the service's store"
    assert served.healthy()


def test_read_only_commands_start_no_store_beside_serve(served: Served) -> None:
    weeds_before = [p for p in _processes_of(served.data_dir) if "weed" in Path(f"/proc/{p}/cmdline").read_text()]
    for command in (["status"], ["grants"], ["runs", "--json"]):
        result = served.run(*command)
        assert result.returncode == 0, result.stderr
        assert "storage.embedded" not in result.stderr  # neither started nor attached: these never need the store
    weeds = [p for p in _processes_of(served.data_dir) if "weed" in Path(f"/proc/{p}/cmdline").read_text()]
    assert weeds == weeds_before
    assert served.healthy()


def test_provision_of_an_unknown_product_exits_1_and_records_nothing(served: Served) -> None:
    result = served.run("provision", "does-not-exist")
    assert result.returncode == 1
    assert "no data product 'does-not-exist'" in _one_line_error(result)
    url = f"postgresql://postgres@/postgres?host={served.data_dir / 'postgres'}"
    with psycopg.connect(url) as conn:
        runs = conn.execute("SELECT count(*) FROM provisioner_runs WHERE subject = 'does-not-exist'").fetchone()
        parked = conn.execute("SELECT count(*) FROM provisioner_products WHERE product_id = 'does-not-exist'")
        assert runs == (0,) and parked.fetchone() == (0,)
    assert "does-not-exist" not in served.run("status").stdout
    assert served.healthy()


@pytest.mark.parametrize(
    ("command", "says"),
    [
        (["grants", "Bad_NS"], "namespace 'Bad_NS' is not one the portal accepts"),
        (["grants", "nobody-here"], "namespace 'nobody-here' is not provisioned here"),
        (["status", "nobody-here"], "namespace 'nobody-here' is not provisioned here"),
    ],
)
def test_a_namespace_typo_exits_1_with_one_line(served: Served, command: list[str], says: str) -> None:
    result = served.run(*command)
    assert result.returncode == 1
    assert says in _one_line_error(result)


def test_an_unreachable_portal_gives_log_lines_and_one_error_never_bare_event_names(served: Served) -> None:
    result = served.run(
        "provision", "some-id", PROVISIONER_PORTAL_URL="http://127.0.0.1:9", PROVISIONER_PORTAL_RETRIES="2"
    )
    assert result.returncode == 1
    assert "could not be reached" in _one_line_error(result)
    for line in result.stderr.splitlines():
        # Each line is a JSON log record (stderr is no terminal here) or the error: "portal.retry" alone was what
        # Python's last-resort handler printed when the CLI had no logging set up.
        assert line.startswith(("{", "provisioner:")), result.stderr
    assert served.healthy()


def test_serve_states_its_data_dir_store_and_webhook_urls_at_start(served: Served) -> None:
    where = next(json.loads(line) for line in served.log.read_text().splitlines() if '"serve.where"' in line)
    assert where["data_dir"] == str(served.data_dir)
    assert "embedded SeaweedFS" in where["store"] and str(served.data_dir / "s3") in where["store"]
    assert where["webhook_v1"] == f"{served.base}/webhooks/portal"
    assert where["webhook_v2"] == f"{served.base}/webhooks/portal/v2"
    assert "serve.auth_off" not in served.log.read_text()  # listening on 127.0.0.1 only: no warning
