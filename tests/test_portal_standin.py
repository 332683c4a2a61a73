"""The portal stand-in keeps the real portal's finalizer semantics and sends webhooks in its wire format.

The wire format is checked against the deliveries captured from a running portal (shared contract samples).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from provisioner.testing.portal import PortalState, StandinServer, serve_standin
from tests.fixtures.portal import Delivery, WebhookSink

SAMPLES = Path(__file__).parent / "data" / "contract-samples"
if not SAMPLES.exists():
    SAMPLES = Path("/work/shared/contract-samples")
V1 = json.loads((SAMPLES / "v1_deliveries_v0.7.0.json").read_text()) if SAMPLES.exists() else None
API = "/api/v2/data_products"

needs_samples = pytest.mark.skipif(V1 is None, reason="contract samples not available")


def verify_v1(secret: str, raw: bytes, sign: str) -> bool:
    """How a receiver verifies the portal's v1 signature: over the raw body, or over json.dumps of it."""
    key = secret.encode()
    candidates = [raw, json.dumps(json.loads(raw)).encode()]
    return any(hmac.compare_digest(hmac.new(key, c, hashlib.sha512).hexdigest(), sign) for c in candidates)


def signed_over_raw(secret: str, raw: bytes, sign: str) -> bool:
    return hmac.compare_digest(hmac.new(secret.encode(), raw, hashlib.sha512).hexdigest(), sign)


def events(sink: WebhookSink, portal: StandinServer, kind: str) -> list[Delivery]:
    assert portal.state.flush_webhooks()
    want = "/v1" if kind == "v1" else "/v2"
    return [d for d in sink.deliveries if d.path.startswith(want)]


@pytest.fixture
def hooked(portal: StandinServer, webhook_sink: WebhookSink) -> StandinServer:
    portal.state.webhook_v1_url = f"{webhook_sink.url}/v1"
    portal.state.webhook_v1_secret = "demo-secret-key"
    portal.state.webhook_v2_url = f"{webhook_sink.url}/v2?token=t"
    return portal


# -- finalizer semantics --------------------------------------------------------------------------


def test_delete_without_finalizers_removes_at_once(portal: StandinServer) -> None:
    p = portal.state.create_product("p")
    r = httpx.delete(f"{portal.url}{API}/{p.id}")
    assert r.status_code == 200
    assert httpx.get(f"{portal.url}{API}/{p.id}").status_code == 404
    assert httpx.delete(f"{portal.url}{API}/{p.id}").status_code == 404


def test_delete_with_finalizers_marks_deleting_until_the_last_is_removed(portal: StandinServer) -> None:
    p = portal.state.create_product("p", status="active")
    base = f"{portal.url}{API}/{p.id}"
    assert httpx.post(f"{base}/finalizers", json={"finalizer": "provisioner"}).status_code == 200
    assert httpx.post(f"{base}/finalizers", json={"finalizer": "other"}).status_code == 200
    assert httpx.delete(base).status_code == 202
    assert httpx.get(base).json()["status"] == "deleting"
    assert httpx.delete(f"{base}/finalizers/provisioner").status_code == 200
    still = httpx.get(base).json()
    assert (still["status"], still["finalizers"]) == ("deleting", ["other"])
    assert httpx.delete(f"{base}/finalizers/other").status_code == 200
    assert httpx.get(base).status_code == 404


def test_removing_a_finalizer_without_a_pending_delete_keeps_the_product(portal: StandinServer) -> None:
    p = portal.state.create_product("p", finalizers=["provisioner"])
    base = f"{portal.url}{API}/{p.id}"
    assert httpx.delete(f"{base}/finalizers/provisioner").status_code == 200
    assert httpx.get(base).json()["finalizers"] == []
    assert httpx.delete(f"{base}/finalizers/provisioner").status_code == 404


def test_status_put_validates_like_the_portal(portal: StandinServer) -> None:
    p = portal.state.create_product("p")
    base = f"{portal.url}{API}/{p.id}/status"
    assert httpx.put(base, json={"status": "deleting"}).status_code == 422
    assert httpx.put(base, json={"status": "bogus"}).status_code == 422
    assert httpx.put(base, json={"status": "archived"}).status_code == 200
    assert portal.state.product(p.id).status == "archived"  # type: ignore[union-attr]


