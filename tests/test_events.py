"""Parsing the portal's real deliveries (captured bytes) and the ways a body can be wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from provisioner.errors import InvalidInput, UnsupportedMediaType
from provisioner.events import (
    ReconcileAccess,
    ReconcileOutputPort,
    ReconcileProduct,
    ResyncAll,
    parse_delivery,
)

SAMPLES = Path(__file__).parent / "data" / "contract-samples"
V1 = json.loads((SAMPLES / "v1_deliveries_v0.7.0.json").read_text())["deliveries"]
JSON = {"Content-Type": "application/json"}
P = "61bbfcb6-5466-4e37-b226-1586fd449f95"
OP = "ca8f28b0-d093-4693-9c25-3f301a97d3dd"
C = "edc59d7a-01a8-419f-a0dc-59f3b46bf7d7"


def v2_sample(kind: str) -> dict[str, Any]:
    return json.loads((SAMPLES / "v2" / f"v2_{kind}.json").read_text())


def v1(method: str, url: str, status: int = 200, response: str = "") -> bytes:
    return json.dumps({"method": method, "url": url, "query": "", "response": response, "status_code": status}).encode()


def test_every_captured_v1_delivery_parses_to_its_trigger() -> None:
    parsed = [parse_delivery(d["raw_body"].encode(), d["headers"]) for d in V1]
    assert len(parsed) == 23
    assert {p.generation for p in parsed} == {"v1"}
    assert parsed[0].triggers == (ReconcileProduct(P),)
    assert parsed[2].triggers == (ReconcileOutputPort(P, OP),)  # output port created
    assert parsed[3].triggers == () and parsed[3].ignored_reason == "portal call failed with 4xx"
    assert parsed[9].triggers == (ReconcileProduct(P),)  # PUT …/status
    assert parsed[11].triggers == (ReconcileProduct("a8368eff-fd26-4744-a105-52e868b7fc1c"),)  # finalizer added
    assert parsed[12].event_type == "data_product.deleted"
    assert parsed[15].triggers == (ReconcileAccess(C),)  # consumer requested access
    assert parsed[16].triggers == (ReconcileOutputPort(P, OP),)  # approve
    failed = [p for p in parsed if p.ignored_reason]
    assert len(failed) == 7 and all(p.body["status_code"] >= 400 for p in failed)
    # v1 has no id: the key is a digest of the body, equal for equal bodies only.
    assert parsed[16].dedup_key != parsed[18].dedup_key
    assert parse_delivery(V1[0]["raw_body"].encode(), JSON).dedup_key == parsed[0].dedup_key


@pytest.mark.parametrize(
    ("kind", "trigger", "ignored"),
    [
        ("data_product", ReconcileProduct("c9d573ab-84ce-48c4-9051-e7c0a37b1c4d"), None),
        ("input_port", ReconcileAccess("37b040ae-c904-41c4-bfbe-8008eb9474f7"), None),
        (
            "output_port",
            ReconcileOutputPort("c9d573ab-84ce-48c4-9051-e7c0a37b1c4d", "95b56b51-7f4c-47d1-b79c-cb324dfef171"),
            None,
        ),
        ("technical_asset", None, "technical assets are not provisioned"),
        ("output_port_technical_asset_link", None, "technical asset links do not change storage or grants"),
        ("data_product_role_assignment", None, "role assignments are not provisioned"),
        ("output_port_role_assignment", None, "role assignments are not provisioned"),
        ("data_product_setting_value", None, "setting values are not provisioned"),
        ("exploration", None, "explorations are not provisioned yet"),
    ],
)
def test_every_captured_v2_event_parses(kind: str, trigger: object, ignored: str | None) -> None:
    sample = v2_sample(kind)
    delivery = parse_delivery(sample["raw_body"].encode(), sample["headers"])
    assert delivery.generation == "v2"
    assert delivery.delivery_id == sample["body"]["id"]
    assert delivery.event_type == f"{kind}.event"
    assert delivery.triggers == ((trigger,) if trigger else ())
    assert delivery.ignored_reason == ignored


def test_binary_mode_cloudevent_parses_like_structured() -> None:
    sample = v2_sample("data_product")["body"]
    headers = {
        "content-type": "application/json",
        "ce-specversion": "1.0",
        "ce-id": sample["id"],
        "ce-source": sample["source"],
        "ce-type": sample["type"],
    }
    binary = parse_delivery(json.dumps(sample["data"]).encode(), headers)
    structured = parse_delivery(json.dumps(sample).encode(), {"content-type": "application/cloudevents+json"})
    assert binary.triggers == structured.triggers == (ReconcileProduct(sample["data"]["id"]),)
    assert binary.dedup_key == structured.dedup_key
    assert binary.body["data"] == sample["data"]


def test_explorations_and_unknown_types_are_ignored_not_rejected() -> None:
    event = v2_sample("input_port")["body"]
    event["data"]["consuming_abstract_data_product_type"] = "explorations"
    assert parse_delivery(json.dumps(event).encode(), JSON).ignored_reason == "explorations are not provisioned yet"
    event["type"] = "dataset.event.new_in_2027"
    delivery = parse_delivery(json.dumps(event).encode(), JSON)
    assert delivery.triggers == () and delivery.ignored_reason.startswith("unknown event type")  # type: ignore[union-attr]


def test_older_v1_spellings() -> None:
    assert parse_delivery(v1("PUT", f"/api/data_products/{P}"), JSON).triggers == (ReconcileProduct(P),)
    assert parse_delivery(v1("DELETE", f"/api/data_products/{P}"), JSON).triggers == (ReconcileProduct(P),)
    link = parse_delivery(v1("POST", f"/api/data_product_dataset_links/approve/{OP}", response="null"), JSON)
    assert link.triggers == (ResyncAll(),)
    other = parse_delivery(v1("POST", "/api/v2/domains", response='{"id": "x"}'), JSON)
    assert other.triggers == () and other.ignored_reason == "path is not one the provisioner acts on"


def test_standard_webhooks_id_is_the_delivery_id() -> None:
    body = json.dumps({"type": "data_product.event", "timestamp": "2026-11-22T10:00:00Z", "data": {"id": P}}).encode()
    delivery = parse_delivery(body, {**JSON, "webhook-id": "msg_1"})
    assert delivery.generation == "standard"
    assert delivery.delivery_id == "msg_1"
    assert delivery.triggers == (ReconcileProduct(P),)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "body is not JSON"),
        (b"\xff\xfe{}", "body is not UTF-8"),
        (b"[1, 2]", "body must be a JSON object, got an array"),
        (b'{"hello": "world"}', "neither a v1 envelope"),
        (b'{"specversion": "0.3", "id": "1", "source": "s", "type": "t"}', "specversion must be '1.0'"),
        (b'{"specversion": "1.0", "source": "s", "type": "t"}', "attribute 'id'"),
        (
            b'{"specversion": "1.0", "id": "1", "source": "s", "type": "data_product.event", "data": {"id": "../etc"}}',
            "data.id must be a UUID",
        ),
        (b'{"specversion": "1.0", "id": "1", "source": "s", "type": "data_product.event"}', "JSON object in 'data'"),
        (b'{"method": "PUT", "url": "/api/v2/data_products/1;DROP", "status_code": 200}', "must be a UUID"),
        (b'{"method": "PUT", "url": "/x", "status_code": "200"}', "'status_code' must be an HTTP status"),
        (b'{"method": "PUT", "url": "/x", "status_code": NaN}', "NaN"),
        (b'{"method": "PUT", "url": "/x\\u0000", "status_code": 200}', "\\u0000"),
        (b'{"method": "PUT", "url": "/x\\ud800", "status_code": 200}', "surrogate"),
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),
        (b'{"a":' * 40 + b"1" + b"}" * 40, "nested deeper"),
    ],
)
def test_bad_bodies_raise_invalid_input_naming_the_problem(body: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_delivery(body, JSON)
    assert info.value.http_status == 400
    assert message in str(info.value)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_wrong_content_type_is_unsupported(content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    with pytest.raises(UnsupportedMediaType):
        parse_delivery(V1[0]["raw_body"].encode(), headers)


def test_ids_are_normalised_to_lower_case() -> None:
    assert parse_delivery(v1("PUT", f"/api/v2/data_products/{P.upper()}"), JSON).triggers == (ReconcileProduct(P),)
