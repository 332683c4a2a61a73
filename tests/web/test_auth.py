"""Each authentication mode accepts a good delivery and rejects a bad one with 401, storing nothing."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from prometheus_client import CollectorRegistry, Counter
from standardwebhooks import Webhook

from provisioner.web.auth import TOKEN_PAYLOAD, TOKEN_SALT, standard_webhooks_key, url_token, v1_signature
from provisioner.web.metrics import serve_worker_metrics
from tests.web.conftest import SECRET, Web, WebFactory, v1_samples

P = "c9d573ab-84ce-48c4-9051-e7c0a37b1c4d"
JSON = {"Content-Type": "application/json"}


def event() -> bytes:
    return json.dumps(
        {"specversion": "1.0", "id": str(uuid.uuid4()), "source": "s", "type": "data_product.event", "data": {"id": P}}
    ).encode()


def standard_headers(body: bytes, *, secret: str = SECRET, at: float | None = None) -> dict[str, str]:
    """Headers a Standard Webhooks sender (the reference library) produces with our derived key."""
    msg_id = f"msg_{uuid.uuid4().hex}"
    stamp = datetime.fromtimestamp(at if at is not None else time.time(), tz=UTC)
    signature = Webhook(standard_webhooks_key(secret)).sign(msg_id, stamp, body.decode())
    return {
        **JSON,
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(stamp.timestamp())),
        "webhook-signature": signature,
    }


async def _rejected(web: Web, response: object, needle: str) -> None:
    assert response.status_code == 401  # type: ignore[attr-defined]
    assert needle in response.json()["error"]  # type: ignore[attr-defined]
    assert web.stored_nothing()


# v1 Sign -------------------------------------------------------------------------------------------


async def test_v1_captured_signature_is_accepted_byte_for_byte(web: Web) -> None:
    sample = v1_samples()[0]
    response = await web.client.post(
        "/webhooks/portal", content=sample["raw_body"].encode(), headers={**JSON, "Sign": sample["headers"]["Sign"]}
    )
    assert response.status_code == 200  # v1 deliveries are answered 200 (issue 12, item 5)


async def test_v1_tampered_body_is_rejected(web: Web) -> None:
    sample = v1_samples()[0]
    tampered = sample["raw_body"].replace("61bbfcb6", "61bbfcb7").encode()
    response = await web.client.post(
        "/webhooks/portal", content=tampered, headers={**JSON, "Sign": sample["headers"]["Sign"]}
    )
    await _rejected(web, response, "Sign header does not match")


async def test_v1_wrong_secret_is_rejected(web: Web) -> None:
    body = v1_samples()[0]["raw_body"].encode()
    response = await web.client.post(
        "/webhooks/portal", content=body, headers={**JSON, "Sign": v1_signature("another-secret", body)}
    )
    await _rejected(web, response, "Sign header does not match")


async def test_missing_credentials_are_rejected(web: Web) -> None:
    response = await web.client.post("/webhooks/portal", content=v1_samples()[0]["raw_body"].encode(), headers=JSON)
    await _rejected(web, response, "no credentials")


async def test_garbage_sign_header_is_401_not_500(web: Web) -> None:
    body = v1_samples()[0]["raw_body"].encode()
    headers = {**JSON, "Sign": "zz\u00e9".encode("latin-1")}
    response = await web.client.post("/webhooks/portal", content=body, headers=headers)
    await _rejected(web, response, "Sign header does not match")


# v2 URL token --------------------------------------------------------------------------------------


async def test_url_token_is_accepted(web: Web) -> None:
    response = await web.client.post(f"/webhooks/portal/v2?token={url_token(SECRET)}", content=event(), headers=JSON)
    assert response.status_code == 202


@pytest.mark.parametrize("token", [url_token("another-secret"), url_token(SECRET)[:-2] + "xx", "", "a.b.c"])
async def test_bad_url_token_is_rejected(web: Web, token: str) -> None:
    response = await web.client.post(f"/webhooks/portal/v2?token={token}", content=event(), headers=JSON)
    await _rejected(web, response, "URL token is not valid")


async def test_expired_url_token_is_rejected_when_a_max_age_is_set(make_web: WebFactory) -> None:
    class Past(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 3600

    old = URLSafeTimedSerializer(SECRET, salt=TOKEN_SALT, signer=Past).dumps(TOKEN_PAYLOAD)
    strict = await make_web(token_max_age=60)
    response = await strict.client.post(f"/webhooks/portal/v2?token={old}", content=event(), headers=JSON)
    await _rejected(strict, response, "URL token expired")
    lenient = await make_web(token_max_age=0)
    assert (
        await lenient.client.post(f"/webhooks/portal/v2?token={old}", content=event(), headers=JSON)
    ).status_code == 202


# Standard Webhooks ---------------------------------------------------------------------------------


async def test_standard_webhooks_signature_is_accepted(web: Web) -> None:
    body = event()
    headers = standard_headers(body)
    response = await web.client.post("/webhooks/portal", content=body, headers=headers)
    assert response.status_code == 202
    assert web.rows("SELECT generation, delivery_id FROM provisioner_inbox") == [("standard", headers["webhook-id"])]


async def test_standard_webhooks_tampered_body_is_rejected(web: Web) -> None:
    body = event()
    headers = standard_headers(body)
    response = await web.client.post(
        "/webhooks/portal", content=body.replace(b"data_product", b"exploration"), headers=headers
    )
    await _rejected(web, response, "webhook-signature does not match")


async def test_standard_webhooks_wrong_secret_is_rejected(web: Web) -> None:
    body = event()
    response = await web.client.post("/webhooks/portal", content=body, headers=standard_headers(body, secret="nope"))
    await _rejected(web, response, "webhook-signature does not match")


async def test_standard_webhooks_stale_timestamp_is_rejected(web: Web) -> None:
    body = event()
    response = await web.client.post(
        "/webhooks/portal", content=body, headers=standard_headers(body, at=time.time() - 301)
    )
    await _rejected(web, response, "outside the 300 s tolerance")


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
async def test_standard_webhooks_missing_header_is_rejected(web: Web, missing: str) -> None:
    body = event()
    headers = standard_headers(body)
    del headers[missing]
    response = await web.client.post("/webhooks/portal", content=body, headers=headers)
    await _rejected(web, response, f"header missing: {missing}")


@pytest.mark.parametrize(
    ("header", "value", "needle"),
    [
        ("webhook-signature", "v1,%%%not-base64", "does not match"),
        ("webhook-signature", "no-comma-at-all", "does not match"),
        ("webhook-timestamp", "12a", "not a Unix time"),
        ("webhook-timestamp", "9" * 40, "not a Unix time"),
    ],
)
async def test_malformed_standard_webhooks_headers_are_401_not_500(
    web: Web, header: str, value: str, needle: str
) -> None:
    body = event()
    headers = {**standard_headers(body), header: value}
    response = await web.client.post("/webhooks/portal", content=body, headers=headers)
    await _rejected(web, response, needle)


# Auth off ------------------------------------------------------------------------------------------


async def test_without_a_secret_auth_is_off(make_web: WebFactory) -> None:
    web = await make_web(secret=None)
    response = await web.client.post("/webhooks/portal/v2", content=event(), headers=JSON)
    assert response.status_code == 202


# Status token (PROVISIONER_STATUS_TOKEN) -----------------------------------------------------------------

STATUS_TOKEN = "status-token-0123456789abcdef"
GUARDED = ["/status/products", "/metrics", "/"]


@pytest.mark.parametrize("path", GUARDED)
@pytest.mark.parametrize(
    "authorization",
    [None, "", "Bearer", "Bearer wrong-token-0123456789abcdef", f"Basic {STATUS_TOKEN}", STATUS_TOKEN],
)
async def test_with_a_status_token_status_and_metrics_need_it(
    make_web: WebFactory, path: str, authorization: str | None
) -> None:
    web = await make_web(status_token=STATUS_TOKEN)
    headers = {} if authorization is None else {"Authorization": authorization}
    response = await web.client.get(path, headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "PROVISIONER_STATUS_TOKEN" in response.json()["error"]


async def test_the_status_token_opens_status_and_metrics(make_web: WebFactory) -> None:
    web = await make_web(status_token=STATUS_TOKEN)
    for scheme in ("Bearer", "bearer"):
        headers = {"Authorization": f"{scheme} {STATUS_TOKEN}"}
        assert (await web.client.get("/status/products", headers=headers)).status_code == 200
        metrics = await web.client.get("/metrics", headers=headers)
        assert metrics.status_code == 200 and "provisioner_webhook_deliveries" in metrics.text


async def test_probes_and_webhooks_stay_open_with_a_status_token(make_web: WebFactory) -> None:
    web = await make_web(status_token=STATUS_TOKEN)
    assert (await web.client.get("/healthz")).status_code == 200
    assert (await web.client.get("/readyz")).status_code in (200, 503)  # readiness is health.py's; never 401
    response = await web.client.post(f"/webhooks/portal/v2?token={url_token(SECRET)}", content=event(), headers=JSON)
    assert response.status_code == 202  # the webhook's own authentication, not the status token


async def test_without_a_status_token_status_and_metrics_are_open(web: Web) -> None:
    assert (await web.client.get("/status/products")).status_code == 200
    assert (await web.client.get("/metrics")).status_code == 200


def test_worker_metrics_port_honours_the_status_token() -> None:
    registry = CollectorRegistry()
    Counter("provisioner_jobs", "Jobs finished", registry=registry).inc()
    server = serve_worker_metrics(0, "127.0.0.1", registry, STATUS_TOKEN)
    url = f"http://127.0.0.1:{server.server_port}/metrics"
    try:
        assert httpx.get(url, timeout=5).status_code == 401
        assert httpx.get(url, headers={"Authorization": "Bearer nope-nope-nope-nope"}, timeout=5).status_code == 401
        response = httpx.get(url, headers={"Authorization": f"Bearer {STATUS_TOKEN}"}, timeout=5)
        assert response.status_code == 200 and "provisioner_jobs_total 1.0" in response.text
    finally:
        server.shutdown()
        server.server_close()


def test_worker_metrics_port_without_a_token_is_open() -> None:
    server = serve_worker_metrics(0, "127.0.0.1", CollectorRegistry())
    try:
        assert httpx.get(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5).status_code == 200
    finally:
        server.shutdown()
        server.server_close()
