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


class PlaintextRemains(TargetError):
    """After the rewrite, values in the policy's columns are still not tokens: the table is rolled back."""

    def __init__(self, table: str, remaining: dict[str, int]) -> None:
        # A BEFORE UPDATE trigger that puts the old value back, or a rule or AFTER trigger that rewrites the row,
        # lets the UPDATE count every row and still leave plaintext: only counting what is left catches it.
        total = sum(remaining.values())
        where = ", ".join(f"{column}: {count}" for column, count in remaining.items() if count)
        super().__init__(
            f"table {table}: after the rewrite {total} values were still not tokens ({where}); a trigger or rule on "
            "the table must have changed them back. The transaction was rolled back, nothing in it was changed; "
            "fix or disable that trigger or rule, then rerun"
        )


class RowSecurityActive(TargetError):
    """Row-level security applies to the tenant role: rows its policies hide would stay untokenized."""

    def __init__(self, table: str, role: str, *, forced: bool) -> None:
        how = "enabled and forced (FORCE ROW LEVEL SECURITY applies it to the owner too)" if forced else "enabled"
        who = "a role with BYPASSRLS" if forced else "the table's owner or a role with BYPASSRLS"
        super().__init__(
            f"table {table} has row-level security {how} and role {role} does not bypass it: rows its policies "
            f"hide from {role} would stay plaintext. Tokenize as {who}, or disable row-level security on the "
            "table; nothing in it was changed"
        )


class TableReplaced(TemporaryError):
    """The table's name pointed to another relation once the run held its lock (renamed, dropped, re-created)."""

    def __init__(self, table: str, what: str = "replaced (renamed, or dropped and created again)") -> None:
        super().__init__(
            f"table {table} was {what} while the run waited for its lock; nothing in it was changed. "
            "Rerun to tokenize the table that now has this name"
        )


class RunCancelled(TokenizeError):
    """An administrator cancelled the run's statement (``pg_cancel_backend``); the table was rolled back."""


class TenantError(TokenizeError):
    """A tenant has no usable connection settings or its credential provider failed."""


class TenantUnavailable(TemporaryError):
    """A tenant database could not be reached; retrying later may work."""


class RecorderError(TemporaryError):
    """The run record could not be written to the provisioner's database."""
