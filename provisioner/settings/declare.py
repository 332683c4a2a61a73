"""The form of a declaration: each setting is declared once, as a field of ``Settings`` made by :func:`setting`.

The field's name gives the variable (``port`` → ``PROVISIONER_PORT``), its annotation the type, and the
call the default, what it accepts, the unit, the area and one line of documentation. Parsing, validation,
``repr`` and the configuration reference are all built from these declarations.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from provisioner.settings.kinds import Kind

T = TypeVar("T")

PREFIX = "PROVISIONER_"
_META = "provisioner.setting"

#: Areas in the order the reference lists them, with a heading for each.
AREAS: dict[str, str] = {
    "process": "Process and database",
    "web": "Web server and webhooks",
    "portal": "Portal",
    "scope": "Scope: which portal products are ours",
    "store": "Store (S3 and its admin API)",
    "targets": "Provisioning targets beside S3 (BigQuery)",
    "projects": "Projects",
    "resync": "Resync",
    "jobs": "Jobs and workers",
    "retention": "Retention",
    "tokenize": "Tokenization",
    "tenants": "Tenants (one set per tenant ID)",
}


@dataclass(frozen=True)
class Declared:
    """One setting as declared: everything but its name and type, which the ``Settings`` field carries."""

    kind: Kind[Any]
    doc: str
    area: str
    unit: str = ""
    #: The default as the reference shows it, when the value itself would not say it (``(embedded)``).
    shown: str | None = None
    #: The whole value is a secret: kept out of ``repr`` (and, by its name, out of error messages).
    secret: bool = False
    #: Computes the default from settings read before it (by field name), when the variable is unset.
    derive: Callable[[Mapping[str, Any]], Any] | None = None


def setting(
    default: T,
    kind: Kind[T],
    doc: str,
    *,
    area: str,
    unit: str = "",
    shown: str | None = None,
    secret: bool = False,
    derive: Callable[[Mapping[str, Any]], T] | None = None,
) -> T:
    """Declare one setting, as the default of a ``Settings`` field (typed: ``kind`` gives the field's type)."""
    if area not in AREAS:
        raise ValueError(f"unknown settings area {area!r}: add it to AREAS")
    declared = Declared(kind, doc, area, unit, shown, secret, derive)
    return field(default=default, repr=not secret, metadata={_META: declared})


@dataclass(frozen=True)
class Variable:
    """A declared setting with its name and default: what reading and documenting it needs."""

    attribute: str
    name: str
    default: Any
    declared: Declared

    @property
    def shown_default(self) -> str:
        """The default as the reference shows it."""
        if self.declared.shown is not None:
            return self.declared.shown
        return show(self.default)


def variables(cls: type) -> Iterator[Variable]:
    """The declared settings of a ``Settings`` dataclass, in declaration order."""
    for fld in dataclasses.fields(cls):
        declared = fld.metadata.get(_META)
        if isinstance(declared, Declared):
            yield Variable(fld.name, PREFIX + fld.name.upper(), fld.default, declared)


def show(value: object) -> str:
    """A default value as an operator would type it."""
    if value is None:
        return "(unset)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Path) and not value.is_absolute():
        return f"./{value}"
    return str(value)
