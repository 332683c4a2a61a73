"""Portal webhook deliveries (legacy v1 envelope, CloudEvents 1.0, Standard Webhooks) → typed triggers.

Pure parsing: no I/O. A delivery says *which* entity changed; the worker reads its current state later,
so every trigger carries only ids. ``parse_delivery`` raises ``InvalidInput`` (400) or
``UnsupportedMediaType`` (415) with a message that names the problem; nothing else escapes it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

from provisioner.errors import InvalidInput, UnsupportedMediaType


def product_lock(product_id: str) -> str:
    """The lock key of a product: its jobs (product and access) and the CLI commands that change it share it."""
    return f"product:{product_id}"


@dataclass(frozen=True)
class ReconcileProduct:
    """Converge one data product (storage, project, its own grants) to the portal's state."""

    product_id: str


@dataclass(frozen=True)
class ReconcileAccess:
    """Converge the access grants of one consuming data product."""

    consumer_id: str


@dataclass(frozen=True)
class ReconcileOutputPort:
    """Converge the grants of every consumer of one output port."""

    producer_id: str
    output_port_id: str


@dataclass(frozen=True)
class ResyncAll:
    """Compare everything with the portal (the portal did not say which entity changed)."""


Trigger: TypeAlias = ReconcileProduct | ReconcileAccess | ReconcileOutputPort | ResyncAll
Generation: TypeAlias = Literal["v1", "v2", "standard"]


@dataclass(frozen=True)
class Delivery:
    """One parsed webhook delivery: what to enqueue (``triggers``) or why nothing (``ignored_reason``)."""

    generation: Generation
    delivery_id: str | None  # CloudEvents id, Standard Webhooks webhook-id, or None (v1 has no id)
    # A digest of the delivery id; for v1 a digest of the body, recorded but never used to drop a delivery (every
    # approve, revoke or remove on one output port has the same v1 body).
    dedup_key: str
    event_type: str
    triggers: tuple[Trigger, ...]
    ignored_reason: str | None
    body: Any  # the parsed JSON (for binary CloudEvents: the envelope rebuilt from ce-* headers)


#: Nesting deeper than this is not a portal event (and deep nesting is a cheap way to exhaust a parser).
MAX_DEPTH = 32
#: Python's default limit on reading an integer (``sys.get_int_max_str_digits``); no portal field comes near it.
MAX_INT_DIGITS = 4300
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_JSON_TYPES = ("application/json", "application/cloudevents+json")
_CE_REQUIRED = ("id", "source", "type")
_MAX_ATTRIBUTE = 256

# v2 CloudEvents types the provisioner does not act on, with the reason recorded in the inbox.
_IGNORED_V2 = {
    "technical_asset.event": "technical assets are not provisioned",
    "output_port_technical_asset_link.event": "technical asset links do not change storage or grants",
    "data_product_role_assignment.event": "role assignments are not provisioned",
    "output_port_role_assignment.event": "role assignments are not provisioned",
    "data_product_setting_value.event": "setting values are not provisioned",
    "exploration.event": "explorations are not provisioned yet",
}
KNOWN_V2_TYPES = frozenset({"data_product.event", "input_port.event", "output_port.event", *_IGNORED_V2})

# v1 paths (``/api/v2/…`` and the older ``/api/…``), matched on the path without the query.
_P = r"/api(?:/v2)?/data_products"
_ID = r"([^/]+)"
_V1_ROUTES: tuple[tuple[str, re.Pattern[str], str], ...] = (
    ("POST", re.compile(rf"{_P}/?"), "data_product.created"),
    (
        "POST",
        re.compile(rf"{_P}/{_ID}/output_ports/{_ID}/input_ports/(?:approve|deny|revoke|remove)/?"),
        "input_port.decided",
    ),
    ("POST", re.compile(rf"{_P}/{_ID}/output_ports/?"), "output_port.created"),
    ("POST", re.compile(rf"{_P}/{_ID}/input_ports/?"), "input_port.requested"),
    ("POST", re.compile(rf"{_P}/{_ID}/dataset/{_ID}/?"), "input_port.requested"),
    ("DELETE", re.compile(rf"{_P}/{_ID}/dataset/{_ID}/?"), "input_port.removed"),
    ("POST", re.compile(rf"{_P}/{_ID}/finalizers(?:/[^/]+)?/?"), "data_product.changed"),
    ("PUT", re.compile(rf"{_P}/{_ID}(?:/.*)?"), "data_product.changed"),
    ("DELETE", re.compile(rf"{_P}/{_ID}/?"), "data_product.deleted"),
    ("DELETE", re.compile(rf"{_P}/{_ID}/.*"), "data_product.changed"),
    ("POST", re.compile(r"/api/data_product_dataset_links/(?:approve|deny|remove)/([^/]+)/?"), "dataset_link.decided"),
)


