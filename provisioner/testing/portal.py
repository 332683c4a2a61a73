"""A stand-in Data Product Portal: the API shapes and webhooks the provisioner uses, in memory.

For tests, ``provisioner demo`` and benchmarks only: nothing on the production path imports it. It
serves the portal's v2 API subset (see provisioner/portal.py for the sources of each shape), keeps
Kubernetes finalizer semantics (DELETE with finalizers marks ``deleting`` and answers 202; removing the
last finalizer deletes), and sends webhooks as the real portal does:

- v1: after every POST, PUT and DELETE under ``/api/`` whatever its status, body ``{method, url, query,
  response, status_code}`` sent with httpx ``json=`` (compact), header ``Sign`` = hex HMAC-SHA512(secret,
  ``json.dumps(content)``) with Python's default separators (portal ``core/webhooks/webhook.py``);
- v2: a CloudEvents structured envelope per changed entity, only for successful requests
  (portal ``core/webhooks/v2.py``, ``middleware.py``).

Both are sent from one background thread with a short timeout; failures are logged and dropped, never
retried, and a full queue drops events, as the portal does. The provisioner's own writes (finalizers,
status) are echoed back as ``data_product.event`` unless ``echo_writes`` is off.

Usage::

    state = PortalState(webhook_v2_url="http://127.0.0.1:8000/webhooks/v2?token=…")
    server = serve_standin(state)           # server.url, server.state, server.stop()
    product = state.create_product("Sales", "sales")
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import hmac
import json
import logging
import queue
import re
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from provisioner.logs import log_event

logger = logging.getLogger(__name__)

API = "/api/v2/data_products"
PRODUCT_STATUSES = frozenset({"pending", "active", "archived", "deleting"})
_QUEUE_MAXSIZE = 1000

Handler = Callable[[Request], Awaitable[tuple[int, Any]]]


@dataclass
class StandinProduct:
    """A data product in the stand-in's memory."""

    id: str
    name: str
    namespace: str
    status: str = "pending"
    finalizers: list[str] = field(default_factory=list)
    description: str = ""
    tags: list[str] = field(default_factory=list)
    lifecycle: str | None = None
    domain: str = "Default"  # the names of its domain and data product type (ids derive from them)
    type: str = "Source aligned"


@dataclass
class StandinOutputPort:
    """An output port of a producing product."""

    id: str
    name: str
    namespace: str
    data_product_id: str
    access_type: str = "restricted"
    status: str = "active"
    tags: list[str] = field(default_factory=list)
    description: str = ""


@dataclass
class StandinInputPort:
    """A consumer's link to an output port."""

    id: str
    consumer_id: str
    output_port_id: str
    status: str = "pending"
    consumer_type: str = "data_products"
    justification: str = ""


@dataclass(frozen=True)
class SentWebhook:
    """One delivery attempt: which generation, where, the exact body bytes, and how it ended."""

    kind: str  # "v1" or "v2"
    url: str
    headers: dict[str, str]
    body: bytes
    status_code: int | None
    error: str | None


class _Sender:
    """One daemon thread posting queued deliveries; never blocks a request, never retries."""

    def __init__(self, timeout: float, record: Callable[[SentWebhook], None]) -> None:
        self._queue: queue.Queue[tuple[str, str, Any, dict[str, str]] | None] = queue.Queue(_QUEUE_MAXSIZE)
        self._timeout = timeout
        self._record = record
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, kind: str, url: str, content: Any, headers: dict[str, str]) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="standin-webhooks", daemon=True)
                self._thread.start()
        with self._idle:
            self._pending += 1
        try:
            self._queue.put_nowait((kind, url, content, headers))
        except queue.Full:
            with self._idle:
                self._pending -= 1
                self._idle.notify_all()
            log_event(logger, "standin.webhook_dropped", level=logging.WARNING, kind=kind, reason="queue full")

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def stop(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=self._timeout + 2)

    def _run(self) -> None:
        with httpx.Client(timeout=self._timeout) as client:
            while True:
                item = self._queue.get()
                if item is None:
                    return
                kind, url, content, headers = item
                status: int | None = None
                error: str | None = None
                body = b""
                sent_headers: dict[str, str] = {}
                try:
                    # json= as the portal does: httpx serialises compactly, so the body differs from the signed text.
                    request = client.build_request("POST", url, json=content, headers=headers)
                    body = request.content
                    sent_headers = dict(request.headers)
                    response = client.send(request)
                    status = response.status_code
                    if not 200 <= status < 300:
                        log_event(logger, "standin.webhook_status", level=logging.WARNING, kind=kind, status=status)
                except Exception as exc:  # the portal logs and drops every failure
                    error = f"{type(exc).__name__}: {exc}"
                    log_event(logger, "standin.webhook_failed", level=logging.WARNING, kind=kind, error=error)
                finally:
                    self._record(SentWebhook(kind, url, sent_headers, body, status, error))
                    with self._idle:
                        self._pending -= 1
                        self._idle.notify_all()


