"""The Data Product Portal API client: typed results, timeouts, bounded retries with backoff.

Shapes checked against the portal's source (repository conveyordata/data-product-portal):

- ``backend/app/data_products/router.py``: ``GET /api/v2/data_products`` answers
  ``{"data_products": [...]}``; ``GET …/{id}`` a product (``schema_response.py``: id, name, description,
  namespace, status, finalizers, tags [{id, value}], …); ``GET …/{id}/input_ports`` answers
  ``{"input_ports": [{id, status, output_port_id, output_port, current_request, …}]}`` (the consumer's view;
  ``abstract_data_product/schema_response.py`` ``AbstractDataProductInputPort``: no consumer id in it);
  ``POST …/{id}/finalizers`` with ``{"finalizer": name}`` (``abstract_data_product/schema_request.py``
  ``FinalizerRequest``); ``DELETE …/{id}/finalizers/{finalizer}``; ``PUT …/{id}/status`` with
  ``{"status": "pending|active|archived"}`` (``schema_request.py`` ``DataProductStatusUpdate``: ``deleting``
  is refused with 422; ``status.py`` lists the values).
- ``backend/app/data_products/output_ports/input_ports/router.py`` and ``schema_response.py``: the producer's
  view ``GET /api/v2/data_products/{producer}/output_ports/{port}/input_ports/`` answers
  ``{"input_ports": [{id, status, current_request, consuming_abstract_data_product_id,
  consuming_abstract_data_product: {name, namespace, abstract_data_product_type}}]}``: the consumer id is
  ``consuming_abstract_data_product_id``, and current portals do not embed the output port (older ones did,
  as ``output_port``), so it is read once from ``GET …/{producer}/output_ports/{port}``
  (``output_ports/router.py``). Approve/deny/revoke/remove take ``{"consuming_data_product_id": …}``.

A 404 means "gone". 5xx, 429 and transport errors are retried with exponential backoff and jitter, then
raise ``PortalUnavailable``; any other 4xx and a JSON body of the wrong shape raise ``PortalError``. A 2xx whose
body is not JSON at all (a proxy's error page, a truncated answer) raises ``PortalUnavailable``: it passes.

Products carry ``domain`` and ``type`` ({id, name, ...}: ``configuration/domains/schema.py``,
``configuration/data_product_types/schema.py``), which the scope selector reads.
"""

from __future__ import annotations

import logging
import random
import time
import unicodedata
from dataclasses import dataclass
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from provisioner.errors import InvalidName, PortalError, PortalUnavailable
from provisioner.logs import log_event
from provisioner.names import Namespace

logger = logging.getLogger(__name__)

API = "/api/v2/data_products"
#: The product id the doctor's write probes address: the nil UUID, which no portal product has.
PROBE_PRODUCT_ID = "00000000-0000-0000-0000-000000000000"
# Longest wait we honour from a Retry-After header; a portal asking for more is treated as down.
_MAX_RETRY_AFTER = 30.0


class PortalNotFound(PortalError):
    """A write addressed an entity the portal no longer has (404)."""


@dataclass(frozen=True)
class Named:
    """A configuration entity a product points to (its domain, its data product type)."""

    id: str
    name: str


@dataclass(frozen=True)
class Product:
    """A data product as the portal reports it, checked once here.

    ``namespace`` is a :class:`Namespace` when the portal's rule holds; otherwise it is the raw text and
    ``problem`` says what is wrong (as it does for a name with a control character). A product with a problem
    must not be provisioned, but can still be cleaned up, so parsing keeps it rather than failing the list.
    """

    id: str
    name: str
    namespace: str
    status: str
    finalizers: tuple[str, ...]
    description: str
    tags: tuple[str, ...]
    lifecycle: str | None
    domain: Named | None = None
    type: Named | None = None
    problem: str | None = None


@dataclass(frozen=True)
class OutputPort:
    """An output port of a producing data product; ``problem`` as for :class:`Product` (never grant it then)."""

    id: str
    name: str
    namespace: str
    data_product_id: str
    access_type: str
    status: str
    tags: tuple[str, ...]
    problem: str | None = None


