"""Errors of profiling and of the residual-PII gate, all under ``provisioner.errors``."""

from __future__ import annotations

from provisioner.errors import InvalidInput, PermanentError


class ProfileTargetError(PermanentError):
    """A table to profile does not exist, is not a table or view, or the tenant role may not read it."""


class ProfileInputError(InvalidInput):
    """A table name, sample size or output file given to ``provisioner profile`` is not usable."""