def test_access_decisions_take_the_consumer_id_in_the_body(portal: StandinServer) -> None:
    s = portal.state
    prod, cons = s.create_product("prod"), s.create_product("cons")
    port = s.create_output_port(prod.id, "orders")
    r = httpx.post(f"{portal.url}{API}/{cons.id}/input_ports", json={"output_ports": [port.id], "justification": "j"})
    assert r.status_code == 200 and len(r.json()["input_port_links"]) == 1
    url = f"{portal.url}{API}/{prod.id}/output_ports/{port.id}/input_ports"
    assert httpx.post(f"{url}/approve", json={"consuming_data_product_id": cons.id}).status_code == 200
    assert httpx.post(f"{url}/approve", json={"consuming_data_product_id": cons.id}).status_code == 400
    assert s.input_port(port.id, cons.id).status == "approved"  # type: ignore[union-attr]
    assert httpx.post(f"{url}/revoke", json={"consuming_data_product_id": cons.id}).status_code == 200
    assert s.input_port(port.id, cons.id).status == "revoked"  # type: ignore[union-attr]
    assert httpx.post(f"{url}/deny", json={"consuming_data_product_id": "other"}).status_code == 404
    view = httpx.get(f"{url}/").json()["input_ports"]
    assert [(i["consuming_abstract_data_product_id"], i["status"]) for i in view] == [(cons.id, "revoked")]


def test_unrestricted_ports_are_approved_without_an_approve_call(portal: StandinServer) -> None:
    s = portal.state
    prod, cons = s.create_product("prod"), s.create_product("cons")
    port = s.create_output_port(prod.id, "open", access_type="unrestricted")
    assert s.request_access(cons.id, port.id).status == "approved"


def test_fault_injection_hits_gets_only_and_api_key_is_enforced(portal: StandinServer) -> None:
    p = portal.state.create_product("p")
    portal.state.fail_next(1, 502)
    assert httpx.put(f"{portal.url}{API}/{p.id}/status", json={"status": "active"}).status_code == 200
    assert httpx.get(f"{portal.url}{API}").status_code == 502
    assert httpx.get(f"{portal.url}{API}").status_code == 200
    portal.state.fail_next(5, 503)
    portal.state.clear_faults()  # the portal recovers: nothing queued is answered any more
    assert httpx.get(f"{portal.url}{API}").status_code == 200
    portal.state.api_key = "k"
    assert httpx.get(f"{portal.url}{API}").status_code == 403
    assert httpx.get(f"{portal.url}{API}", headers={"x-key": "k"}).status_code == 200


def test_list_serves_ten_thousand_products(portal: StandinServer) -> None:
    portal.state.bulk_create_products(10_000)
    body = httpx.get(f"{portal.url}{API}", timeout=30).json()
    assert len(body["data_products"]) == 10_000


# -- webhook v1 -----------------------------------------------------------------------------------


@needs_samples
def test_captured_v1_deliveries_verify_over_json_dumps_not_the_raw_body() -> None:
    """The fact the stand-in must reproduce: the portal signs json.dumps(content), sends compact JSON."""
    assert V1 is not None
    secret = V1["webhook_secret"]
    for d in V1["deliveries"]:
        raw = d["raw_body"].encode()
        assert verify_v1(secret, raw, d["headers"]["Sign"])
        assert not signed_over_raw(secret, raw, d["headers"]["Sign"])


@needs_samples
def test_v1_delivery_matches_the_captured_wire_format(hooked: StandinServer, webhook_sink: WebhookSink) -> None:
    assert V1 is not None
    captured = V1["deliveries"][0]  # POST /api/v2/data_products
    r = httpx.post(f"{hooked.url}{API}", json={"name": "Sales", "namespace": "sales"})
    new_id = r.json()["id"]
    (d,) = events(webhook_sink, hooked, "v1")
    # Same bytes as the real portal would send for this product id: compact, same key order.
    expected_raw = captured["raw_body"].replace(json.loads(captured["body"]["response"])["id"], new_id)
    assert d.body == expected_raw.encode()
    assert d.headers["content-type"] == "application/json"
    assert verify_v1("demo-secret-key", d.body, d.headers["sign"])
    assert not signed_over_raw("demo-secret-key", d.body, d.headers["sign"])
    assert not verify_v1("another-secret", d.body, d.headers["sign"])


