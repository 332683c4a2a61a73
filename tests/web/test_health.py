"""Health, readiness and the per-app metrics registry."""

from __future__ import annotations

from tests.fixtures.s3 import free_port
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