@dataclass(frozen=True)
class InputPort:
    """A consumer's link to an output port; ``status == "approved"`` is a grant to converge to.

    ``consumer_type`` is ``data_products`` or ``explorations`` when the portal says so, else None.
    """

    id: str
    status: str
    output_port_id: str
    output_port: OutputPort
    consumer_id: str | None
    consumer_type: str | None = None

    @property
    def problem(self) -> str | None:
        """Why this port can never be granted (its output port's namespace or name is unusable), or None."""
        return self.output_port.problem


def _field(obj: Any, name: str, where: str, kind: type | tuple[type, ...] = str, *, default: Any = ...) -> Any:
    """``obj[name]`` checked to be of ``kind``; a missing or mistyped field is a PortalError naming it."""
    if not isinstance(obj, dict):
        raise PortalError(f"portal answered {where} with {type(obj).__name__} where an object was expected")
    if name not in obj or obj[name] is None:
        if default is not ...:
            return default
        raise PortalError(f"portal answered {where} without field {name!r}")
    value = obj[name]
    if not isinstance(value, kind):
        raise PortalError(f"portal answered {where} with field {name!r} of type {type(value).__name__}")
    return value


def _tags(obj: dict[str, Any], where: str) -> tuple[str, ...]:
    values: list[str] = []
    for i, tag in enumerate(_field(obj, "tags", where, list, default=[])):
        if isinstance(tag, str):
            values.append(tag)
        else:
            values.append(_field(tag, "value", f"{where} tags[{i}]"))
    return tuple(values)


def parse_product(obj: Any, where: str = "a data product") -> Product:
    """A Product from the portal's JSON object; PortalError naming the field when the shape is wrong."""
    finalizers = _field(obj, "finalizers", where, list, default=[])
    if not all(isinstance(f, str) for f in finalizers):
        raise PortalError(f"portal answered {where} with a non-string entry in field 'finalizers'")
    lifecycle = _field(obj, "lifecycle", where, (dict, str), default=None)
    if isinstance(lifecycle, dict):
        lifecycle = _field(lifecycle, "name", f"{where} lifecycle")
    raw_name, raw_namespace = _field(obj, "name", where), _field(obj, "namespace", where)
    namespace, problem = _checked("data product", raw_name, raw_namespace)
    name = raw_name if problem is None else printable(raw_name)
    description = _field(obj, "description", where, default="")
    if problem is None and "\x00" in description:
        problem = "its description holds a NUL character"
        description = printable(description)
    return Product(
        id=_field(obj, "id", where),
        name=name,
        namespace=namespace,
        status=_field(obj, "status", where),
        finalizers=tuple(finalizers),
        description=description,
        tags=_tags(obj, where),
        lifecycle=lifecycle,
        domain=_named(obj, "domain", where),
        type=_named(obj, "type", where),
        problem=problem,
    )