@needs_samples
def test_v1_covers_every_write_with_the_portals_response_rules(
    hooked: StandinServer, webhook_sink: WebhookSink
) -> None:
    s = hooked.state
    prod, cons = s.create_product("prod", notify=False), s.create_product("cons", notify=False)
    port = s.create_output_port(prod.id, "orders", notify=False)
    s.request_access(cons.id, port.id, notify=False)
    url = f"{hooked.url}{API}/{prod.id}/output_ports/{port.id}/input_ports"
    httpx.post(f"{url}/approve", json={"consuming_data_product_id": cons.id})
    httpx.post(f"{url}/approve", json={"consuming_data_product_id": cons.id})  # 400: nothing pending
    httpx.put(f"{hooked.url}{API}/{prod.id}/status", json={"status": "active"})
    httpx.post(f"{hooked.url}{API}/{prod.id}/finalizers", json={"finalizer": "provisioner"})
    httpx.delete(f"{hooked.url}{API}/{prod.id}")
    httpx.get(f"{hooked.url}{API}/{prod.id}")  # reads send nothing
    bodies = [json.loads(d.body) for d in events(webhook_sink, hooked, "v1")]
    summary = [
        (b["method"], b["url"].removeprefix(f"{API}/{prod.id}"), b["status_code"], b["response"]) for b in bodies
    ]
    approve = f"/output_ports/{port.id}/input_ports/approve"
    assert summary[0] == ("POST", approve, 200, "null")
    assert summary[1][:3] == ("POST", approve, 400)
    assert json.loads(summary[1][3])["detail"] == "There is no pending request"
    assert summary[2:] == [
        ("PUT", "/status", 200, ""),
        ("POST", "/finalizers", 200, "null"),
        ("DELETE", "", 202, ""),
    ]
    # The captured deliveries for the same calls carry the same methods, codes and response rules.
    assert V1 is not None
    for body in bodies:
        twin = [c["body"] for c in V1["deliveries"] if shape(c["body"]) == shape(body)]
        assert twin, f"no captured delivery like {shape(body)}"
        if body["status_code"] < 400:
            assert twin[0]["response"] == body["response"]


def shape(body: dict[str, Any]) -> tuple[str, str, int]:
    """(method, last path segment with ids blanked, status code) of a v1 body."""
    last = body["url"].rstrip("/").rsplit("/", 1)[-1]
    try:
        uuid.UUID(last)
        last = "{id}"
    except ValueError:
        pass
    return body["method"], last, body["status_code"]


def test_v1_without_secret_has_no_sign_header(portal: StandinServer, webhook_sink: WebhookSink) -> None:
    portal.state.webhook_v1_url = f"{webhook_sink.url}/v1"
    portal.state.create_product("p")
    (d,) = events(webhook_sink, portal, "v1")
    assert "sign" not in d.headers


# -- webhook v2 -----------------------------------------------------------------------------------


def captured_v2(name: str) -> dict[str, Any]:
    return json.loads((SAMPLES / "v2" / f"v2_{name}.json").read_text())


@needs_samples
@pytest.mark.parametrize("name", ["data_product", "input_port", "output_port"])
def test_v2_envelope_matches_the_captured_shape(hooked: StandinServer, webhook_sink: WebhookSink, name: str) -> None:
    s = hooked.state
    prod, cons = s.create_product("prod", notify=False), s.create_product("cons", notify=False)
    port = s.create_output_port(prod.id, "orders", notify=name == "output_port")
    if name == "input_port":
        s.request_access(cons.id, port.id, notify=False)
        s.approve(port.id, cons.id)
    elif name == "data_product":
        httpx.put(f"{hooked.url}{API}/{prod.id}/status", json={"status": "active"})
    (d,) = events(webhook_sink, hooked, "v2")
    sample = captured_v2(name)
    got = json.loads(d.body)
    assert list(got) == list(sample["body"])  # same keys, same order
    assert list(got["data"]) == list(sample["body"]["data"])
    assert (got["specversion"], got["source"], got["type"]) == ("1.0", "data-product-portal", sample["body"]["type"])
    assert uuid.UUID(got["id"]).version == 4
    assert datetime.fromisoformat(got["time"]).utcoffset() is not None
    assert d.headers["content-type"] == sample["headers"]["Content-Type"]
    assert "sign" not in d.headers
    assert d.body.startswith(b'{"specversion":"1.0","id":')  # compact like the captured raw body
    assert d.path.endswith("?token=t")


