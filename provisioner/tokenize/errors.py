"""Errors of the tokenization engine, all under ``provisioner.errors``."""

from __future__ import annotations

from provisioner.errors import InvalidInput, SettingsError, TemporaryError, TokenizeError


class TokenizeConfigError(SettingsError):
    """The token format or key is missing or invalid; the message names the setting."""


class PolicyError(InvalidInput):
    """A tokenization policy (YAML file or dict) is malformed; the message says where."""


class TargetError(TokenizeError):
    """A table or column of the policy is unknown, of the wrong type, or not writable by the tenant role."""


class RowCountMismatch(TargetError):
    """The rewrite changed another number of rows than needed tokens: some values would stay untokenized."""

    def __init__(self, table: str, needed: int, changed: int, where: str = "") -> None:
        # Fewer rows: a BEFORE UPDATE trigger returning NULL, or a row-level security policy for UPDATE stricter
        # than the one for SELECT, kept rows from being rewritten. Failing keeps a grant from following.
        why = " (a trigger or a row-level security policy kept some from being updated)" if changed < needed else ""
        super().__init__(
            f"table {table}: {where}{needed} rows needed tokens but {changed} were rewritten{why}; "
            "the transaction was rolled back, nothing in it was changed"
        )


class TenantError(TokenizeError):
    """A tenant has no usable connection settings or its credential provider failed."""


class TenantUnavailable(TemporaryError):
    """A tenant database could not be reached; retrying later may work."""


class RecorderError(TemporaryError):
    """The run record could not be written to the provisioner's database."""
