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


_TARGETS = ("s3", "bigquery")  # provisioner/targets TARGET_NAMES (a test keeps the two equal)


def _targets(raw: str) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(v.strip().lower() for v in raw.split(",") if v.strip()))
    unknown = [v for v in values if v not in _TARGETS]
    if unknown:
        raise ValueError(f"unknown target(s) {', '.join(unknown)}: choose from {', '.join(_TARGETS)}")
    if "s3" not in values:
        # S3 holds the project's key and .env and the product's record; a product without it is not supported yet.
        raise ValueError("s3 must be one of the targets (it carries the project's credentials)")
    return values


_PRINCIPAL = re.compile(
    r"(group|user|serviceAccount):[^@\s,=]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}|domain:[A-Za-z0-9.-]+\.[A-Za-z]{2,}"
)
_PRINCIPAL_KEY = re.compile(r"[a-z0-9+.@_-]{1,64}")


def _principals(raw: str) -> tuple[tuple[str, str], ...]:
    """``namespace=kind:email`` pairs, comma separated (kind: group, user, serviceAccount; or domain:example.com)."""
    pairs: dict[str, str] = {}
    for item in (v.strip() for v in raw.split(",")):
        if not item:
            continue
        key, sep, principal = item.partition("=")
        key, principal = key.strip(), principal.strip()
        if not sep or not _PRINCIPAL_KEY.fullmatch(key) or ".." in key:
            raise ValueError(f"entry {item!r} must be <product namespace>=<principal>")
        if not _PRINCIPAL.fullmatch(principal):
            raise ValueError(
                f"principal {principal!r} of {key!r} must be group:<email>, user:<email>, serviceAccount:<email> "
                "or domain:<domain>"
            )
        if key in pairs and pairs[key] != principal:
            raise ValueError(f"namespace {key!r} is mapped twice")
        pairs[key] = principal
    if not pairs:
        raise ValueError("expected at least one <namespace>=<principal> entry")
    return tuple(sorted(pairs.items()))


def _bigquery_prefix(raw: str) -> str:
    from provisioner.names import Namespace, bigquery_dataset_id

    bigquery_dataset_id(raw, Namespace("x"))  # raises InvalidName, with the rule, for a prefix BigQuery refuses
    return raw


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
BIGQUERY_PREFIX = Kind(_bigquery_prefix, "a letter or _, then letters, digits or _")
TARGETS = Kind(_targets, "comma list of s3, bigquery (s3 required)")
PRINCIPALS = Kind(_principals, "comma list of namespace=group:|user:|serviceAccount:<email> or domain:<domain>")
BEARER_TOKEN = Kind(_bearer_token, "16+ printable ASCII characters, no spaces")
FINALIZER = Kind(_finalizer, "1-63 of letters, digits, . _ - /")
PATH = Kind(Path, "path")
BUCKET = Kind(BucketName, "S3 bucket name")
