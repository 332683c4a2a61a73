"""Fixtures for the web tests: the real ASGI app over a real, migrated PostgreSQL database."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client import CollectorRegistry

from provisioner.web import create_app, open_pool
from provisioner.web.auth import WebhookAuth

SECRET = "demo-secret-key"  # the portal's WEBHOOK_SECRET when the samples were captured
SAMPLES = Path(__file__).parent.parent / "data" / "contract-samples"


def v1_samples() -> list[dict[str, Any]]:
    """The 23 captured, signed v1 deliveries (headers and raw bodies as sent)."""
    return json.loads((SAMPLES / "v1_deliveries_v0.7.0.json").read_text())["deliveries"]


def v2_sample(kind: str) -> dict[str, Any]:
    """One captured CloudEvent (headers, raw_body, body)."""
    return json.loads((SAMPLES / "v2" / f"v2_{kind}.json").read_text())


V2_KINDS = sorted(p.stem.removeprefix("v2_") for p in (SAMPLES / "v2").glob("v2_*.json"))


@dataclass
class Web:
    """A client on the app, its database and its metrics registry."""

    client: httpx.AsyncClient
    url: str
    registry: CollectorRegistry
    app: Any = None  # the ASGI app itself, for tests that drive it without a client

    def count(self, table: str) -> int:
        """Rows in ``table`` (inbox, keys or procrastinate_jobs)."""
        with psycopg.connect(self.url) as conn:
            row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # test-only, fixed table names
        return int(row[0]) if row else 0

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        """Run a read-only query on the app's database."""
        with psycopg.connect(self.url) as conn:
            return list(conn.execute(query).fetchall())  # type: ignore[arg-type]

    def stored_nothing(self) -> bool:
        """True when no delivery, key or job was stored."""
        return (
            self.count("provisioner_inbox") == 0
            and self.count("provisioner_inbox_keys") == 0
            and self.count("procrastinate_jobs") == 0
        )


WebFactory = Callable[..., Any]


@pytest.fixture
async def make_web(pg_url: str) -> AsyncIterator[WebFactory]:
    """Build the app with chosen auth settings; every pool opened is closed afterwards."""
    pools: list[Any] = []
    clients: list[httpx.AsyncClient] = []

    async def build(
        secret: str | None = SECRET,
        *,
        token_max_age: int = 0,
        max_body_bytes: int = 1024 * 1024,
        database_url: str | None = None,
        **app_options: Any,
    ) -> Web:
        pool = await open_pool(pg_url, min_size=1, max_size=4)
        pools.append(pool)
        registry = CollectorRegistry()
        app = create_app(
            pool=pool,
            database_url=database_url or pg_url,
            auth=WebhookAuth(secret, token_max_age=token_max_age, tolerance_seconds=300),
            registry=registry,
            max_body_bytes=max_body_bytes,
            **app_options,
        )
        client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://provisioner.test")
        clients.append(client)
        return Web(client, pg_url, registry, app)

    yield build
    for client in clients:
        await client.aclose()
    for pool in pools:
        await pool.close()


@pytest.fixture
async def web(make_web: WebFactory) -> Web:
    """The app with auth on (secret ``demo-secret-key``)."""
    return await make_web()
