"""Validated value types for names that reach paths, policies and SQL, and the one mapping to store-side names.

Validate once at the edge; everything past it takes these types, never a bare ``str``.

A namespace is whatever the portal accepts (``^[a-z0-9+=,.@_-]+$``, at most 64 characters). Not every such
string is a safe S3 prefix segment, folder name, store user name or SQL identifier, so every store-side name is
derived here, and only here, from the namespace:

========================  ====================================  =============================================
name                      plain namespace (most of them)        any other namespace
========================  ====================================  =============================================
``store_name``            the namespace itself                  readable part ``.`` 16 hex digits of SHA-256
``prefix`` (S3)           ``<store_name>/``                     ``<store_name>/``
``folder`` (project)      ``<store_name>``                      ``<store_name>``
``user_name`` (store)     ``dp-<store_name>`` (≤ 64)            ``dp-<store_name>`` (always ≤ 64)
``sql_name``              the namespace itself (if SQL-safe)    readable part ``_`` 8 hex digits
========================  ====================================  =============================================

A *plain* namespace starts and ends with a letter or digit and holds only ``a-z``, ``0-9``, ``_`` and ``-``:
every DNS label (all products provisioned before other namespaces were accepted) and every sample namespace
of the portal (``customer_segmentation``). It maps to itself, so nothing provisioned earlier moves.

Any other namespace loses information on the way (``+=,.@`` become ``-``, leading and trailing ``-``/``_`` go,
the rest may be cut), so its store name gets a suffix: ``.`` and the first 16 hex digits of the SHA-256 of the
namespace. ``com.example@x`` becomes ``com-example-x.<hash>``: recognisable, deterministic, and different
from every other namespace's store name (plain store names hold no ``.``; two suffixed ones differ in their
hash, 64 bits). Store names never start with ``.`` or ``_`` and never contain ``/`` or ``..``: ``_archive/``
(see :func:`archive_prefix`) and the projects' ``.archive`` folder can never be a product's.

User names: AWS IAM allows 64 characters of ``[A-Za-z0-9+=,.@_-]``; MinIO and RustFS refuse ``=`` and ``,``
in user names; a store name uses only ``[a-z0-9._-]``, which all of them accept. A plain namespace over 61
characters keeps the rule user names had before: ``dp-`` + its first 52 characters + ``-`` + 8 hex digits
of its SHA-256.

SQL names (``sql_name``, given to the project template): ``[a-z_][a-z0-9_]*`` at most 63 characters. A
namespace of ``a-z``, ``0-9`` and ``_`` that starts with a letter or ``_`` maps to itself; any other has its
other characters turned into ``_`` and ends with ``_`` and 8 hex digits (``sales-eu`` → ``sales_eu_<hash>``).

These mappings are pinned by a table of examples in tests/test_names.py: changing one would orphan the
prefixes, users and folders of every product provisioned under it.
"""

from __future__ import annotations

import hashlib
import re
from typing import Self

from provisioner.errors import InvalidName

# The portal's rule (backend/app/core/namespace/validation.py). The portal matches with re.match and "$",
# which also lets a trailing newline through; fullmatch refuses it.
NAMESPACE_PATTERN = "[a-z0-9+=,.@_-]+"
NAMESPACE_MAX_LENGTH = 64
_NAMESPACE = re.compile(NAMESPACE_PATTERN)
_PLAIN = re.compile(r"[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?")
_LOSSY_CHARS = re.compile(r"[^a-z0-9_-]")
_SQL_PLAIN = re.compile(r"[a-z_][a-z0-9_]*")
_BUCKET = re.compile(r"[a-z0-9](?:[a-z0-9.-]{1,61}[a-z0-9])")
_SQL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")

USER_NAME_LIMIT = 64  # AWS IAM's limit on user names
USER_PREFIX = "dp-"  # every product's store user starts with it (and only theirs should)
SQL_NAME_LIMIT = 63  # PostgreSQL's identifier limit, the tightest of the engines a project may use
HASH_CHARS = 16  # hex digits of SHA-256 that keep lossy store names apart (64 bits: not worth forging)
SQL_HASH_CHARS = 8  # SQL names live inside one product's project: telling look-alikes apart is enough
ARCHIVE_ROOT = "_archive/"  # kept data of deleted products; no store name starts with "_"


def _digest(value: str, chars: int = HASH_CHARS) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:chars]