def test_input_port_event_names_the_consumer(hooked: StandinServer, webhook_sink: WebhookSink) -> None:
    s = hooked.state
    prod, cons = s.create_product("prod", notify=False), s.create_product("cons", notify=False)
    port = s.create_output_port(prod.id, "orders", notify=False)
    link = s.request_access(cons.id, port.id, notify=False)
    url = f"{hooked.url}{API}/{prod.id}/output_ports/{port.id}/input_ports"
    for action in ("approve", "revoke"):
        httpx.post(f"{url}/{action}", json={"consuming_data_product_id": cons.id})
    data = [json.loads(d.body)["data"] for d in events(webhook_sink, hooked, "v2")]
    expected = {
        "id": link.id,
        "consuming_abstract_data_product_id": cons.id,
        "consuming_abstract_data_product_type": "data_products",
    }
    assert data == [expected, expected]


def test_own_writes_are_echoed_even_when_nothing_changed(hooked: StandinServer, webhook_sink: WebhookSink) -> None:
    p = hooked.state.create_product("p", status="active", notify=False)
    base = f"{hooked.url}{API}/{p.id}"
    httpx.put(f"{base}/status", json={"status": "active"})  # unchanged value: still echoed
    httpx.post(f"{base}/finalizers", json={"finalizer": "provisioner"})
    httpx.delete(f"{base}/finalizers/provisioner")
    v2 = [json.loads(d.body) for d in events(webhook_sink, hooked, "v2")]
    assert [(e["type"], e["data"]) for e in v2] == [("data_product.event", {"id": p.id})] * 3
    assert len({e["id"] for e in v2}) == 3
    assert len(events(webhook_sink, hooked, "v1")) == 3


def test_echo_writes_off_silences_only_the_provisioners_writes(
    hooked: StandinServer, webhook_sink: WebhookSink
) -> None:
    hooked.state.echo_writes = False
    p = hooked.state.create_product("p", notify=False)
    base = f"{hooked.url}{API}/{p.id}"
    httpx.put(f"{base}/status", json={"status": "active"})
    httpx.post(f"{base}/finalizers", json={"finalizer": "provisioner"})
    httpx.delete(base)  # a person's delete still notifies
    v2 = [json.loads(d.body) for d in events(webhook_sink, hooked, "v2")]
    assert [e["data"]["id"] for e in v2] == [p.id]
    assert [json.loads(d.body)["method"] for d in events(webhook_sink, hooked, "v1")] == ["DELETE"]


def test_failed_requests_send_v1_but_no_v2(hooked: StandinServer, webhook_sink: WebhookSink) -> None:
    httpx.post(f"{hooked.url}{API}/missing/finalizers", json={"finalizer": "x"})
    assert hooked.state.flush_webhooks()
    assert [json.loads(d.body)["status_code"] for d in events(webhook_sink, hooked, "v1")] == [404]
    assert events(webhook_sink, hooked, "v2") == []


def test_duplicate_v2_events_carry_distinct_ids(hooked: StandinServer, webhook_sink: WebhookSink) -> None:
    hooked.state.duplicate_v2_events = True
    hooked.state.create_product("p")
    v2 = [json.loads(d.body) for d in events(webhook_sink, hooked, "v2")]
    assert len(v2) == 2 and v2[0]["data"] == v2[1]["data"] and v2[0]["id"] != v2[1]["id"]


def test_an_unreachable_receiver_is_logged_and_dropped_without_blocking() -> None:
    state = PortalState(webhook_v2_url="http://127.0.0.1:9/hook", webhook_timeout=0.5)
    with serve_standin(state) as server:
        p = state.create_product("p", notify=False)
        r = httpx.put(f"{server.url}{API}/{p.id}/status", json={"status": "active"}, timeout=2)
        assert r.status_code == 200
        assert state.flush_webhooks()
        (sent,) = state.sent
        assert sent.status_code is None and sent.error and "Connect" in sent.error


def test_a_receiver_error_is_not_retried(hooked: StandinServer, webhook_sink: WebhookSink) -> None:
    webhook_sink.status_code = 500
    hooked.state.webhook_v1_url = None
    hooked.state.create_product("p")
    assert len(events(webhook_sink, hooked, "v2")) == 1
    assert [s.status_code for s in hooked.state.sent] == [500]
