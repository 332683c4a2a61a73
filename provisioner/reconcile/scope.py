"""Which portal products are ours: the scope selector (PROVISIONER_SCOPE_DOMAINS, _TYPES, _TAGS, _NAMESPACES).

The default selects every product. Each dimension that is set narrows the scope: a product is in scope when it
matches every dimension set (AND), and it matches a dimension when it matches any of its values (OR). Domains and
data product types match by name (case-insensitive) or by id; tags by value (case-insensitive); namespaces by shell
glob (``sales-*``, ``finance_??``).

A product outside the scope is never adopted: no finalizer, no prefix, no user, no key, no project, no grant. A
product that was adopted and falls out of scope later (its domain, type, tags or namespace changed, or the
selector did) is *released*: our finalizer is removed and the provisioner stops provisioning it (no status write,
no project render, no store checks), but deletes nothing, so narrowing a selector by mistake destroys nothing and
widening it again resumes where it stopped. Its read grants keep following the portal (an approval is granted, a
revocation takes effect), and when it is deleted in the portal its user and keys are removed as for any product:
access it was given is never left behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from fnmatch import fnmatchcase

from provisioner.portal import Named, Product


def _folded(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.strip().casefold() for v in values if v.strip())


@dataclass(frozen=True)
class Scope:
    """The selector; empty dimensions select everything."""

    domains: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()

    @property
    def everything(self) -> bool:
        """True when no dimension is set (the default): every product is ours."""
        return not (self.domains or self.types or self.tags or self.namespaces)

    def admits(self, product: Product) -> bool:
        """True when ``product`` is in scope."""
        return self.excluded_because(product) is None

    def excluded_because(self, product: Product) -> str | None:
        """Why ``product`` is out of scope (for run records and logs), or None when it is in scope."""
        if self.everything:
            return None
        if self.domains and not _matches(product.domain, self.domains):
            return f"its domain {_shown(product.domain)} is not one of PROVISIONER_SCOPE_DOMAINS"
        if self.types and not _matches(product.type, self.types):
            return f"its type {_shown(product.type)} is not one of PROVISIONER_SCOPE_TYPES"
        if self.tags and not (_folded(product.tags) & _folded(self.tags)):
            return f"none of its tags ({', '.join(product.tags) or 'none'}) is one of PROVISIONER_SCOPE_TAGS"
        if self.namespaces and not any(fnmatchcase(product.namespace, glob) for glob in self.namespaces):
            return f"its namespace {product.namespace!r} matches no glob of PROVISIONER_SCOPE_NAMESPACES"
        return None

    def describe(self) -> str:
        """The selector in one line, for logs and status."""
        if self.everything:
            return "all products"
        parts = [
            f"{label} {', '.join(values)}"
            for label, values in (
                ("domains", self.domains),
                ("types", self.types),
                ("tags", self.tags),
                ("namespaces", self.namespaces),
            )
            if values
        ]
        return "; ".join(parts)


def _matches(named: Named | None, wanted: tuple[str, ...]) -> bool:
    if named is None:
        return False
    folded = _folded(wanted)
    return named.name.casefold() in folded or named.id.casefold() in folded


def _shown(named: Named | None) -> str:
    return "(none)" if named is None else repr(named.name)
