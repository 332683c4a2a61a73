"""Health, readiness and the per-app metrics registry."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry

from provisioner.jobs import WorkerHealth
from provisioner.names import BucketName
from provisioner.storage import build_store
from provisioner.storage.base import StoreAdmin
from provisioner.web import create_app, open_pool
from provisioner.web.auth import WebhookAuth
from provisioner.web.health import ReadinessCheck, blocking_check, worker_check
from tests.fixtures.s3 import S3Server, free_port
from tests.web.conftest import Web, WebFactory


async def test_healthz_and_readyz_on_a_migrated_database(web: Web) -> None:
    assert (await web.client.get("/healthz")).json() == {"status": "ok"}
    ready = await web.client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_readyz_reports_pending_migrations(make_web: WebFactory, pg_empty_url: str) -> None:
    web = await make_web(database_url=pg_empty_url)
    ready = await web.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"] == "migrations pending"
    assert "002_inbox" in ready.json()["pending"]


async def test_readyz_reports_an_unreachable_database(make_web: WebFactory) -> None:
    web = await make_web(database_url=f"postgresql://user:pw-secret@127.0.0.1:{free_port()}/x")
    ready = await web.client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"].startswith("database unreachable")
    assert "pw-secret" not in ready.text
    assert (await web.client.get("/healthz")).status_code == 200


async def test_each_app_has_its_own_metrics_registry(make_web: WebFactory) -> None:
    first, second = await make_web(), await make_web()  # the global registry would refuse a second app
    metrics = await first.client.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "provisioner_webhook_deliveries_total" in (await second.client.get("/metrics")).text


# -- readiness beyond the database (issue 13 §6) -------------------------------------------------------------------


@pytest.fixture
async def make_ready_app(pg_url: str) -> AsyncIterator[Callable[..., Awaitable[httpx.AsyncClient]]]:
    """The real app over the test database with the given extra readiness checks."""
    pools: list[Any] = []
    clients: list[httpx.AsyncClient] = []

    async def build(database_url: str = pg_url, **readiness: ReadinessCheck) -> httpx.AsyncClient:
        pool = await open_pool(pg_url, min_size=1, max_size=2)
        pools.append(pool)
        app = create_app(
            pool=pool,
            database_url=database_url,
            auth=WebhookAuth(None),
            registry=CollectorRegistry(),
            readiness=readiness,
        )
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://provisioner.test")
        clients.append(client)
        return client

    yield build
    for client in clients:
        await client.aclose()
    for pool in pools:
        await pool.close()


def _store(endpoint: str, server: S3Server | None = None) -> StoreAdmin:
    return build_store(
        "aws-iam",
        endpoint=endpoint,
        access_key=server.access_key if server else "nobody",
        secret_key=server.secret_key if server else "nothing",
        region="us-east-1",
        timeout=1.0,
        max_attempts=1,
    )


async def test_readyz_is_ready_when_store_and_worker_are(make_ready_app: Any, moto_server: S3Server) -> None:
    store = _store(moto_server.endpoint, moto_server)
    client = await make_ready_app(
        store=blocking_check("object store", lambda: store.object_exists(BucketName("no-such-bucket"), "x")),
        worker=worker_check(WorkerHealth(running=True, reason="")),
    )
    ready = await client.get("/readyz")
    assert (ready.status_code, ready.json()) == (200, {"status": "ready"})


async def test_readyz_reports_an_unreachable_object_store(make_ready_app: Any) -> None:
    store = _store(f"http://127.0.0.1:{free_port()}")  # nothing listens there
    client = await make_ready_app(
        store=blocking_check("object store", lambda: store.object_exists(BucketName("data-products"), "x"))
    )
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"].startswith("object store unreachable")
    assert ready.json()["checks"] == {"database": "ok", "store": ready.json()["error"]}
    assert (await client.get("/healthz")).status_code == 200  # liveness is not readiness


async def test_readyz_reports_a_worker_that_is_not_running(make_ready_app: Any) -> None:
    health = WorkerHealth(running=False, reason="the worker lost the database and is reconnecting: PoolTimeout")
    client = await make_ready_app(worker=worker_check(health))
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"] == f"worker not running: {health.reason}"
    health.running = True
    assert (await client.get("/readyz")).status_code == 200


async def test_a_hung_store_answers_503_in_bounded_time_with_one_probe_at_a_time(make_ready_app: Any) -> None:
    release = threading.Event()
    calls: list[int] = []

    def hung_probe() -> None:
        calls.append(1)
        release.wait(30)

    client = await make_ready_app(store=blocking_check("object store", hung_probe, timeout=0.2))
    try:
        for _ in range(3):
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["checks"]["store"] == "object store did not answer within 0.2 s"
        assert calls == [1], "a probe still running is awaited again, not started a second time"
    finally:
        release.set()


async def test_readyz_reports_every_failing_check(make_ready_app: Any) -> None:
    client = await make_ready_app(
        database_url=f"postgresql://user:pw@127.0.0.1:{free_port()}/x",
        worker=worker_check(WorkerHealth()),
    )
    body = (await client.get("/readyz")).json()
    assert set(body["checks"]) == {"database", "worker"}
    assert body["checks"]["database"].startswith("database unreachable")
    assert body["checks"]["worker"] == "worker not running: the worker has not started yet"


async def test_a_check_that_raises_is_a_503_with_its_reason_not_a_500(make_ready_app: Any) -> None:
    async def broken() -> str | None:
        raise RuntimeError("probe bug")

    client = await make_ready_app(store=broken)
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["store"] == "check failed: RuntimeError: probe bug"