def parse_delivery(body: bytes, headers: Mapping[str, str]) -> Delivery:
    """Parse one webhook delivery; raise ``InvalidInput``/``UnsupportedMediaType`` naming the problem."""
    lowered = {k.lower(): v for k, v in headers.items()}
    standard_id = lowered.get("webhook-id")
    if "ce-specversion" in lowered:
        _require_json_content(lowered, binary=True)
        data = load_json(body)
        attributes = {k[3:]: v for k, v in lowered.items() if k.startswith("ce-")}
        envelope = {**attributes, "data": data}
        return _cloudevent(envelope, "standard" if standard_id else "v2", standard_id)
    _require_json_content(lowered, binary=False)
    document = load_json(body)
    if not isinstance(document, dict):
        raise InvalidInput(f"body must be a JSON object, got {_json_kind(document)}")
    if "specversion" in document:
        return _cloudevent(document, "standard" if standard_id else "v2", standard_id)
    if "method" in document and "url" in document:
        return _v1(document, standard_id)
    if standard_id is not None and "type" in document:
        return _standard_payload(document, standard_id)
    raise InvalidInput(
        "body is neither a v1 envelope (method, url, status_code) nor a CloudEvent (specversion, id, source, type)"
    )


def load_json(body: bytes) -> Any:
    """Decode UTF-8 JSON that PostgreSQL's jsonb can store: no NaN, no NUL, no lone surrogates, bounded depth."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"body is not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        document = json.loads(text, parse_constant=_reject_constant, parse_int=_parse_int)
    except RecursionError:
        raise InvalidInput(f"body is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    _check_storable(document)
    return document


def uuid_id(value: object, where: str) -> str:
    """``value`` as a lower-case UUID string, or ``InvalidInput`` naming ``where`` it came from."""
    if not isinstance(value, str) or not _UUID.fullmatch(value):
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise InvalidInput(f"{where} must be a UUID, got {shown}")
    return value.lower()


def _parse_int(digits: str) -> int:
    # Python refuses to read an integer of more than 4,300 digits with a ValueError, which is not a JSONDecodeError.
    if len(digits) > MAX_INT_DIGITS + digits.startswith("-"):
        raise InvalidInput(
            f"body holds an integer of {len(digits)} characters; at most {MAX_INT_DIGITS} digits are read"
        )
    return int(digits)


def _reject_constant(name: str) -> Any:
    raise InvalidInput(f"body contains {name}, which is not JSON")


def _check_storable(document: Any) -> None:
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise InvalidInput(f"body is nested deeper than {MAX_DEPTH} levels")
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(key, str):
                    _check_text(key)
                stack.append((item, depth + 1))
        elif isinstance(value, str):
            _check_text(value)


def _check_text(text: str) -> None:
    if "\x00" in text:
        raise InvalidInput("body contains a \\u0000 character, which cannot be stored")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput("body contains an unpaired UTF-16 surrogate escape") from None


def _require_json_content(headers: Mapping[str, str], *, binary: bool) -> None:
    raw = headers.get("content-type")
    if not raw:
        raise UnsupportedMediaType("Content-Type is missing: send application/json")
    media = raw.split(";", 1)[0].strip().lower()
    if binary:
        if media == "application/json" or (media.startswith("application/") and media.endswith("+json")):
            return
        raise UnsupportedMediaType(f"binary-mode CloudEvent data must be JSON, got Content-Type {media!r}")
    if media not in _JSON_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type {media!r} is not read here: send application/json or application/cloudevents+json"
        )


def _cloudevent(envelope: Mapping[str, Any], generation: Generation, standard_id: str | None) -> Delivery:
    if envelope.get("specversion") != "1.0":
        raise InvalidInput(f"CloudEvents specversion must be '1.0', got {envelope.get('specversion')!r}")
    for attr in _CE_REQUIRED:
        value = envelope.get(attr)
        if not isinstance(value, str) or not value or len(value) > _MAX_ATTRIBUTE:
            raise InvalidInput(f"CloudEvents attribute {attr!r} must be a non-empty string of at most 256 characters")
    event_id, source, event_type = envelope["id"], envelope["source"], envelope["type"]
    triggers, ignored = _v2_triggers(event_type, envelope.get("data"))
    delivery_id = standard_id if generation == "standard" and standard_id else event_id
    key_source = f"wh:{standard_id}" if generation == "standard" and standard_id else f"ce:{source}:{event_id}"
    return Delivery(generation, delivery_id, _digest(key_source), event_type, triggers, ignored, dict(envelope))


def _standard_payload(document: Mapping[str, Any], standard_id: str) -> Delivery:
    event_type = document.get("type")
    if not isinstance(event_type, str) or not event_type or len(event_type) > _MAX_ATTRIBUTE:
        raise InvalidInput("'type' must be a non-empty string of at most 256 characters")
    triggers, ignored = _v2_triggers(event_type, document.get("data"))
    return Delivery("standard", standard_id, _digest(f"wh:{standard_id}"), event_type, triggers, ignored, document)


def _v2_triggers(event_type: str, data: Any) -> tuple[tuple[Trigger, ...], str | None]:
    if event_type not in KNOWN_V2_TYPES:
        return (), f"unknown event type {event_type[:80]!r}"
    if not isinstance(data, dict):
        raise InvalidInput(f"{event_type} must carry a JSON object in 'data', got {_json_kind(data)}")
    if event_type in _IGNORED_V2:
        return (), _IGNORED_V2[event_type]
    if event_type == "data_product.event":
        return (ReconcileProduct(uuid_id(data.get("id"), "data.id")),), None
    if event_type == "output_port.event":
        producer = uuid_id(data.get("data_product_id"), "data.data_product_id")
        return (ReconcileOutputPort(producer, uuid_id(data.get("id"), "data.id")),), None
    # input_port.event: an access request of a consumer, decided or not.
    kind = data.get("consuming_abstract_data_product_type")
    consumer = uuid_id(data.get("consuming_abstract_data_product_id"), "data.consuming_abstract_data_product_id")
    if kind == "data_products":
        return (ReconcileAccess(consumer),), None
    if kind == "explorations":
        return (), "explorations are not provisioned yet"
    raise InvalidInput(
        f"data.consuming_abstract_data_product_type must be 'data_products' or 'explorations', got {kind!r}"
    )


def _v1(document: Mapping[str, Any], standard_id: str | None) -> Delivery:
    method, url, status = document.get("method"), document.get("url"), document.get("status_code")
    response, query = document.get("response", ""), document.get("query", "")
    if not isinstance(method, str) or not method or len(method) > 16:
        raise InvalidInput("v1 'method' must be an HTTP method such as POST")
    if not isinstance(url, str) or not url.startswith("/") or len(url) > 2048:
        raise InvalidInput("v1 'url' must be a request path starting with '/'")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise InvalidInput("v1 'status_code' must be an HTTP status (100-599)")
    if not isinstance(response, str) or not isinstance(query, str | None):
        raise InvalidInput("v1 'response' and 'query' must be strings")
    method = method.upper()
    path = url.split("?", 1)[0]
    event_type = "other"
    triggers: tuple[Trigger, ...] = ()
    ignored: str | None = "path is not one the provisioner acts on"
    for route_method, pattern, name in _V1_ROUTES:
        match = pattern.fullmatch(path) if route_method == method else None
        if match:
            event_type = name
            if not 200 <= status < 300:
                triggers, ignored = (), f"portal call failed with {status // 100}xx"
            else:
                triggers, ignored = _v1_triggers(name, match.groups(), response), None
            break
    if standard_id is not None:
        return Delivery(
            "standard", standard_id, _digest(f"wh:{standard_id}"), event_type, triggers, ignored, dict(document)
        )
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return Delivery("v1", None, _digest("v1:" + canonical), event_type, triggers, ignored, dict(document))


def _v1_triggers(name: str, groups: tuple[str, ...], response: str) -> tuple[Trigger, ...]:
    if name == "data_product.created":
        try:
            created = json.loads(response)
        except (json.JSONDecodeError, RecursionError):
            raise InvalidInput("v1 'response' of a created data product is not JSON") from None
        if not isinstance(created, dict):
            raise InvalidInput("v1 'response' of a created data product must be an object with an 'id'")
        return (ReconcileProduct(uuid_id(created.get("id"), "response.id")),)
    if name == "dataset_link.decided":
        uuid_id(groups[0], "the link id in 'url'")
        return (ResyncAll(),)
    producer = uuid_id(groups[0], "the data product id in 'url'")
    if name == "input_port.decided":
        return (ReconcileOutputPort(producer, uuid_id(groups[1], "the output port id in 'url'")),)
    if name == "output_port.created":
        try:
            created = json.loads(response)
            port = created.get("id") if isinstance(created, dict) else None
        except (json.JSONDecodeError, RecursionError):
            port = None
        if port is None:
            return (ReconcileProduct(producer),)
        return (ReconcileOutputPort(producer, uuid_id(port, "response.id")),)
    if name in ("input_port.requested", "input_port.removed"):
        # The consumer asked (or stopped asking) for access; unrestricted ports approve at once.
        return (ReconcileAccess(producer),)
    return (ReconcileProduct(producer),)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
