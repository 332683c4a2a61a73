"""Validated value types for names that reach paths, policies and SQL.

Validate once at the edge; everything past it takes these types, never a bare ``str``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Self

from provisioner.errors import InvalidName

_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_BUCKET = re.compile(r"[a-z0-9](?:[a-z0-9.-]{1,61}[a-z0-9])")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


USER_NAME_LIMIT = 64  # AWS IAM's limit on user names


class Namespace(str):
    """A data product namespace: a lower-case DNS label (``a-z0-9-``, 1..63, no edge hyphen)."""

    __slots__ = ()

    def __new__(cls, value: object) -> Self:
        if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value):
            raise InvalidName(
                f"namespace {_show(value)} is not a safe slug: use 1 to 63 characters from a-z, "
                "0-9 and '-', starting and ending with a letter or digit"
            )
        return super().__new__(cls, value)

    @property
    def prefix(self) -> str:
        """The object-store prefix of this namespace, with its trailing slash."""
        return f"{self}/"

    @property
    def user_name(self) -> str:
        """The store user that owns this namespace's prefix: ``dp-<namespace>``, at most 64 characters.

        AWS IAM user names stop at 64 characters, so a namespace over 61 keeps its first 52 characters and
        ends with 8 hex characters of its SHA-256: still deterministic, and distinct for distinct namespaces.
        """
        name = f"dp-{self}"
        if len(name) <= USER_NAME_LIMIT:
            return name
        return f"dp-{self[:52]}-{hashlib.sha256(self.encode()).hexdigest()[:8]}"


class BucketName(str):
    """An S3 bucket name as AWS accepts it (3..63 of ``a-z0-9.-``)."""

    __slots__ = ()

    def __new__(cls, value: object) -> Self:
        if (
            not isinstance(value, str)
            or not _BUCKET.fullmatch(value)
            or ".." in value
            or re.fullmatch(r"\d+\.\d+\.\d+\.\d+", value)
        ):
            raise InvalidName(
                f"bucket name {_show(value)} is invalid: use 3 to 63 characters from a-z, 0-9, "
                "'.' and '-', starting and ending with a letter or digit"
            )
        return super().__new__(cls, value)


class Identifier(str):
    """A SQL identifier (schema, table, column) that is safe to log and to quote.

    Quoting still goes through ``psycopg.sql.Identifier``; this type only refuses names
    nobody should have (control characters, over 63 bytes, leading digits).
    """

    __slots__ = ()

    def __new__(cls, value: object) -> Self:
        if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
            raise InvalidName(
                f"identifier {_show(value)} is invalid: use a letter or '_' followed by up to 62 "
                "letters, digits, '_' or '$'"
            )
        return super().__new__(cls, value)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
