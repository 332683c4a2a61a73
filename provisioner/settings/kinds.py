"""What a setting accepts: a parser from the variable's text to a typed value, and a short phrase for the docs.

A parser raises ValueError (or InvalidName) with a message a person can act on; the reader turns it into a
``SettingsError`` naming the variable.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from provisioner.names import BucketName

# Covariant: a Kind[str] also declares a setting of type ``str | None`` (unset by default).
T_co = TypeVar("T_co", covariant=True)
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Kind(Generic[T_co]):
    """How one setting's text becomes its value (``parse``), and what it accepts, in words (``accepts``)."""

    parse: Callable[[str], T_co]
    accepts: str


def _text(raw: str) -> str:
    return raw


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be blank")
    return raw


def _url(raw: str) -> str:
    if "://" not in raw:
        raise ValueError("expected a URL such as http://host:port")
    return raw


def _postgres_url(raw: str) -> str:
    # The hint names PostgreSQL's own form: an http:// example here sent people the wrong way.
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if scheme not in ("postgresql", "postgres"):
        raise ValueError("expected a PostgreSQL URL such as postgresql://user@host:5432/dbname")
    return raw


def _base_url(raw: str) -> str:
    # Paths are appended to it: one form, without the trailing slash.
    return _url(raw).rstrip("/")


def _checked(convert: Callable[[str], N], ok: Callable[[N], bool], expected: str) -> Callable[[str], N]:
    """A parser that converts the text and refuses a value outside ``ok``; both errors say what is expected."""

    def parse(raw: str) -> N:
        try:
            value = convert(raw.strip())
        except ValueError:
            # Not Python's "invalid literal for int()": what was given, and what is expected.
            kind = "whole number" if convert is int else "number"
            raise ValueError(f"{raw!r} is not a {kind}: {expected}") from None
        if not ok(value):
            raise ValueError(expected)
        return value

    return parse


_port = _checked(int, lambda v: 0 < v < 65536, "expected a port between 1 and 65535")
_positive = _checked(int, lambda v: v > 0, "expected a whole number above 0")
_non_negative = _checked(int, lambda v: v >= 0, "expected a whole number of 0 or more")
_positive_float = _checked(float, lambda v: v > 0, "expected a number above 0")
_seconds = _checked(int, lambda v: v >= 0, "expected a whole number of seconds (0 or more) or off")


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _seconds_or_off(raw: str) -> int | None:
    return None if raw.strip().lower() == "off" else _seconds(raw)


def _comma_list(raw: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    if not values:
        raise ValueError("expected a comma-separated list with at least one value (unset it to mean all)")
    return values


def _bearer_token(raw: str) -> str:
    if len(raw) < 16 or not raw.isascii() or not raw.isprintable() or " " in raw:
        raise ValueError("expected at least 16 printable ASCII characters without spaces (e.g. `openssl rand -hex 32`)")
    return raw


def _finalizer(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}", raw):
        raise ValueError("expected 1 to 63 characters from letters, digits, '.', '_', '-', '/'")
    return raw


def choice(*options: str) -> Kind[str]:
    """One of ``options``, in any case; the value is the option as written here."""

    def parse(raw: str) -> str:
        value = raw.strip()
        folded = {o.lower(): o for o in options}
        if value.lower() not in folded:
            raise ValueError(f"expected one of {', '.join(options)}")
        return folded[value.lower()]

    return Kind(parse, " | ".join(options))


TEXT = Kind(_text, "text")
NONBLANK = Kind(_nonempty, "text, not blank")
URL = Kind(_url, "URL")
POSTGRES_URL = Kind(_postgres_url, "postgresql:// URL")
BASE_URL = Kind(_base_url, "URL (trailing / dropped)")
PORT = Kind(_port, "port 1-65535")
POSITIVE = Kind(_positive, "whole number > 0")
NON_NEGATIVE = Kind(_non_negative, "whole number >= 0")
POSITIVE_FLOAT = Kind(_positive_float, "number > 0")
BOOL = Kind(_bool, "true | false")
SECONDS_OR_OFF = Kind(_seconds_or_off, "whole number >= 0, or off")
COMMA_LIST = Kind(_comma_list, "comma list")
BEARER_TOKEN = Kind(_bearer_token, "16+ printable ASCII characters, no spaces")
FINALIZER = Kind(_finalizer, "1-63 of letters, digits, . _ - /")
PATH = Kind(Path, "path")
BUCKET = Kind(BucketName, "S3 bucket name")
