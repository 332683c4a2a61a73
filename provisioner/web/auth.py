"""Webhook authentication, all derived from one secret (``PROVISIONER_WEBHOOK_SECRET``).

Three ways to prove a delivery, chosen by what the request carries:

* **v1 ``Sign`` header** (portal ``WEBHOOK_SECRET``): hex HMAC-SHA512 of the body. The portal signs
  ``json.dumps(content)`` (default separators) but sends compact JSON, so both the raw bytes and their
  re-serialisation are accepted, compared in constant time.
* **v2 URL token** (portal ``WEBHOOK_V2_URL``, whose sender cannot sign): an itsdangerous token in
  ``?token=``; ``provisioner webhook-url`` prints the URL. Changing the secret revokes every token.
* **Standard Webhooks** (other senders): ``webhook-id``, ``webhook-timestamp``, ``webhook-signature``
  with the ``whsec_`` key from :func:`standard_webhooks_key`.

Every failure raises ``AuthenticationFailed`` naming the check; nothing malformed escapes as a 500.

The status endpoints have their own, optional guard: ``StatusTokenGuard`` asks for ``Authorization: Bearer
<PROVISIONER_STATUS_TOKEN>`` on everything but the probes and the webhooks.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from provisioner.errors import AuthenticationFailed, classify

TOKEN_SALT = "provisioner.webhook-url.v1"  # noqa: S105 - a public label, not a secret
TOKEN_PAYLOAD = "portal-webhook"  # noqa: S105 - a public label, not a secret
_WHSEC_INFO = b"provisioner standard-webhooks key v1"


def url_token(secret: str) -> str:
    """A fresh signed token for the v2 webhook URL (valid until the secret changes or it ages out)."""
    return URLSafeTimedSerializer(secret, salt=TOKEN_SALT).dumps(TOKEN_PAYLOAD)


def standard_webhooks_key(secret: str) -> str:
    """The ``whsec_…`` key Standard Webhooks senders sign with: base64 of HMAC-SHA256(secret, fixed label)."""
    key = hmac.new(secret.encode("utf-8"), _WHSEC_INFO, hashlib.sha256).digest()
    return "whsec_" + base64.b64encode(key).decode("ascii")


def v1_signature(secret: str, body: bytes) -> str:
    """The v1 ``Sign`` header the portal would send for ``body`` (hex HMAC-SHA512)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha512).hexdigest()


@dataclass(frozen=True)
class WebhookAuth:
    """Checks deliveries against the secret; with no secret, authentication is off."""

    secret: str | None = field(default=None, repr=False)
    token_max_age: int = 0
    tolerance_seconds: int = 300

    @property
    def enabled(self) -> bool:
        """True when a secret is configured."""
        return self.secret is not None

    def check(self, headers: Mapping[str, str], query: Mapping[str, str], body: bytes) -> str:
        """Return the mode that authenticated the request (``none`` when off); raise ``AuthenticationFailed``."""
        if self.secret is None:
            return "none"
        if "webhook-signature" in headers or "webhook-id" in headers or "webhook-timestamp" in headers:
            self._standard(self.secret, headers, body)
            return "standard-webhooks"
        if "sign" in headers:
            self._v1(self.secret, headers["sign"], body)
            return "v1-sign"
        if "token" in query:
            self._token(self.secret, query["token"])
            return "url-token"
        raise AuthenticationFailed(
            "no credentials: expected a Sign header (v1), a ?token= in the URL (v2, see `provisioner webhook-url`) "
            "or webhook-id/webhook-timestamp/webhook-signature headers (Standard Webhooks)"
        )

    @staticmethod
    def _v1(secret: str, sign: str, body: bytes) -> None:
        key = secret.encode("utf-8")
        given = sign.strip().lower().encode("ascii", "replace")
        if hmac.compare_digest(hmac.new(key, body, hashlib.sha512).hexdigest().encode(), given):
            return
        # The portal signs json.dumps() of what it sends compactly: also check that re-serialisation.
        try:
            redumped = json.dumps(json.loads(body)).encode("utf-8")
        except (ValueError, RecursionError, UnicodeError):
            redumped = None
        if redumped is None or not hmac.compare_digest(
            hmac.new(key, redumped, hashlib.sha512).hexdigest().encode(), given
        ):
            raise AuthenticationFailed("Sign header does not match the body (v1 HMAC-SHA512)")

    def _token(self, secret: str, token: str) -> None:
        serializer = URLSafeTimedSerializer(secret, salt=TOKEN_SALT)
        try:
            payload = serializer.loads(token, max_age=self.token_max_age or None)
        except SignatureExpired:
            raise AuthenticationFailed(
                f"URL token expired (older than {self.token_max_age} s): issue a new one with `provisioner webhook-url`"
            ) from None
        except (BadSignature, ValueError, UnicodeError):
            raise AuthenticationFailed("URL token is not valid for this secret") from None
        if payload != TOKEN_PAYLOAD:
            raise AuthenticationFailed("URL token is not valid for this secret")

    def _standard(self, secret: str, headers: Mapping[str, str], body: bytes) -> None:
        msg_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "")
        missing = [
            name
            for name, value in (("webhook-id", msg_id), ("webhook-timestamp", stamp), ("webhook-signature", signatures))
            if not value
        ]
        if missing:
            raise AuthenticationFailed(f"Standard Webhooks header missing: {', '.join(missing)}")
        if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12:
            raise AuthenticationFailed("webhook-timestamp is not a Unix time in seconds")
        if abs(time.time() - int(stamp)) > self.tolerance_seconds:
            raise AuthenticationFailed(f"webhook-timestamp is outside the {self.tolerance_seconds} s tolerance")
        key = base64.b64decode(standard_webhooks_key(secret).removeprefix("whsec_"))
        expected = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        for candidate in signatures.split(" "):
            version, _, encoded = candidate.partition(",")
            if version != "v1":
                continue
            try:
                given = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            if hmac.compare_digest(expected, given):
                return
        raise AuthenticationFailed("webhook-signature does not match (Standard Webhooks v1)")


#: Paths a status token never guards: probes (a kubelet sends no token) and the webhooks (they have their own auth).
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
OPEN_PREFIXES = ("/webhooks/",)


def bearer_matches(authorization: str | bytes | None, token: str) -> bool:
    """True when an ``Authorization`` header value is ``Bearer <token>``; compared in constant time."""
    if authorization is None:
        return False
    value = authorization if isinstance(authorization, bytes) else authorization.encode("latin-1", "replace")
    scheme, _, given = value.strip().partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(given.strip(), token.encode("utf-8"))


class StatusTokenGuard:
    """ASGI middleware: with a token set, every path but the probes and the webhooks needs ``Bearer <token>``.

    Guarding everything but a short open list (rather than listing what to guard) covers /status/*, /metrics, the
    status page at ``/`` and whatever is added later. Without a token the app is served as it is.
    """

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http" or _is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        authorization = next((value for name, value in scope["headers"] if name == b"authorization"), None)
        if bearer_matches(authorization, self.token):
            await self.app(scope, receive, send)
            return
        refused = classify(AuthenticationFailed("this endpoint needs Authorization: Bearer <PROVISIONER_STATUS_TOKEN>"))
        response = JSONResponse(
            {"error": refused.message},
            status_code=refused.http_status,
            headers={"WWW-Authenticate": 'Bearer realm="provisioner"'},
        )
        await response(scope, receive, send)


def _is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)
