"""The values a profile is made of: validated table names, options, and the profiles of tables and columns.

``to_json`` gives what ``provisioner profile --json`` prints; ``record`` what a run record keeps (counts only).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal

from provisioner.errors import InvalidName
from provisioner.names import SqlName
from provisioner.profile import queries as q
from provisioner.profile.checks import TEMPORAL, CheckOptions
from provisioner.profile.errors import ProfileInputError
from provisioner.profile.proposals import Proposal
from provisioner.tokenize import TokenFormat

DEFAULT_SAMPLE_ROWS = 2000
MAX_SAMPLE_ROWS = 1_000_000
ANALYZE_MODES = ("auto", "always", "never")
_TENANT_ID = re.compile(r"[a-z0-9][a-z0-9_]{0,62}")  # as tokenization policies name tenants


def parse_tenant(value: str) -> str:
    """A tenant id (lower case letters, digits and ``_``), or ProfileInputError."""
    tenant = value.lower()
    if not _TENANT_ID.fullmatch(tenant):
        raise ProfileInputError(f"tenant {value!r} is not a tenant id (letters, digits, '_')")
    return tenant


@dataclass(frozen=True)
class TableName:
    """A validated ``schema.table``."""

    schema: SqlName
    table: SqlName

    @classmethod
    def parse(cls, text: str) -> TableName:
        """``schema.table`` (or ``table``, in ``public``); ProfileInputError for anything else."""
        parts = text.split(".")
        if len(parts) > 2:
            raise ProfileInputError(f"table {text!r} is invalid: give schema.table")
        schema, table = parts if len(parts) == 2 else ("public", parts[0])
        try:
            return cls(SqlName(schema), SqlName(table))
        except InvalidName as exc:
            raise ProfileInputError(f"table {text!r} is invalid: {exc}") from None

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class ProfileOptions:
    """Sample size, statistics, token format (tokens are never PII), limits and check thresholds."""

    sample_rows: int = DEFAULT_SAMPLE_ROWS
    exact_distinct: bool = False
    analyze: str = "auto"  # auto (when the statistics are missing or stale) | always | never
    token_format: TokenFormat = field(default_factory=TokenFormat)
    statement_timeout_ms: int = 600_000
    lock_timeout_ms: int = 5_000
    seed: int = 19
    checks: CheckOptions = field(default_factory=CheckOptions)

    def __post_init__(self) -> None:
        if not 1 <= self.sample_rows <= MAX_SAMPLE_ROWS:
            raise ProfileInputError(f"the sample must be 1 to {MAX_SAMPLE_ROWS:,} rows, got {self.sample_rows}")
        if self.analyze not in ANALYZE_MODES:
            raise ProfileInputError(f"analyze must be one of {', '.join(ANALYZE_MODES)}, got {self.analyze!r}")


@dataclass(frozen=True)
class ColumnProfile:
    """One column's statistics, PII proposal and (for text) length statistics."""

    name: str
    type: str
    category: str
    nulls: int = 0
    empties: int | None = None
    distinct_estimate: int | None = None
    distinct_source: str | None = None  # pg_stats | sample | exact
    minimum: Any = None
    maximum: Any = None
    length: Mapping[str, float] | None = None
    allowed: tuple[str, ...] | None = None  # every value, verified against all rows (few distinct values only)
    proposal: Proposal = field(default_factory=Proposal)
    skipped: str | None = None

    @property
    def is_pii(self) -> bool:
        """True when a ``pii-*`` tag is proposed."""
        return bool(self.proposal.tags)

    def to_json(self) -> dict[str, Any]:
        """The column as ``--json`` prints it; no value of a PII column (its min and max are left out)."""
        out: dict[str, Any] = {
            "name": self.name,
            "type": self.type,
            "nulls": self.nulls,
            "empties": self.empties,
            "distinct_estimate": self.distinct_estimate,
            "distinct_source": self.distinct_source,
            "proposed_tags": list(self.proposal.tags),
            "score": self.proposal.score,
            "evidence": self.proposal.evidence,
        }
        if self.category in (q.INTEGER, q.NUMERIC, TEMPORAL):
            out["min"] = None if self.is_pii else _jsonable(self.minimum)
            out["max"] = None if self.is_pii else _jsonable(self.maximum)
        if self.length is not None:
            out["length"] = dict(self.length)
        if self.skipped:
            out["skipped"] = self.skipped
        return out


@dataclass(frozen=True)
class TableProfile:
    """One table's profile: rows, columns, the sample behind the proposals, and suggested DQX checks."""

    table: str
    rows: int
    sampled_rows: int
    sample_method: str
    statistics: str  # analyzed | fresh | stale: <why> | none (views and foreign tables have no pg_stats)
    columns: tuple[ColumnProfile, ...]
    checks: tuple[dict[str, Any], ...]
    seconds: float

    @property
    def proposed(self) -> dict[str, list[str]]:
        """Column → proposed tags, for columns with any."""
        return {c.name: list(c.proposal.tags) for c in self.columns if c.proposal.tags}

    def to_json(self) -> dict[str, Any]:
        """The table as ``--json`` prints it."""
        return {
            "table": self.table,
            "rows": self.rows,
            "sampled_rows": self.sampled_rows,
            "sample": self.sample_method,
            "statistics": self.statistics,
            "columns": [c.to_json() for c in self.columns],
            "checks": list(self.checks),
        }

    def record(self) -> dict[str, Any]:
        """Counts for the run record: never a value."""
        return {
            "rows": self.rows,
            "sampled_rows": self.sampled_rows,
            "columns": len(self.columns),
            "proposed": self.proposed,
            "checks": len(self.checks),
            "statistics": self.statistics,
        }


@dataclass(frozen=True)
class ProfileProgress:
    """A progress event for displays."""

    index: int
    count: int
    table: str
    phase: Literal["started", "sampled", "finished", "failed"]
    seconds: float = 0.0


Progress = Callable[[ProfileProgress], None]


@dataclass(frozen=True)
class ProfileResult:
    """The outcome of one profile run; the tables profiled before a failure are kept."""

    run_id: str
    status: Literal["SUCCESS", "FAILURE"]
    tenant: str
    tables: tuple[TableProfile, ...]
    error: str | None
    retryable: bool
    started_at: datetime
    finished_at: datetime
    duration_s: float

    @property
    def ok(self) -> bool:
        """True on SUCCESS."""
        return self.status == "SUCCESS"

    def to_json(self) -> dict[str, Any]:
        """``{"tables": [...]}`` with the run's id, tenant, status and error."""
        return {
            "run_id": self.run_id,
            "tenant": self.tenant,
            "status": self.status,
            "error": self.error,
            "tables": [t.to_json() for t in self.tables],
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal | float) and not math.isfinite(value):
        return str(value)  # NaN and infinities have no JSON number
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