def _checked(kind: str, name: str, namespace: str) -> tuple[str, str | None]:
    """The namespace as a Namespace and None, or a printable copy of it and why it (or the name) cannot be used.

    Names reach READMEs, logs and our database (where PostgreSQL refuses NUL), so a control character is
    refused here, before anything is created, as is any namespace outside the portal's rule.
    """
    try:
        checked: str = Namespace(namespace)
    except InvalidName as exc:
        # Kept printable: a value refused here must never carry a control character (a NUL breaks PostgreSQL)
        # into a record, a log line or a run, wherever it is shown or stored afterwards.
        return printable(namespace), str(exc)
    bad = next((c for c in name if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        return checked, f"{kind} name {_show(name)} holds control character {bad!r}: rename it in the portal"
    return checked, None


def printable(text: str) -> str:
    """``text`` with each control character (C0, DEL, C1) written as ``\\xNN``, everything else as is."""
    return "".join(f"\\x{ord(c):02x}" if unicodedata.category(c) == "Cc" else c for c in text)


def _show(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 80 else shown[:77] + "..."


def _named(obj: dict[str, Any], name: str, where: str) -> Named | None:
    value = _field(obj, name, where, dict, default=None)
    if value is None:
        return None
    return Named(id=str(_field(value, "id", f"{where} {name}")), name=_field(value, "name", f"{where} {name}"))


def parse_output_port(obj: Any, where: str = "an output port") -> OutputPort:
    """An OutputPort from the portal's JSON object (``problem`` set when its namespace or name is unusable)."""
    raw_name, raw_namespace = _field(obj, "name", where), _field(obj, "namespace", where)
    namespace, problem = _checked("output port", raw_name, raw_namespace)
    name = raw_name if problem is None else printable(raw_name)
    return OutputPort(
        id=_field(obj, "id", where),
        name=name,
        namespace=namespace,
        data_product_id=_field(obj, "data_product_id", where),
        access_type=_field(obj, "access_type", where),
        status=_field(obj, "status", where),
        tags=_tags(obj, where),
        problem=problem,
    )


def _list_of(body: Any, key: str, where: str) -> list[Any]:
    items: list[Any] = _field(body, key, where, list)
    return items


class PortalClient:
    """Synchronous client of the portal API; one instance per worker, closed with ``close()``."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        headers = {"accept": "application/json", "user-agent": "provisioner"}
        if api_key:
            headers["x-key"] = api_key
        self._retries = max(0, retries)
        self._backoff = max(0.0, backoff)
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
            follow_redirects=False,
        )

    # -- reads ------------------------------------------------------------------------------------

    def get_product(self, product_id: str) -> Product | None:
        """The product, or None when the portal answers 404 (it is gone)."""
        path = f"{API}/{_seg(product_id)}"
        response = self._request("GET", path, allow_404=True)
        if response is None:
            return None
        return parse_product(_json(response, path), f"GET {path}")

    def list_products(self) -> list[Product]:
        """Every product the portal has (for resync)."""
        body = _json(self._require("GET", API), API)
        items = _list_of(body, "data_products", f"GET {API}")
        return [parse_product(item, f"GET {API} data_products[{i}]") for i, item in enumerate(items)]

    def input_ports(self, consumer_id: str) -> list[InputPort]:
        """The consumer's input ports (any status); [] when the consumer is gone."""
        path = f"{API}/{_seg(consumer_id)}/input_ports"
        response = self._request("GET", path, allow_404=True)
        if response is None:
            return []
        where = f"GET {path}"
        ports: list[InputPort] = []
        for i, item in enumerate(_list_of(_json(response, path), "input_ports", where)):
            at = f"{where} input_ports[{i}]"
            output_port = parse_output_port(_field(item, "output_port", at, dict), f"{at} output_port")
            ports.append(
                InputPort(
                    id=_field(item, "id", at),
                    status=_field(item, "status", at),
                    output_port_id=_field(item, "output_port_id", at, default=output_port.id),
                    output_port=output_port,
                    consumer_id=consumer_id,
                    consumer_type="data_products",
                )
            )
        return ports

    def output_port(self, producer_id: str, output_port_id: str) -> OutputPort | None:
        """One output port, or None when it (or its product) is gone."""
        path = f"{API}/{_seg(producer_id)}/output_ports/{_seg(output_port_id)}"
        response = self._request("GET", path, allow_404=True)
        if response is None:
            return None
        return parse_output_port(_json(response, path), f"GET {path}")

    def output_port_input_ports(self, producer_id: str, output_port_id: str) -> list[InputPort]:
        """The producer's view: every input port on one output port, with ``consumer_id`` filled; [] when gone."""
        path = f"{API}/{_seg(producer_id)}/output_ports/{_seg(output_port_id)}/input_ports/"
        response = self._request("GET", path, allow_404=True)
        if response is None:
            return []
        where = f"GET {path}"
        items = _list_of(_json(response, path), "input_ports", where)
        shared: OutputPort | None = None
        ports: list[InputPort] = []
        for i, item in enumerate(items):
            at = f"{where} input_ports[{i}]"
            embedded = _field(item, "output_port", at, dict, default=None)
            if embedded is not None:
                port = parse_output_port(embedded, f"{at} output_port")
            else:
                if shared is None:
                    shared = self.output_port(producer_id, output_port_id)
                    if shared is None:
                        return []
                port = shared
            consumer = _field(item, "consuming_abstract_data_product_id", at, default=None)
            if consumer is None:
                consumer = _field(item, "consuming_data_product_id", at, default=None)
            if consumer is None:
                consumer = _field(item, "data_product_id", at, default=None)
            if consumer is None:
                raise PortalError(f"portal answered {at} without field 'consuming_abstract_data_product_id'")
            info = _field(item, "consuming_abstract_data_product", at, dict, default={})
            consumer_type = _field(info, "abstract_data_product_type", at, default=None)
            ports.append(
                InputPort(
                    id=_field(item, "id", at),
                    status=_field(item, "status", at),
                    output_port_id=_field(item, "output_port_id", at, default=output_port_id),
                    output_port=port,
                    consumer_id=consumer,
                    consumer_type=consumer_type,
                )
            )
        return ports

    # -- writes -----------------------------------------------------------------------------------

    def add_finalizer(self, product_id: str, name: str) -> None:
        """Register finalizer ``name`` on the product; PortalNotFound when the product is gone."""
        path = f"{API}/{_seg(product_id)}/finalizers"
        if self._request("POST", path, json={"finalizer": name}, allow_404=True) is None:
            raise PortalNotFound(f"cannot add finalizer {name!r}: data product {product_id} is gone (404)")

    def remove_finalizer(self, product_id: str, name: str) -> None:
        """Remove finalizer ``name``; a 404 (product or finalizer already gone) counts as done."""
        self._request("DELETE", f"{API}/{_seg(product_id)}/finalizers/{_seg(name)}", allow_404=True)

    def set_status(self, product_id: str, status: str) -> None:
        """Report the product's status (``pending``, ``active`` or ``archived``); PortalNotFound when gone."""
        path = f"{API}/{_seg(product_id)}/status"
        if self._request("PUT", path, json={"status": status}, allow_404=True) is None:
            raise PortalNotFound(f"cannot set status {status!r}: data product {product_id} is gone (404)")

    # -- the doctor's probe -----------------------------------------------------------------------

    def probe(self) -> str:
        """One line saying the portal answers, accepts our key and lets us write finalizers and status.

        Raises PortalUnavailable (no answer) or PortalError (the key is refused, or writes are not allowed, named as
        such). The writes change nothing: each is sent with an empty body for the nil product id
        (``PROBE_PRODUCT_ID``). In the portal's source (``data_products/router.py``) both routes carry
        ``Authorization.enforce(...)`` as a route dependency, and FastAPI runs dependencies before it validates the
        body: a caller without the permission gets 403, one with it gets 422 for the missing field, and the handler
        (the only code that writes) never runs. The portal still sends its v1 webhook for the refused call, which
        the intake ignores (a failed portal call triggers nothing).
        """
        keyed = "x-key" in self._client.headers
        reading = self._probe_call("GET", API)
        if reading.status_code in (401, 403):
            raise PortalError(
                f"portal at {self._client.base_url} refused our API key on GET {API} ({reading.status_code}): "
                "set PROVISIONER_PORTAL_API_KEY to the portal's PORTAL_API_KEY"
                if keyed
                else f"portal at {self._client.base_url} wants an API key (GET {API} answered {reading.status_code}): "
                "set PROVISIONER_PORTAL_API_KEY to the portal's PORTAL_API_KEY"
            )
        if reading.status_code >= 300:
            raise PortalError(_client_error("GET", API, reading))
        _list_of(_json(reading, API), "data_products", f"GET {API}")  # the portal's answer, not a look-alike's
        refused = []
        for method, path, what in (
            ("POST", f"{API}/{PROBE_PRODUCT_ID}/finalizers", "finalizer"),
            ("PUT", f"{API}/{PROBE_PRODUCT_ID}/status", "status"),
        ):
            answer = self._probe_call(method, path)
            if answer.status_code in (401, 403):
                refused.append(what)
            elif answer.status_code != 422:
                raise PortalError(
                    f"portal answered the {what} write probe ({method} {path}, empty body) with "
                    f"{answer.status_code} where 403 or 422 was expected: the portal version may not match"
                )
        if refused:
            who = (
                "the API key can read but not write"
                if keyed
                else "we can read but not write (no PROVISIONER_PORTAL_API_KEY is set: the portal's default user acts)"
            )
            raise PortalError(
                f"portal at {self._client.base_url}: {who} ({' and '.join(refused)} writes answer 403): give the "
                "portal's systemaccount_bot user its admin role (a freshly seeded portal database has none: its seed "
                "truncates the global role assignments)" + ("" if keyed else ", and set PROVISIONER_PORTAL_API_KEY")
            )
        key = "API key accepted" if keyed else "no API key needed"
        return f"{self._client.base_url} answers; {key}; finalizer and status writes allowed"

    def _probe_call(self, method: str, path: str) -> httpx.Response:
        try:
            return self._client.request(method, path, json=None if method == "GET" else {})
        except httpx.TransportError as exc:
            raise PortalUnavailable(
                f"portal at {self._client.base_url} could not be reached ({type(exc).__name__}): "
                "check PROVISIONER_PORTAL_URL and that the portal is up"
            ) from None

    # -- plumbing ---------------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> PortalClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _require(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._request(method, path, **kwargs)
        assert response is not None  # allow_404 is False: a 404 raised already
        return response

    def _request(self, method: str, path: str, *, json: Any = None, allow_404: bool = False) -> httpx.Response | None:
        """Send one call with retries; None on 404 when ``allow_404``; typed errors otherwise."""
        attempts = self._retries + 1
        problem = ""
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                response = self._client.request(method, path, json=json)
            except httpx.TimeoutException as exc:
                problem = f"timed out ({type(exc).__name__})"
            except httpx.TransportError as exc:
                problem = f"could not be reached ({type(exc).__name__})"
            else:
                status = response.status_code
                if status < 300:
                    return response
                if status == 404 and allow_404:
                    return None
                if status >= 500 or status == 429:
                    problem = f"answered {status}"
                    retry_after = _retry_after(response)
                else:
                    raise PortalError(_client_error(method, path, response))
            if attempt + 1 < attempts:
                delay = self._backoff * (2**attempt) * (0.5 + random.random())  # noqa: S311 - jitter only
                if retry_after is not None:
                    delay = max(delay, retry_after)
                log_event(
                    logger,
                    "portal.retry",
                    level=logging.WARNING,
                    method=method,
                    path=path,
                    problem=problem,
                    attempt=attempt + 1,
                    delay_seconds=round(delay, 3),
                )
                time.sleep(delay)
        raise PortalUnavailable(
            f"portal {method} {path} {problem} after {attempts} attempt(s); check that the portal at "
            f"{self._client.base_url} is up (retried with backoff)"
        )


def _seg(value: str) -> str:
    """One URL path segment, quoted so an id cannot change the path."""
    return quote(str(value), safe="")


def _json(response: httpx.Response, path: str) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        # Not the portal's answer but something in between (a proxy's error page, a cut connection): it passes.
        raise PortalUnavailable(
            f"portal answered {response.request.method} {path} with {response.status_code} and a body that is not "
            f"JSON (content-type {response.headers.get('content-type', 'unset')!r}); a proxy in front of the portal "
            "may be failing, or PROVISIONER_PORTAL_URL may point at something else"
        ) from exc


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return min(max(seconds, 0.0), _MAX_RETRY_AFTER)


def _client_error(method: str, path: str, response: httpx.Response) -> str:
    status = response.status_code
    detail = ""
    try:
        body = response.json()
        if isinstance(body, dict) and "detail" in body:
            detail = str(body["detail"])[:300]
    except ValueError:
        detail = response.text[:200]
    hint = ""
    if status in (401, 403):
        hint = (
            " The portal refused our credentials: set PROVISIONER_PORTAL_API_KEY to a key of the portal's "
            "systemaccount_bot user, which needs an admin role to write."
        )
    elif status == 422:
        hint = " The portal rejected the request body; the portal version may not match this provisioner."
    suffix = f": {detail}" if detail else ""
    return f"portal {method} {path} answered {status}{suffix}.{hint}"