class Namespace(str):
    """A data product or output port namespace, exactly as the portal accepts it.

    ``^[a-z0-9+=,.@_-]+$`` and at most 64 characters; anything else (NUL and other control characters,
    ``/``, upper case, spaces, an empty string, 65 characters) raises InvalidName. So do ``.`` and any
    namespace holding ``..``: the portal accepts them, but they read as relative paths (a deliberate refusal).
    The store-side names derived from it are properties: see the module docstring for the mapping.
    """

    __slots__ = ()

    def __new__(cls, value: object) -> Self:
        if isinstance(value, Namespace):
            return value  # type: ignore[return-value]
        if not isinstance(value, str) or len(value) > NAMESPACE_MAX_LENGTH or not _NAMESPACE.fullmatch(value):
            raise InvalidName(
                f"namespace {_show(value)} is not one the portal accepts: use 1 to {NAMESPACE_MAX_LENGTH} "
                "characters from a-z, 0-9 and + = , . @ _ -"
            )
        if ".." in value or value == ".":
            # The portal's regex lets these through, but they read as relative paths wherever a namespace is
            # shown or logged next to a prefix or folder: refused on purpose (the product is parked with this).
            raise InvalidName(
                f"namespace {_show(value)} is refused: '.' alone and '..' read as relative paths; "
                "rename the product's namespace in the portal"
            )
        return super().__new__(cls, value)

    @property
    def plain(self) -> bool:
        """True when every store-side name is the namespace itself (no hash suffix)."""
        return _PLAIN.fullmatch(self) is not None

    @property
    def store_name(self) -> str:
        """The namespace as the store and the file system know it: safe as a path segment, ≤ 61 characters
        unless the namespace is plain (then it is the namespace itself)."""
        if self.plain:
            return str(self)
        readable = _LOSSY_CHARS.sub("-", self).strip("-_")[:44].rstrip("-_") or "ns"
        return f"{readable}.{_digest(self)}"

    @property
    def prefix(self) -> str:
        """The object-store prefix of this namespace, with its trailing slash."""
        return f"{self.store_name}/"

    @property
    def folder(self) -> str:
        """The name of the product's project folder under the products directory."""
        return self.store_name

    @property
    def user_name(self) -> str:
        """The store user that owns this namespace's prefix: ``dp-<store name>``, at most 64 characters.

        A plain namespace over 61 characters keeps its first 52 and ends with ``-`` and 8 hex digits of its
        SHA-256 (the rule user names always had, so existing users keep their names).
        """
        name = f"{USER_PREFIX}{self.store_name}"
        if len(name) <= USER_NAME_LIMIT:
            return name
        return f"{USER_PREFIX}{self[:52]}-{_digest(self, 8)}"

    @property
    def sql_name(self) -> str:
        """A SQL identifier for this namespace: ``[a-z_][a-z0-9_]*``, at most 63 characters.

        Nothing in it needs quoting, but quote it all the same: it may be a keyword (``select``).
        """
        if _SQL_PLAIN.fullmatch(self) and len(self) <= SQL_NAME_LIMIT:
            return str(self)
        room = SQL_NAME_LIMIT - SQL_HASH_CHARS - 1
        readable = re.sub(r"[^a-z0-9_]", "_", self)[:room]
        if not (readable[:1].isalpha() or readable[:1] == "_"):
            readable = f"n{readable}"[:room]  # an unquoted SQL name cannot start with a digit
        return f"{readable}_{_digest(self, SQL_HASH_CHARS)}"


def archive_prefix(namespace: Namespace, product_id: str) -> str:
    """Where a deleted product's kept data goes: ``_archive/<store name>/<product id>/``.

    No product's prefix starts with ``_`` (see the module docstring), so no product policy reaches it. A
    product id that is not a plain token (``[A-Za-z0-9_-]``, portal ids are UUIDs) is replaced by its hash.
    """
    token = product_id if _SAFE_ID.fullmatch(product_id) else _digest(product_id, 32)
    return f"{ARCHIVE_ROOT}{Namespace(namespace).store_name}/{token}/"


def is_product_user(user_name: str) -> bool:
    """True when ``user_name`` looks like a product's store user (``dp-…``)."""
    return user_name.startswith(USER_PREFIX)


def shared_user_name(namespace: Namespace) -> bool:
    """True when another namespace can have the same store user name.

    Only the truncated form (``dp-`` + 52 characters + ``-`` + 8 hex digits) can be shared, and only on
    purpose: a plain namespace of 61 characters written to look like it. Everything else is either the
    namespace itself or carries 64 bits of its hash.
    """
    return re.fullmatch(rf"{USER_PREFIX}.{{52}}-[0-9a-f]{{8}}", namespace.user_name) is not None


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


class SqlName(str):
    """A SQL identifier (schema, table, column) that is safe to log and to quote.

    Quoting still goes through ``psycopg.sql.Identifier``; this type only refuses names
    nobody should have (control characters, over 63 bytes, leading digits).
    """

    __slots__ = ()

    def __new__(cls, value: object) -> Self:
        if not isinstance(value, str) or not _SQL_NAME.fullmatch(value):
            raise InvalidName(
                f"identifier {_show(value)} is invalid: use a letter or '_' followed by up to 62 "
                "letters, digits, '_' or '$'"
            )
        return super().__new__(cls, value)


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- BigQuery names (issue 18) -------------------------------------------------------------------------------------
_BQ_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_BQ_LABEL = re.compile(r"[a-z0-9_-]{0,63}")
BQ_DATASET_LIMIT = 1024  # BigQuery: dataset ids are letters, digits and underscores, at most 1,024 characters
BQ_LABEL_LIMIT = 63  # BigQuery: label keys and values are at most 63 of lowercase letters, digits, "_" and "-"


def bigquery_dataset_id(prefix: str, namespace: Namespace) -> str:
    """The product's BigQuery dataset: ``<prefix>_<sql name>`` (letters, digits, ``_``; deterministic).

    The namespace's ``sql_name`` already holds only ``[a-z0-9_]`` and carries a hash when it had to change, so two
    namespaces never share a dataset. ``prefix`` is a setting: letters, digits and ``_``, not starting with a digit.
    """
    if not _BQ_PREFIX.fullmatch(prefix):
        raise InvalidName(
            f"BigQuery dataset prefix {_show(prefix)} is invalid: use a letter or '_' followed by up to 99 letters, "
            "digits or '_'"
        )
    name = f"{prefix}_{Namespace(namespace).sql_name}"
    assert len(name) <= BQ_DATASET_LIMIT
    return name


def bigquery_label(value: str) -> str:
    """``value`` as a BigQuery label value: lowercase ``[a-z0-9_-]``, at most 63 characters.

    A value that already fits is itself; any other is lowered, its other characters become ``-``, and it ends with
    ``-`` and 8 hex digits of its SHA-256 (so two values never share a label).
    """
    if _BQ_LABEL.fullmatch(value):
        return value
    readable = re.sub(r"[^a-z0-9_-]", "-", value.lower())[: BQ_LABEL_LIMIT - 9]
    return f"{readable}-{_digest(value, 8)}"
