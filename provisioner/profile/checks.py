"""Quality-check suggestions in the check format of Databricks Labs' DQX, from a table's profile.

Each check is a dict a DQX user can load as is (``DQEngine.apply_checks_by_metadata`` or a YAML/JSON checks
file)::

    {"check": {"function": "is_not_null", "arguments": {"column": "id"}}, "name": "id_is_null",
     "criticality": "error"}

The rules and their defaults follow DQX's own profiler (``profiler/profile_builder.py``, ``generator.py``):

* ``is_not_null_and_not_empty`` (text, ``trim_strings``) when at most 1% of values are null and at most 1% empty;
  ``is_not_null`` when only the null share is that low (and for columns of other types);
* ``is_in_list`` when the column (text or integer) has fewer than 10 distinct values, fewer than 5% of its rows,
  and the list was verified against every row; strings are SQL-quoted (``"'gold'"``), since DQX reads a bare
  string as a column expression;
* ``is_in_range`` from the minimum and maximum of a number, date or timestamp column.

No check carries a value of a column proposed as PII (no ``is_in_list``, no ``is_in_range`` there).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

TEXT, INTEGER, NUMERIC, TEMPORAL = "text", "integer", "numeric", "temporal"
_QUOTABLE = re.compile(r"(['\\])")


@dataclass(frozen=True)
class CheckOptions:
    """Thresholds, with DQX's profiler defaults."""

    max_in_count: int = 10
    distinct_ratio: float = 0.05
    max_null_ratio: float = 0.01
    max_empty_ratio: float = 0.01
    trim_strings: bool = True
    criticality: str = "error"


class ProfiledColumn(Protocol):
    """What a check needs to know about a column (read-only: a frozen ``ColumnProfile`` is one)."""

    @property
    def name(self) -> str: ...
    @property
    def category(self) -> str: ...
    @property
    def nulls(self) -> int: ...
    @property
    def empties(self) -> int | None: ...
    @property
    def minimum(self) -> Any: ...
    @property
    def maximum(self) -> Any: ...
    @property
    def allowed(self) -> tuple[str, ...] | None: ...
    @property
    def is_pii(self) -> bool: ...


def suggest_checks(
    columns: Sequence[ProfiledColumn], rows: int, options: CheckOptions | None = None
) -> list[dict[str, Any]]:
    """The DQX checks the profile supports, column by column, in DQX's order (null/empty, list, range)."""
    options = options or CheckOptions()
    if rows <= 0:
        return []
    checks: list[dict[str, Any]] = []
    for col in columns:
        null_ok = col.nulls / rows <= options.max_null_ratio
        if col.category == TEXT and col.empties is not None:
            if null_ok and col.empties / rows <= options.max_empty_ratio:
                checks.append(
                    _check(
                        col.name,
                        "is_not_null_and_not_empty",
                        {"trim_strings": options.trim_strings},
                        f"{col.name}_is_null_or_empty",
                        options,
                    )
                )
            elif null_ok:
                checks.append(_check(col.name, "is_not_null", {}, f"{col.name}_is_null", options))
        elif null_ok:
            checks.append(_check(col.name, "is_not_null", {}, f"{col.name}_is_null", options))
        if col.is_pii:
            continue
        allowed = col.allowed
        if (
            allowed
            and col.category in (TEXT, INTEGER)
            and len(allowed) < options.max_in_count
            and len(allowed) / rows < options.distinct_ratio
        ):
            values = sorted(allowed, key=lambda v: (int(v), v) if col.category == INTEGER else (0, v))
            listed = [int(v) for v in values] if col.category == INTEGER else [sql_quote(v) for v in values]
            checks.append(_check(col.name, "is_in_list", {"allowed": listed}, f"{col.name}_other_value", options))
        if col.category in (INTEGER, NUMERIC, TEMPORAL) and _finite(col.minimum) and _finite(col.maximum):
            checks.append(
                _check(
                    col.name,
                    "is_in_range",
                    {"min_limit": limit(col.minimum), "max_limit": limit(col.maximum)},
                    f"{col.name}_isnt_in_range",
                    options,
                )
            )
    return checks


def _check(column: str, function: str, arguments: dict[str, Any], name: str, options: CheckOptions) -> dict[str, Any]:
    return {
        "check": {"function": function, "arguments": {"column": column, **arguments}},
        "name": name,
        "criticality": options.criticality,
    }


def _finite(value: Any) -> bool:
    """A usable limit: not missing, not NaN or infinite (numeric and float columns can hold those)."""
    if value is None:
        return False
    if isinstance(value, float | Decimal):
        return math.isfinite(value)
    return not (isinstance(value, date) and value in (date.min, date.max))


def sql_quote(value: str) -> str:
    """A string literal as DQX's ``val_to_str`` writes it: single quotes, ``'`` and ``\\`` escaped by a backslash."""
    return "'" + _QUOTABLE.sub(r"\\\1", value) + "'"


def limit(value: Any) -> Any:
    """A range limit as DQX's generator passes it: numbers as numbers, dates and timestamps as ISO strings."""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%dT%H:%M:%S.%f%z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return value
