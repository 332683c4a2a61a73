"""DQX check suggestions: DQX's check format, its profiler's thresholds, and no value of a PII column."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from provisioner.profile.checks import CheckOptions, limit, sql_quote, suggest_checks


@dataclass
class Col:
    name: str
    category: str
    nulls: int = 0
    empties: int | None = None
    minimum: Any = None
    maximum: Any = None
    allowed: tuple[str, ...] | None = None
    is_pii: bool = False


def functions(checks: list[dict]) -> list[tuple[str, str]]:
    return [(c["check"]["arguments"]["column"], c["check"]["function"]) for c in checks]


def test_dqx_profiler_thresholds() -> None:
    checks = suggest_checks(
        [
            Col("a", "text", nulls=10, empties=10),  # 1% nulls, 1% empty: both allowed
            Col("b", "text", nulls=10, empties=50),  # too many empties: not-null only
            Col("c", "text", nulls=11, empties=0),  # too many nulls: nothing
            Col("d", "integer", nulls=0, minimum=1, maximum=9),
            Col("e", "boolean"),
        ],
        rows=1000,
    )
    assert functions(checks) == [
        ("a", "is_not_null_and_not_empty"),
        ("b", "is_not_null"),
        ("d", "is_not_null"),
        ("d", "is_in_range"),
        ("e", "is_not_null"),
    ]
    assert all(c["criticality"] == "error" and c["name"] for c in checks)
    assert suggest_checks([Col("a", "text")], rows=0) == []


def test_lists_are_small_verified_and_quoted_as_dqx_reads_them() -> None:
    checks = suggest_checks(
        [
            Col("tier", "text", empties=0, allowed=("gold", "it's", "a\\b")),
            Col("level", "integer", allowed=("10", "2")),
            Col("many", "text", empties=0, allowed=tuple("abcdefghij")),  # 10 values: not fewer than 10
            Col("email", "text", empties=0, allowed=("x@example.com",), is_pii=True),
        ],
        rows=1000,
        options=CheckOptions(criticality="warn"),
    )
    lists = {
        c["check"]["arguments"]["column"]: c["check"]["arguments"]["allowed"]
        for c in checks
        if "allowed" in c["check"]["arguments"]
    }
    assert lists == {"tier": ["'a\\\\b'", "'gold'", "'it\\'s'"], "level": [2, 10]}
    assert {c["criticality"] for c in checks} == {"warn"}
    # Few distinct values, but not fewer than 5% of the rows: no list.
    assert not any(
        "allowed" in c["check"]["arguments"] for c in suggest_checks([Col("t", "text", allowed=("a", "b"))], rows=30)
    )


def test_range_limits_as_dqx_generator_writes_them() -> None:
    assert limit(datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2024-01-02T03:04:05.000000+0000"
    assert limit(date(2024, 1, 2)) == "2024-01-02"
    assert limit(Decimal("12.50")) == 12.5 and limit(Decimal("12")) == 12
    checks = suggest_checks(
        [
            Col("n", "numeric", minimum=Decimal("NaN"), maximum=Decimal(3)),
            Col("dob", "temporal", minimum=date(1950, 1, 1), maximum=date(2000, 1, 1), is_pii=True),
            Col("d", "temporal", minimum=date(2024, 1, 1), maximum=date(2024, 12, 31)),
        ],
        rows=10,
    )
    assert functions(checks) == [
        ("n", "is_not_null"),
        ("dob", "is_not_null"),
        ("d", "is_not_null"),
        ("d", "is_in_range"),
    ]
    assert sql_quote("o'neil") == "'o\\'neil'"
