"""Token formats and the Python reference implementation the SQL executor must match bit for bit.

Two modes:

* ``hmac`` (default): ``<prefix><base64url(HMAC-SHA256(key, utf8(value)))[:length]><suffix>``, e.g.
  ``tok_Xq3v0mH2a9kUe1rT5bYw8A_poc``. Deterministic (the same value gives the same token, so joins still
  work), one-way without the key. ``length`` is 22 to 43 characters (132 to 256 bits).
* ``base64``: ``<prefix><base64(utf8(value))><suffix>``, the original proof of concept. It is an
  **encoding, not protection**: anyone can reverse it (``detokenize``). Opt-in only, for demos.

Rules shared by both modes: ``None`` stays ``None``; the empty string stays the empty string (it carries
no personal data, and consumers can still tell "no value" apart); a value the guard recognises as a
token of the configured format is never tokenized again.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Literal

from provisioner.tokenize.errors import TokenizeConfigError

Mode = Literal["hmac", "base64"]
MODES: tuple[Mode, ...] = ("hmac", "base64")
DEFAULT_KEY_ENV = "PROVISIONER_TOKENIZE_KEY"
MIN_LENGTH = 22
MAX_LENGTH = 43  # unpadded base64url of a 32-byte digest
BLOCK_SIZE = 64  # SHA-256 block size, for the HMAC pads

# Prefix and suffix become part of a regex in Python *and* PostgreSQL; a small alphabet keeps their
# escaping identical in both engines (a backslash before a non-alphanumeric ASCII character is literal).
_AFFIX = re.compile(r"[A-Za-z0-9_.:~#@!+=-]*")
_HMAC_BODY = "[A-Za-z0-9_-]{%d}"
_BASE64_BODY = "(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"


@dataclass(frozen=True)
class TokenFormat:
    """How tokens look: mode, prefix, suffix and (hmac mode) the number of digest characters kept."""

    mode: Mode = "hmac"
    prefix: str = "tok_"
    suffix: str = "_poc"
    length: int = MIN_LENGTH

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise TokenizeConfigError(f"token mode {self.mode!r} is unknown: use one of {', '.join(MODES)}")
        if not self.prefix or len(self.prefix) > 32 or not _AFFIX.fullmatch(self.prefix):
            # An empty prefix would let ordinary 22-character strings pass the guard as tokens.
            raise TokenizeConfigError(
                f"token prefix {self.prefix!r} is invalid: use 1 to 32 characters from letters, digits and _.:~#@!+=-"
            )
        if len(self.suffix) > 32 or not _AFFIX.fullmatch(self.suffix):
            raise TokenizeConfigError(
                f"token suffix {self.suffix!r} is invalid: use up to 32 characters from letters, digits and _.:~#@!+=-"
            )
        if not MIN_LENGTH <= self.length <= MAX_LENGTH:
            raise TokenizeConfigError(f"token length {self.length} is invalid: use {MIN_LENGTH} to {MAX_LENGTH}")

    @property
    def guard_pattern(self) -> str:
        """The anchored regex (valid in Python and PostgreSQL) that recognises a token of this format."""
        body = _HMAC_BODY % self.length if self.mode == "hmac" else _BASE64_BODY
        return "^" + _escape(self.prefix) + body + _escape(self.suffix) + "$"

    @property
    def token_length(self) -> int | None:
        """The exact length of every token in hmac mode; None in base64 mode (it varies with the value)."""
        return len(self.prefix) + self.length + len(self.suffix) if self.mode == "hmac" else None


def _escape(text: str) -> str:
    return "".join(ch if ch.isalnum() else "\\" + ch for ch in text)


@dataclass(frozen=True)
class HmacPads:
    """The inner and outer HMAC-SHA256 pads derived from a key (RFC 2104); secret, never logged."""

    ipad: bytes = field(repr=False)
    opad: bytes = field(repr=False)

    @classmethod
    def from_key(cls, key: bytes) -> HmacPads:
        """Derive the pads: keys longer than a block are hashed first, then zero-padded to 64 bytes."""
        if len(key) > BLOCK_SIZE:
            key = hashlib.sha256(key).digest()
        key = key.ljust(BLOCK_SIZE, b"\0")
        return cls(ipad=bytes(b ^ 0x36 for b in key), opad=bytes(b ^ 0x5C for b in key))


class Tokenizer:
    """Tokenizes values in Python: the reference the SQL executor is tested against, and a tool for callers."""

    def __init__(self, fmt: TokenFormat, key: bytes | str | None = None, *, key_env: str = DEFAULT_KEY_ENV) -> None:
        if isinstance(key, str):
            key = key.encode("utf-8")
        if fmt.mode == "hmac" and not key:
            raise TokenizeConfigError(
                f"{key_env} is not set: hmac tokens need a secret key (e.g. `openssl rand -base64 32`); "
                "base64 mode needs none but protects nothing"
            )
        self.format = fmt
        self._key = key or b""
        self._guard = re.compile(fmt.guard_pattern.removeprefix("^").removesuffix("$"))

    def __repr__(self) -> str:
        return f"Tokenizer({self.format!r}, key=****)"

    @property
    def pads(self) -> HmacPads:
        """The HMAC pads of the key (hmac mode), for loading into the database by COPY."""
        return HmacPads.from_key(self._key)

    def is_token(self, value: str | None) -> bool:
        """True when ``value`` already has the shape of a token of this format (the idempotency guard)."""
        return value is not None and self._guard.fullmatch(value) is not None

    def token(self, value: str) -> str:
        """The token of ``value`` (no guard: use ``tokenize`` for the engine's rules)."""
        data = value.encode("utf-8")
        if self.format.mode == "base64":
            body = base64.b64encode(data).decode("ascii")
        else:
            digest = hmac.new(self._key, data, hashlib.sha256).digest()
            body = base64.urlsafe_b64encode(digest).decode("ascii")[: self.format.length]
        return self.format.prefix + body + self.format.suffix

    def tokenize(self, value: str | None) -> str | None:
        """Apply the engine's rules: None and '' unchanged, tokens unchanged, anything else tokenized."""
        if value is None or value == "" or self.is_token(value):
            return value
        return self.token(value)

    def detokenize(self, token: str) -> str:
        """Recover the value of a base64-mode token; hmac tokens are one-way and raise."""
        if self.format.mode != "base64":
            raise TokenizeConfigError("only base64-mode tokens can be reversed; hmac tokens are one-way")
        if not self.is_token(token):
            raise TokenizeConfigError("the value is not a token of the configured base64 format")
        body = token[len(self.format.prefix) : len(token) - len(self.format.suffix)]
        try:
            return base64.b64decode(body, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise TokenizeConfigError("the token's body is not base64 of UTF-8 text") from exc


def detokenize(token: str, fmt: TokenFormat | None = None) -> str:
    """Reverse a base64-mode token (the proof of concept's format by default)."""
    return Tokenizer(fmt or TokenFormat(mode="base64")).detokenize(token)