def sign_v1(secret: str, content: Any) -> str:
    """The portal's v1 signature: hex HMAC-SHA512 of ``json.dumps(content)`` with default separators."""
    return hmac.new(secret.encode("utf-8"), json.dumps(content).encode("utf-8"), hashlib.sha512).hexdigest()


def _config_id(kind: str, name: str) -> str:
    """A stable id for a domain or data product type of this name."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{kind}:{name}"))


NAMESPACE_MAX_LENGTH = 64


def _namespace_of(name: str) -> str:
    """The portal's suggestion (``_resource_name_from_name``): lower-case, spaces to ``-``, drop the rest."""
    suggested = re.sub(r"[^a-z0-9+=,.@_-]", "", name.lower().replace(" ", "-")).strip("-")
    return suggested[:NAMESPACE_MAX_LENGTH] or "product"


def namespace_validity(namespace: str) -> str:
    """The portal's own check (``resource_names/service.py``), quirks included: ``re.match`` with ``$`` lets a
    trailing newline through. ``VALID``, ``INVALID_LENGTH`` or ``INVALID_CHARACTERS`` (uniqueness is the API's)."""
    if not len(namespace) <= NAMESPACE_MAX_LENGTH:
        return "INVALID_LENGTH"
    if not re.match(r"^[a-z0-9+=,.@_-]+$", namespace):
        return "INVALID_CHARACTERS"
    return "VALID"


def _checked_namespace(namespace: str, check: bool) -> str:
    validity = namespace_validity(namespace) if check else "VALID"
    if validity != "VALID":
        raise ValueError(
            f"the portal refuses namespace {namespace!r} ({validity}); pass check_namespace=False to stand in for "
            "a portal that lets it through"
        )
    return namespace


def _error(status: int, detail: Any) -> tuple[int, Any]:
    return status, {"correlation_id": uuid.uuid4().hex, "detail": detail}


