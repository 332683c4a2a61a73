"""Generated bad requests against the real intake and real PostgreSQL: never a 5xx, never a row for a rejection.

The requests come from one seed, so a failure replays exactly: random bytes, mutations of the captured portal
deliveries, numbers too large to read, deep nesting, broken CloudEvents binary headers, malformed Standard Webhooks
headers and wrong content types. Most are signed correctly for their bytes (v1 ``Sign``, the v2 URL token or a
Standard Webhooks signature), so they get past authentication and exercise the parser; some are not.

A mutation can still be a good delivery (a flipped character inside a timestamp); those are accepted and stored.
So the test checks that what was stored is exactly what was accepted: one inbox row per 2xx answer, and no job
that an accepted delivery did not enqueue.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import random
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlencode

from starlette.types import ASGIApp, Message

from provisioner.web.auth import standard_webhooks_key, url_token, v1_signature
from tests.web.conftest import SECRET, V2_KINDS, Web, WebFactory, v1_samples, v2_sample

SEED = 1313
#: Requests the intake must reject; a few more are sent, as some mutations are still good deliveries.
REJECTIONS = 10_000
MAX_REQUESTS = 12_000
#: A bound on the test's duration on a loaded machine, not an assertion about speed: past it, generation stops.
TIME_BUDGET_SECONDS = 120.0
#: Statuses the intake answers on purpose (408 is a body that does not arrive in time).
ALLOWED = {200, 202, 204, 400, 401, 408, 413, 415}
MAX_BODY_BYTES = 256 * 1024

JSON_FRAGMENTS = [
    b"{",
    b"}",
    b"[",
    b"]",
    b'"',
    b",",
    b":",
    b"\\",
    b"\\u0000",
    b"\\ud800",
    b"\\udfff\\ud800",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999999",
    b"-0",
    b"null",
    b"true",
    b"\x00",
    b"\xff\xfe",
    b"\xc3\x28",
    b"\xed\xa0\x80",
    b"9" * 5000,
    b"-" + b"1" * 4301,
    b"0." + b"1" * 20000,
    b"[" * 2000,
    b'{"a":' * 500,
]


@dataclass
class Request:
    """One generated request: where, which headers (auth included), which bytes."""

    kind: str
    path: str
    headers: dict[str, str]
    body: bytes
    params: dict[str, str] = field(default_factory=dict)


class Generator:
    """Bad requests from a seed; ``next()`` picks a generator at random, weighted."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.v1 = [s["raw_body"].encode() for s in v1_samples()]
        self.v2 = [v2_sample(kind)["raw_body"].encode() for kind in V2_KINDS]
        self.whsec = base64.b64decode(standard_webhooks_key(SECRET).removeprefix("whsec_"))
        self.token = url_token(SECRET)
        self.kinds: list[tuple[Callable[[], Request], int]] = [
            (self.random_bytes, 2),
            (self.mutated_delivery, 5),
            (self.huge_number, 2),
            (self.deep_nesting, 2),
            (self.binary_cloudevent, 2),
            (self.standard_webhooks, 2),
            (self.wrong_content_type, 1),
            (self.bad_credentials, 1),
            (self.bad_content_length, 1),
        ]

    def next(self) -> Request:
        """One request of a randomly chosen kind."""
        make = self.rng.choices([k for k, _ in self.kinds], weights=[w for _, w in self.kinds])[0]
        return make()

    # signing -------------------------------------------------------------------------------------------

    def signed(self, kind: str, body: bytes, content_type: str | None = "application/json") -> Request:
        """``body`` authenticated one of the three ways, chosen at random."""
        headers = {} if content_type is None else {"Content-Type": content_type}
        how = self.rng.randrange(3)
        if how == 0:
            return Request(kind, "/webhooks/portal", {**headers, "Sign": v1_signature(SECRET, body)}, body)
        if how == 1:
            return Request(kind, "/webhooks/portal/v2", headers, body, {"token": self.token})
        return Request(kind, "/webhooks/portal", {**headers, **self.standard_headers(body)}, body)

    def standard_headers(self, body: bytes, msg_id: str | None = None, stamp: str | None = None) -> dict[str, str]:
        """Valid Standard Webhooks headers for ``body`` (a fresh id, now)."""
        msg_id = msg_id or f"msg_{self.rng.getrandbits(64):016x}"
        stamp = stamp or str(int(time.time()))
        digest = hmac.new(self.whsec, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        return {
            "webhook-id": msg_id,
            "webhook-timestamp": stamp,
            "webhook-signature": "v1," + base64.b64encode(digest).decode(),
        }

    # generators ----------------------------------------------------------------------------------------

    def random_bytes(self) -> Request:
        body = self.rng.randbytes(self.rng.choice([0, 1, 2, 16, 300, 4000]))
        if self.rng.random() < 0.3:
            body = b"{" + body + b"}"
        return self.signed("random_bytes", body)

    def mutated_delivery(self) -> Request:
        body = bytearray(self.rng.choice(self.v1 + self.v2))
        for _ in range(self.rng.randint(1, 6)):
            self.mutate(body)
        return self.signed("mutation", bytes(body[:MAX_BODY_BYTES]))

    def mutate(self, body: bytearray) -> None:
        """One random edit: flip, insert, delete, duplicate, truncate, or splice in a JSON fragment."""
        if not body:
            body.extend(self.rng.choice(JSON_FRAGMENTS))
            return
        at = self.rng.randrange(len(body))
        match self.rng.randrange(6):
            case 0:
                body[at] ^= 1 << self.rng.randrange(8)
            case 1:
                body.insert(at, self.rng.randrange(256))
            case 2:
                del body[at : at + self.rng.randint(1, 16)]
            case 3:
                body[at:at] = body[at : at + self.rng.randint(1, 64)]
            case 4:
                del body[at:]
            case _:
                fragment = self.rng.choice(JSON_FRAGMENTS)
                body[at : at + self.rng.randint(0, 8)] = fragment

    def huge_number(self) -> Request:
        digits = self.rng.choice([4301, 4400, 10_000, 50_000, 200_000])
        number = self.rng.choice(["", "-"]) + "9" * digits + self.rng.choice(["", ".5", "e5", "E-3"])
        document = json.loads(self.rng.choice(self.v1 + self.v2))
        where = self.rng.randrange(4)
        if where == 0:
            text = json.dumps(document)[:-1] + f', "extra": {number}}}'
        elif where == 1 and "data" in document:
            text = json.dumps({**document, "data": {**document["data"], "id": 0}}).replace('"id": 0', f'"id": {number}')
        elif "status_code" in document:
            text = json.dumps({**document, "status_code": 0}).replace('"status_code": 0', f'"status_code": {number}')
        else:
            text = f"[{number}]"
        return self.signed("huge_number", text.encode())

    def deep_nesting(self) -> Request:
        depth = self.rng.choice([33, 100, 999, 1000, 1001, 5000, 50_000, 100_000])
        opener, closer = self.rng.choice([("[", "]"), ('{"a":', "}")])
        nested = opener * depth + "1" + closer * depth
        document = json.loads(self.rng.choice(self.v2))
        if self.rng.random() < 0.5:
            text = json.dumps({**document, "data": 0}).replace('"data": 0', f'"data": {nested}')
        else:
            text = nested if self.rng.random() < 0.5 else opener * depth  # unterminated too
        return self.signed("deep_nesting", text.encode())

    def binary_cloudevent(self) -> Request:
        """Binary mode: attributes in ce-* headers, data as the body; every attribute may be wrong."""
        pick = self.rng.choice
        sample = json.loads(pick(self.v2))
        attributes: dict[str, str] = {
            "ce-specversion": pick(["1.0", "0.3", "", "1.0 ", "2", "1" * 300]),
            "ce-id": pick([sample["id"], "", "x" * 257, "\u00e9t\u00e9", "a b", "0"]),
            "ce-source": pick([sample["source"], "", "s" * 300, "/"]),
            "ce-type": pick([sample["type"], "", "t" * 300, "data_product.event", "input_port.event", "x.event"]),
        }
        for name in list(attributes):
            if self.rng.random() < 0.15:
                del attributes[name]
        data = pick(
            [
                json.dumps(sample["data"]),
                json.dumps({"id": "not-a-uuid"}),
                "[]",
                "null",
                '"text"',
                "{",
                "",
                "1" * 5000,
                "[" * 5000,
            ]
        ).encode()
        content_type = pick(["application/json", "application/cloudevents+json", "text/plain", "application/x+json"])
        request = self.signed("binary_cloudevent", data, content_type)
        request.headers.update({k: v.encode("utf-8").decode("latin-1") for k, v in attributes.items()})
        return request

    def standard_webhooks(self) -> Request:
        """Malformed Standard Webhooks headers around a real CloudEvent."""
        body = self.rng.choice(self.v2)
        headers = {"Content-Type": "application/json", **self.standard_headers(body)}
        broken = self.rng.choice(["webhook-id", "webhook-timestamp", "webhook-signature"])
        headers[broken] = (
            self.rng.choice(
                [
                    "",
                    " ",
                    "-1",
                    "1e10",
                    "99999999999999999999999",
                    "\u00a0123",
                    "v1,",
                    "v1,!!!!",
                    "v1,=",
                    "v1,YQ",
                    "v1," + "A" * 10_000,
                    "v2," + base64.b64encode(b"x" * 32).decode(),
                    " v1,abc  v1,",
                    ",,,",
                    "\u00ff" * 40,
                    str(int(time.time()) - 10_000),
                    str(int(time.time())) + "0",
                ]
            )
            .encode("utf-8")
            .decode("latin-1")
        )
        if self.rng.random() < 0.2:
            del headers[broken]
        return Request("standard_webhooks", "/webhooks/portal", headers, body)

    def wrong_content_type(self) -> Request:
        body = self.rng.choice(self.v1 + self.v2)
        content_type = self.rng.choice(
            [
                None,
                "",
                "text/plain",
                "application/xml",
                "application/x-www-form-urlencoded",
                "multipart/form-data; boundary=x",
                "application/jsonx",
                "json",
                "application/json; charset=utf-16",
                "application/cloudevents-batch+json",
                ";",
                "\u00e9/\u00e9".encode().decode("latin-1"),
            ]
        )
        return self.signed("content_type", body, content_type)

    def bad_content_length(self) -> Request:
        """A declared length that is not a number of bytes (uvicorn passes the header on as it came)."""
        request = self.signed("content_length", self.rng.choice(self.v1 + self.v2))
        length = self.rng.choice(["\u00b2", "-1", "1e3", " 12", "", "0x10", "9" * 5000, "12, 12", "\u0663"])
        request.headers["Content-Length"] = length.encode("utf-8").decode("latin-1")
        return request

    def bad_credentials(self) -> Request:
        body = self.rng.choice(self.v1 + self.v2)
        headers = {"Content-Type": "application/json"}
        match self.rng.randrange(4):
            case 0:
                return Request(
                    "credentials", "/webhooks/portal", {**headers, "Sign": self.rng.choice(["", "zz", "0" * 128])}, body
                )
            case 1:
                token = self.rng.choice(["", ".", "a.b.c", self.token[:-2], self.token + "x", "\u00e9"])
                return Request("credentials", "/webhooks/portal/v2", headers, body, {"token": token})
            case 2:
                return Request("credentials", "/webhooks/portal/v2", headers, body)
            case _:
                sign = v1_signature("another-secret", body)
                return Request("credentials", "/webhooks/portal", {**headers, "Sign": sign}, body)


async def test_generated_bad_requests_never_get_a_5xx_and_store_nothing(make_web: WebFactory) -> None:
    web: Web = await make_web(max_body_bytes=MAX_BODY_BYTES)
    generator = Generator(SEED)
    deadline = time.monotonic() + TIME_BUDGET_SECONDS
    statuses: Counter[int] = Counter()
    unexpected: list[tuple[int, str, bytes]] = []
    accepted = rejected = sent = 0
    while rejected < REJECTIONS and sent < MAX_REQUESTS and time.monotonic() < deadline:
        request = generator.next()
        status = await _send(web.app, request)
        sent += 1
        statuses[status] += 1
        if status not in ALLOWED:
            unexpected.append((status, request.kind, request.body[:200]))
        elif status < 300:
            accepted += 1
        else:
            rejected += 1
    assert unexpected == [], f"{len(unexpected)} unexpected statuses ({dict(statuses)}), first ones: {unexpected[:5]}"
    if rejected < REJECTIONS:
        warnings.warn(f"time budget reached after {sent} requests ({rejected} rejected)", stacklevel=1)
    # What was stored is exactly what was accepted: one inbox row per 2xx, no job an accepted delivery did not ask for.
    assert web.count("provisioner_inbox") == accepted, dict(statuses)
    assert web.count("provisioner_inbox_keys") <= accepted
    orphans = web.rows(
        "SELECT id FROM procrastinate_jobs WHERE id NOT IN (SELECT unnest(job_ids) FROM provisioner_inbox)"
    )
    assert orphans == []


async def _send(app: ASGIApp, request: Request) -> int:
    """POST ``request`` to the ASGI app as uvicorn would hand it over; the status, or 500 for an escaped exception.

    Straight to the app rather than through httpx: ten thousand requests spend most of their time in a client
    otherwise, and raw header bytes (any octet a sender puts there) reach the app as they would from a socket.
    """
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in request.headers.items()]
    headers.append((b"host", b"provisioner.test"))
    if not any(name == b"content-length" for name, _ in headers):
        headers.append((b"content-length", str(len(request.body)).encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": request.path,
        "raw_path": request.path.encode(),
        "query_string": urlencode(request.params).encode(),
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("provisioner.test", 80),
    }
    messages: list[Message] = [{"type": "http.request", "body": request.body, "more_body": False}]
    status: list[int] = []

    async def receive() -> Message:
        return messages.pop() if messages else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    try:
        await app(scope, receive, send)
    except Exception:  # what uvicorn would answer with 500 (and log as an ERROR)
        return 500
    return status[0] if status else 500


async def test_an_integer_too_long_to_read_is_400_naming_it(web: Web) -> None:
    head = b'{"specversion": "1.0", "id": "x", "source": "s", "type": "data_product.event", "data": {"id": '
    response = await web.client.post(
        f"/webhooks/portal/v2?token={url_token(SECRET)}",
        content=head + b"7" * 4301 + b"}}",
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert "integer" in response.json()["error"] and "4300 digits" in response.json()["error"]
    assert web.stored_nothing()


async def test_a_content_length_that_is_not_a_number_of_bytes_is_400(web: Web) -> None:
    for declared in ("\u00b2", "9" * 5000):  # str.isdigit() says yes to both (byte 0xb2 is "²"); int() refuses both
        request = Request("content_length", "/webhooks/portal/v2", {"Content-Type": "application/json"}, b"{}")
        request.params["token"] = url_token(SECRET)
        request.headers["Content-Length"] = declared
        assert await _send(web.app, request) == 400
    assert web.stored_nothing()