class PortalState:
    """The stand-in portal's memory, its webhook settings and its test hooks.

    Helper methods (``create_product``, ``approve``…) act as a person in the portal's UI would: they change
    state and send the same webhooks as the matching API call (``notify=False`` to stay silent).
    """

    def __init__(
        self,
        *,
        api_key: str | None = None,
        webhook_v1_url: str | None = None,
        webhook_v1_secret: str | None = None,
        webhook_v2_url: str | None = None,
        echo_writes: bool = True,
        duplicate_v2_events: bool = False,
        webhook_timeout: float = 2.0,
    ) -> None:
        self.api_key = api_key
        self.webhook_v1_url = webhook_v1_url
        self.webhook_v1_secret = webhook_v1_secret
        self.webhook_v2_url = webhook_v2_url
        self.echo_writes = echo_writes
        #: True: the API key reads but may not write (the portal's authorization answers 403 before it validates
        #: the body), as on a freshly seeded portal database whose system account lost its admin role.
        self.refuse_writes = False
        self.duplicate_v2_events = duplicate_v2_events
        self.lag = 0.0
        self.lock = threading.RLock()
        self.products: dict[str, StandinProduct] = {}
        self.output_ports: dict[str, StandinOutputPort] = {}
        self.input_ports: dict[str, StandinInputPort] = {}
        self.writes: collections.Counter[str] = collections.Counter()
        self.requests: collections.Counter[str] = collections.Counter()
        self.sent: list[SentWebhook] = []
        self._faults: list[tuple[int, frozenset[str], bytes | None]] = []
        self._sender = _Sender(webhook_timeout, self.sent.append)

    # -- test hooks -------------------------------------------------------------------------------

    def fail_next(self, n: int, status: int = 500, *, methods: Iterable[str] = ("GET",)) -> None:
        """Answer the next ``n`` API requests of ``methods`` with ``status`` (fault injection)."""
        with self.lock:
            self._faults.extend([(status, frozenset(m.upper() for m in methods), None)] * n)

    def garble_next(self, n: int, body: bytes = b"<html>502 Bad Gateway</html>") -> None:
        """Answer the next ``n`` GETs with 200 and a body that is not JSON."""
        with self.lock:
            self._faults.extend([(200, frozenset({"GET"}), body)] * n)

    def clear_faults(self) -> None:
        """Forget the faults still queued by ``fail_next`` and ``garble_next``: the portal has recovered."""
        with self.lock:
            self._faults.clear()

    def reset_counters(self) -> None:
        """Zero the write and request counters and forget sent webhooks."""
        with self.lock:
            self.writes.clear()
            self.requests.clear()
            self.sent.clear()

    def flush_webhooks(self, timeout: float = 5.0) -> bool:
        """Wait until every queued webhook was sent (or failed); False on timeout."""
        return self._sender.flush(timeout)

    def close(self) -> None:
        """Stop the webhook sender thread."""
        self._sender.stop()

    def sent_v2(self) -> list[dict[str, Any]]:
        """The CloudEvents sent so far, parsed."""
        return [json.loads(s.body) for s in list(self.sent) if s.kind == "v2" and s.body]

    # -- state helpers ----------------------------------------------------------------------------

    def create_product(
        self,
        name: str,
        namespace: str | None = None,
        *,
        status: str = "pending",
        finalizers: Iterable[str] = (),
        description: str = "",
        tags: Iterable[str] = (),
        lifecycle: str | None = None,
        id: str | None = None,
        notify: bool = True,
        domain: str = "Default",
        type: str = "Source aligned",
        check_namespace: bool = True,
    ) -> StandinProduct:
        """Add a product (as if created in the portal) and send its webhooks.

        The namespace must pass the portal's rule (ValueError otherwise) unless ``check_namespace`` is False;
        uniqueness is left to tests (the API checks it).
        """
        product = StandinProduct(
            id=id or str(uuid.uuid4()),
            name=name,
            namespace=_namespace_of(name) if namespace is None else _checked_namespace(namespace, check_namespace),
            status=status,
            finalizers=list(finalizers),
            description=description,
            tags=list(tags),
            lifecycle=lifecycle,
            domain=domain,
            type=type,
        )
        with self.lock:
            self.products[product.id] = product
        if notify:
            self._v1("POST", API, 200, json.dumps({"id": product.id}, separators=(",", ":")))
            self._v2("data_product.event", {"id": product.id})
        return product

    def load_samples(self, samples: Mapping[str, Any]) -> tuple[list[StandinProduct], list[StandinOutputPort]]:
        """Add the portal's own sample data products and output ports, silently.

        ``samples`` is ``contract-samples/portal-namespaces.json`` (the portal's ``sample_data.sql``): its data
        products (explorations left out: the stand-in has none) and output ports, each port under the product
        whose namespace shares most words with it (the file does not say which).
        """
        products = [
            self.create_product(item["name"], item["namespace"], notify=False)
            for item in samples["data_products"]
            if item.get("type", "data_products") == "data_products"
        ]

        def words(namespace: str) -> set[str]:
            return set(re.split(r"[-_.]", namespace))

        ports = []
        for item in samples["output_ports"]:
            owner = max(products, key=lambda p: len(words(p.namespace) & words(item["namespace"])))
            ports.append(self.create_output_port(owner.id, item["name"], namespace=item["namespace"], notify=False))
        return products, ports

    def bulk_create_products(self, n: int, *, prefix: str = "bulk", finalizers: Iterable[str] = ()) -> list[str]:
        """Add ``n`` products quickly and silently (no webhooks); returns their ids."""
        fins = list(finalizers)
        ids: list[str] = []
        with self.lock:
            for i in range(n):
                pid = str(uuid.uuid4())
                name = f"{prefix}-{i:06d}"
                self.products[pid] = StandinProduct(pid, name, name, "pending", list(fins))
                ids.append(pid)
        return ids

    def create_output_port(
        self,
        product_id: str,
        name: str,
        *,
        namespace: str | None = None,
        access_type: str = "restricted",
        status: str = "active",
        tags: Iterable[str] = (),
        id: str | None = None,
        notify: bool = True,
        check_namespace: bool = True,
    ) -> StandinOutputPort:
        """Add an output port to a product and send its webhooks; KeyError when the product is unknown.

        The namespace must pass the portal's rule, as for :meth:`create_product`.
        """
        with self.lock:
            if product_id not in self.products:
                raise KeyError(product_id)
            port = StandinOutputPort(
                id=id or str(uuid.uuid4()),
                name=name,
                namespace=_namespace_of(name) if namespace is None else _checked_namespace(namespace, check_namespace),
                data_product_id=product_id,
                access_type=access_type,
                status=status,
                tags=list(tags),
            )
            self.output_ports[port.id] = port
        if notify:
            self._v1(
                "POST", f"{API}/{product_id}/output_ports", 200, json.dumps({"id": port.id}, separators=(",", ":"))
            )
            self._v2("output_port.event", {"id": port.id, "data_product_id": product_id})
        return port

    def request_access(
        self, consumer_id: str, output_port_id: str, *, justification: str = "", notify: bool = True
    ) -> StandinInputPort:
        """A consumer asks for an output port; unrestricted ports are approved at once, as in the portal."""
        with self.lock:
            if consumer_id not in self.products:
                raise KeyError(consumer_id)
            port = self.output_ports[output_port_id]
            existing = self._find_input_port(output_port_id, consumer_id)
            status = "approved" if port.access_type == "unrestricted" else "pending"
            if existing is not None:
                existing.status = status
                existing.justification = justification
                link = existing
            else:
                link = StandinInputPort(
                    str(uuid.uuid4()), consumer_id, output_port_id, status, justification=justification
                )
                self.input_ports[link.id] = link
        if notify:
            body = json.dumps({"input_port_links": [link.id]}, separators=(",", ":"))
            self._v1("POST", f"{API}/{consumer_id}/input_ports", 200, body)
            self._v2_input_port(link)
        return link

    def approve(self, output_port_id: str, consumer_id: str, *, notify: bool = True) -> StandinInputPort:
        """Approve a pending request (as the producer's owner)."""
        return self._decide("approve", output_port_id, consumer_id, notify)

    def deny(self, output_port_id: str, consumer_id: str, *, notify: bool = True) -> StandinInputPort:
        """Deny a pending request."""
        return self._decide("deny", output_port_id, consumer_id, notify)

    def revoke(self, output_port_id: str, consumer_id: str, *, notify: bool = True) -> StandinInputPort:
        """Revoke an approved grant."""
        return self._decide("revoke", output_port_id, consumer_id, notify)

    def delete_product(self, product_id: str, *, notify: bool = True) -> int:
        """Delete as the portal does: 202 and ``deleting`` while finalizers remain, else gone (200); 404."""
        with self.lock:
            product = self.products.get(product_id)
            if product is None:
                code = 404
            elif product.finalizers:
                product.status = "deleting"
                code = 202
            else:
                self._drop_product(product_id)
                code = 200
        if notify:
            self._v1("DELETE", f"{API}/{product_id}", code, "")
            if code < 400:
                self._v2("data_product.event", {"id": product_id})
        return code

    def product(self, product_id: str) -> StandinProduct | None:
        """The product or None (a snapshot reference; mutate only under ``lock``)."""
        with self.lock:
            return self.products.get(product_id)

    def input_port(self, output_port_id: str, consumer_id: str) -> StandinInputPort | None:
        """The input port linking ``consumer_id`` to ``output_port_id``, if any."""
        with self.lock:
            return self._find_input_port(output_port_id, consumer_id)

    # -- internals --------------------------------------------------------------------------------

    def _find_input_port(self, output_port_id: str, consumer_id: str) -> StandinInputPort | None:
        for link in self.input_ports.values():
            if link.output_port_id == output_port_id and link.consumer_id == consumer_id:
                return link
        return None

    def _drop_product(self, product_id: str) -> None:
        self.products.pop(product_id, None)
        gone_ports = {p.id for p in self.output_ports.values() if p.data_product_id == product_id}
        for pid in gone_ports:
            del self.output_ports[pid]
        for lid in [
            i.id for i in self.input_ports.values() if i.consumer_id == product_id or i.output_port_id in gone_ports
        ]:
            del self.input_ports[lid]

    def _apply_decision(
        self, action: str, output_port_id: str, consumer_id: str
    ) -> tuple[int, Any, StandinInputPort | None]:
        with self.lock:
            port = self.output_ports.get(output_port_id)
            link = self._find_input_port(output_port_id, consumer_id) if port else None
            if link is None:
                return (*_error(404, "Data product input port not found"), None)
            if action in ("approve", "deny") and link.status != "pending":
                return (*_error(400, "There is no pending request"), None)
            if action == "revoke" and link.status != "approved":
                return (*_error(400, "Input port is not approved"), None)
            if action == "remove":
                del self.input_ports[link.id]
            else:
                link.status = {"approve": "approved", "deny": "denied", "revoke": "revoked"}[action]
            return 200, None, link

    def _decide(self, action: str, output_port_id: str, consumer_id: str, notify: bool) -> StandinInputPort:
        status, body, link = self._apply_decision(action, output_port_id, consumer_id)
        if link is None:
            raise LookupError(f"{action} failed ({status}): {body['detail']}")
        if notify:
            producer = self.output_ports[output_port_id].data_product_id
            self._v1("POST", f"{API}/{producer}/output_ports/{output_port_id}/input_ports/{action}", 200, "null")
            self._v2_input_port(link)
        return link

    def _v1(self, method: str, path: str, status: int, response_text: str, query: str = "") -> None:
        if not self.webhook_v1_url:
            return
        content = {
            "method": method,
            "url": path,
            "query": query,
            "response": response_text if method == "POST" else "",
            "status_code": status,
        }
        headers = {"Sign": sign_v1(self.webhook_v1_secret, content)} if self.webhook_v1_secret else {}
        self._sender.submit("v1", self.webhook_v1_url, content, headers)

    def _v2(self, event_type: str, data: dict[str, Any]) -> None:
        if not self.webhook_v2_url:
            return
        for _ in range(2 if self.duplicate_v2_events else 1):
            envelope = {
                "specversion": "1.0",
                "id": str(uuid.uuid4()),
                "source": "data-product-portal",
                "type": event_type,
                "time": datetime.now(UTC).isoformat(),
                "data": data,
            }
            self._sender.submit("v2", self.webhook_v2_url, envelope, {})

    def _v2_input_port(self, link: StandinInputPort) -> None:
        self._v2(
            "input_port.event",
            {
                "id": link.id,
                "consuming_abstract_data_product_id": link.consumer_id,
                "consuming_abstract_data_product_type": link.consumer_type,
            },
        )

    # -- JSON views -------------------------------------------------------------------------------

    @staticmethod
    def _tags_json(tags: list[str]) -> list[dict[str, str]]:
        return [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tag:{t}")), "value": t} for t in tags]

    def product_json(self, p: StandinProduct, *, listing: bool = False) -> dict[str, Any]:
        """The portal's ``GetDataProductResponse`` (or list item) shape for ``p``."""
        out: dict[str, Any] = {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "namespace": p.namespace,
            "status": p.status,
            "finalizers": list(p.finalizers),
            "tags": self._tags_json(p.tags),
            "usage": None,
            "domain": {"id": _config_id("domain", p.domain), "name": p.domain, "description": ""},
            "type": {"id": _config_id("type", p.type), "name": p.type, "description": "", "icon_key": "default"},
            "visibility": "discoverable",
            "lifecycle": None if p.lifecycle is None else {"id": p.lifecycle, "name": p.lifecycle, "value": 0},
        }
        if listing:
            out.update(user_count=1, input_port_count=0, technical_asset_count=0)
        else:
            out["about"] = None
        return out

    def output_port_json(self, port: StandinOutputPort) -> dict[str, Any]:
        """The portal's ``OutputPort`` shape."""
        return {
            "id": port.id,
            "name": port.name,
            "namespace": port.namespace,
            "description": port.description,
            "status": port.status,
            "access_type": port.access_type,
            "data_product_id": port.data_product_id,
            "tags": self._tags_json(port.tags),
        }

    @staticmethod
    def _current_request(link: StandinInputPort) -> dict[str, Any]:
        return {
            "id": link.id,
            "justification": link.justification,
            "decision": {"pending": "pending", "approved": "approved", "denied": "denied"}.get(link.status, "approved"),
            "valid_until": None,
            "created_on": "2026-01-01T00:00:00",
            "requested_on": "2026-01-01T00:00:00",
        }


class _Api:
    """The HTTP face of a PortalState."""

    def __init__(self, state: PortalState) -> None:
        self.s = state

    def app(self) -> Starlette:
        w = self._wrap
        base = API
        port_ip = f"{base}/{{producer}}/output_ports/{{port}}/input_ports"
        routes = [
            Route(base, w(self.list_products), methods=["GET"]),
            Route(base, w(self.create_product), methods=["POST"]),
            Route(f"{base}/{{id}}", w(self.get_product), methods=["GET"]),
            Route(f"{base}/{{id}}", w(self.delete_product), methods=["DELETE"]),
            Route(f"{base}/{{id}}", w(self.update_product), methods=["PUT"]),
            Route(f"{base}/{{id}}/status", w(self.put_status, echo=True), methods=["PUT"]),
            Route(f"{base}/{{id}}/finalizers", w(self.add_finalizer, echo=True), methods=["POST"]),
            Route(f"{base}/{{id}}/finalizers/{{name}}", w(self.remove_finalizer, echo=True), methods=["DELETE"]),
            Route(f"{base}/{{id}}/input_ports", w(self.consumer_input_ports), methods=["GET"]),
            Route(f"{base}/{{id}}/input_ports", w(self.request_input_ports), methods=["POST"]),
            Route(f"{base}/{{id}}/output_ports", w(self.create_output_port), methods=["POST"]),
            Route(f"{base}/{{producer}}/output_ports/{{port}}", w(self.get_output_port), methods=["GET"]),
            Route(f"{port_ip}/", w(self.producer_input_ports), methods=["GET"]),
            Route(port_ip, w(self.producer_input_ports), methods=["GET"]),
            Route(f"{port_ip}/{{action:str}}", w(self.decide), methods=["POST"]),
        ]
        return Starlette(routes=routes)

    def _wrap(self, handler: Handler, *, echo: bool = False) -> Callable[[Request], Awaitable[Response]]:
        s = self.s

        async def endpoint(request: Request) -> Response:
            method, path = request.method, request.url.path
            with s.lock:
                s.requests[f"{method} {path}"] += 1
                fault = None
                for i, (_code, methods, _text) in enumerate(s._faults):
                    if method in methods:
                        fault = s._faults.pop(i)
                        break
            if s.lag:
                await asyncio.sleep(s.lag)
            if s.api_key is not None and not hmac.compare_digest(request.headers.get("x-key", ""), s.api_key):
                status, payload = _error(403, "Not authenticated: a valid x-key header is required")
            elif s.refuse_writes and method in ("POST", "PUT", "DELETE"):
                status, payload = _error(403, "You don't have permission to perform this action")
            elif fault is not None:
                if fault[2] is not None:
                    return Response(fault[2], status_code=fault[0], media_type="text/html")
                status, payload = _error(fault[0], "Injected failure")
            else:
                try:
                    status, payload = await handler(request)
                except _BadRequest as exc:
                    status, payload = _error(422, exc.detail)
            text = "" if status in (204,) else json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
            if method in ("POST", "PUT", "DELETE") and (s.echo_writes or not echo):
                # v1 fires for every write whatever its status; the response text only for POST.
                s._v1(method, path, status, text, request.url.query)
            return Response(text, status_code=status, media_type="application/json")

        return endpoint

    # -- reads ------------------------------------------------------------------------------------

    async def list_products(self, request: Request) -> tuple[int, Any]:
        with self.s.lock:
            items = [self.s.product_json(p, listing=True) for p in self.s.products.values()]
        return 200, {"data_products": items}

    async def get_product(self, request: Request) -> tuple[int, Any]:
        with self.s.lock:
            p = self.s.products.get(request.path_params["id"])
            if p is None:
                return _error(404, "Data Product not found")
            return 200, self.s.product_json(p)

    async def consumer_input_ports(self, request: Request) -> tuple[int, Any]:
        cid = request.path_params["id"]
        with self.s.lock:
            if cid not in self.s.products:
                return _error(404, "Data Product not found")
            items = []
            for link in self.s.input_ports.values():
                if link.consumer_id != cid:
                    continue
                port = self.s.output_ports[link.output_port_id]
                items.append(
                    {
                        "id": link.id,
                        "status": link.status,
                        "current_request": PortalState._current_request(link),
                        "renewal_status": None,
                        "output_port_id": port.id,
                        "output_port": self.s.output_port_json(port),
                    }
                )
        return 200, {"input_ports": items}

    async def get_output_port(self, request: Request) -> tuple[int, Any]:
        with self.s.lock:
            port = self.s.output_ports.get(request.path_params["port"])
            if port is None or port.data_product_id != request.path_params["producer"]:
                return _error(404, "Output port not found")
            return 200, self.s.output_port_json(port)

    async def producer_input_ports(self, request: Request) -> tuple[int, Any]:
        # Current portals list consumers without embedding the output port (schema OutputPortInputPort).
        with self.s.lock:
            port = self.s.output_ports.get(request.path_params["port"])
            if port is None or port.data_product_id != request.path_params["producer"]:
                return _error(404, "Output port not found")
            items = []
            for link in self.s.input_ports.values():
                if link.output_port_id != port.id:
                    continue
                consumer = self.s.products.get(link.consumer_id)
                items.append(
                    {
                        "id": link.id,
                        "status": link.status,
                        "current_request": PortalState._current_request(link),
                        "renewal_status": None,
                        "consuming_abstract_data_product_id": link.consumer_id,
                        "consuming_abstract_data_product": {
                            "name": consumer.name if consumer else "",
                            "namespace": consumer.namespace if consumer else "",
                            "abstract_data_product_type": link.consumer_type,
                            "is_redacted": False,
                        },
                    }
                )
        return 200, {"input_ports": items}

    # -- writes -----------------------------------------------------------------------------------

    async def create_product(self, request: Request) -> tuple[int, Any]:
        body = await _body(request)
        name = _str(body, "name")
        namespace = _str(body, "namespace")
        invalid = self._invalid_namespace(namespace, [p.namespace for p in self.s.products.values()])
        if invalid is not None:
            return invalid
        product = self.s.create_product(name, namespace, description=str(body.get("description") or ""), notify=False)
        self.s.writes["product_create"] += 1
        self.s._v2("data_product.event", {"id": product.id})
        return 200, {"id": product.id}

    async def update_product(self, request: Request) -> tuple[int, Any]:
        """``PUT …/{id}`` (``DataProductUpdate``): name, namespace, description; a new namespace is validated."""
        pid = request.path_params["id"]
        body = await _body(request)
        name, namespace = _str(body, "name"), _str(body, "namespace")
        with self.s.lock:
            product = self.s.products.get(pid)
            if product is None:
                return _error(404, "Data Product not found")
            if product.status == "deleting":
                return _error(400, "Data product is being deleted")
            if namespace != product.namespace:
                others = [p.namespace for p in self.s.products.values() if p.id != pid]
                invalid = self._invalid_namespace(namespace, others)
                if invalid is not None:
                    return invalid
            product.name, product.namespace = name, namespace
            if isinstance(body.get("description"), str):
                product.description = body["description"]
            self.s.writes["product_update"] += 1
        self.s._v2("data_product.event", {"id": pid})
        return 200, {"id": pid}

    @staticmethod
    def _invalid_namespace(namespace: str, taken: Iterable[str]) -> tuple[int, Any] | None:
        """The portal's 400 for a namespace it refuses (``Invalid namespace: <validity>``), or None."""
        validity = namespace_validity(namespace)
        if validity == "VALID" and namespace in set(taken):
            validity = "DUPLICATE"
        return None if validity == "VALID" else _error(400, f"Invalid namespace: {validity}")

    async def delete_product(self, request: Request) -> tuple[int, Any]:
        pid = request.path_params["id"]
        code = self.s.delete_product(pid, notify=False)
        if code == 404:
            return _error(404, "Data Product not found")
        self.s.writes["product_delete"] += 1
        self.s._v2("data_product.event", {"id": pid})
        return code, None

    async def put_status(self, request: Request) -> tuple[int, Any]:
        pid = request.path_params["id"]
        body = await _body(request)
        status = _str(body, "status")
        if status not in PRODUCT_STATUSES:
            raise _BadRequest(f"Input should be 'pending', 'active', 'archived' or 'deleting', got {status!r}")
        if status == "deleting":
            raise _BadRequest("Value error, Cannot manually set status to 'deleting'")
        with self.s.lock:
            product = self.s.products.get(pid)
            if product is None:
                return _error(404, "Data Product not found")
            product.status = status
            self.s.writes["status_put"] += 1
        self._echo(pid)
        return 200, None

    async def add_finalizer(self, request: Request) -> tuple[int, Any]:
        pid = request.path_params["id"]
        name = _str(await _body(request), "finalizer")
        with self.s.lock:
            product = self.s.products.get(pid)
            if product is None:
                return _error(404, "Data Product not found")
            if name not in product.finalizers:
                product.finalizers.append(name)
            self.s.writes["finalizer_add"] += 1
        self._echo(pid)
        return 200, None

    async def remove_finalizer(self, request: Request) -> tuple[int, Any]:
        pid, name = request.path_params["id"], request.path_params["name"]
        with self.s.lock:
            product = self.s.products.get(pid)
            if product is None:
                return _error(404, "Data Product not found")
            if name not in product.finalizers:
                return _error(404, f"Finalizer {name} not found")
            product.finalizers.remove(name)
            self.s.writes["finalizer_remove"] += 1
            if not product.finalizers and product.status == "deleting":
                self.s._drop_product(pid)
        self._echo(pid)
        return 200, None

    async def request_input_ports(self, request: Request) -> tuple[int, Any]:
        cid = request.path_params["id"]
        body = await _body(request)
        raw = body.get("output_ports")
        if not isinstance(raw, list):
            raise _BadRequest("Field required: output_ports")
        # v0.7 takes a list of ids; newer portals take [{output_port_id, access_mode_id}].
        port_ids = [item.get("output_port_id") if isinstance(item, dict) else item for item in raw]
        with self.s.lock:
            if cid not in self.s.products:
                return _error(404, "Data Product not found")
            known = [p for p in port_ids if isinstance(p, str) and p in self.s.output_ports]
            if len(known) != len(port_ids):
                return _error(400, "Output port not found")
        links = [
            self.s.request_access(cid, pid, justification=str(body.get("justification") or ""), notify=False)
            for pid in known
        ]
        self.s.writes["access_request"] += 1
        for link in links:
            self.s._v2_input_port(link)
        return 200, {"input_port_links": [link.id for link in links]}

    async def create_output_port(self, request: Request) -> tuple[int, Any]:
        pid = request.path_params["id"]
        body = await _body(request)
        name = _str(body, "name")
        if pid not in self.s.products:
            return _error(404, "Data Product not found")
        access = str(body.get("access_type") or "restricted")
        namespace = body.get("namespace") or _namespace_of(name)
        if not isinstance(namespace, str):
            raise _BadRequest("Input should be a valid string: namespace")
        invalid = self._invalid_namespace(namespace, [p.namespace for p in self.s.output_ports.values()])
        if invalid is not None:
            return invalid
        port = self.s.create_output_port(
            pid,
            name,
            namespace=namespace,
            access_type="unrestricted" if access == "public" else access,
            notify=False,
        )
        self.s.writes["output_port_create"] += 1
        self.s._v2("output_port.event", {"id": port.id, "data_product_id": pid})
        return 200, {"id": port.id}

    async def decide(self, request: Request) -> tuple[int, Any]:
        action = request.path_params["action"]
        if action not in ("approve", "deny", "revoke", "remove"):
            return _error(404, "Not Found")
        consumer = _str(await _body(request), "consuming_data_product_id")
        status, payload, link = self.s._apply_decision(action, request.path_params["port"], consumer)
        if link is None:
            return status, payload
        self.s.writes[action] += 1
        self.s._v2_input_port(link)
        return 200, None

    def _echo(self, product_id: str) -> None:
        if self.s.echo_writes:
            self.s._v2("data_product.event", {"id": product_id})


class _BadRequest(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


async def _body(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"null")
    except ValueError as exc:
        raise _BadRequest("JSON decode error") from exc
    if not isinstance(body, dict):
        raise _BadRequest("Input should be a valid dictionary")
    return body


def _str(body: dict[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value:
        raise _BadRequest(f"Field required: {name}")
    return value


def build_app(state: PortalState) -> Starlette:
    """The stand-in's ASGI app over ``state`` (for in-process use with httpx.ASGITransport too)."""
    return _Api(state).app()


@dataclass
class AsgiThread:
    """An ASGI app served by uvicorn in a daemon thread: ``url`` (no trailing slash) and ``stop()``."""

    url: str
    _server: uvicorn.Server
    _thread: threading.Thread

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for its thread; idempotent."""
        self._server.should_exit = True
        self._thread.join(timeout=10)


def run_asgi_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> AsgiThread:
    """Serve ``app`` with uvicorn in a background thread; returns once it accepts connections."""
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY only on sockets that say so, and without it every
    # keep-alive response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="asgi-thread", daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise RuntimeError(f"uvicorn did not start on {host}:{bound_port}")
        time.sleep(0.005)
    return AsgiThread(f"http://{host}:{bound_port}", server, thread)


@dataclass
class StandinServer:
    """A running stand-in: ``url`` (the portal base URL, no trailing slash), ``state``, and ``stop()``."""

    url: str
    state: PortalState
    _http: AsgiThread

    def stop(self) -> None:
        """Stop uvicorn and the webhook sender; idempotent."""
        self._http.stop()
        self.state.close()

    def __enter__(self) -> StandinServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_standin(state: PortalState, host: str = "127.0.0.1", port: int = 0) -> StandinServer:
    """Run the stand-in over ``state`` in a background thread; returns once it accepts connections."""
    http = run_asgi_in_thread(build_app(state), host, port)
    return StandinServer(http.url, state, http)
