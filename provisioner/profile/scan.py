"""Scanning a column's sampled values: counts of each PII kind, masked examples, and what the values look like.

Runs on the sample only (``TABLESAMPLE``, a few thousand values), in memory, and keeps nothing but counts and
masked examples once the profile is built. Tokens of the configured format are counted apart and never matched.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from provisioner.profile import patterns as p

MAX_EXAMPLES = 3


@dataclass
class ColumnScan:
    """What the sampled values of one column showed."""

    column: str
    values: int = 0  # non-null values in the sample
    examined: int = 0  # of those: not empty, not tokens
    empties: int = 0
    tokens: int = 0
    full: Counter[str] = field(default_factory=Counter)  # kind → values that are entirely that kind
    in_text: Counter[str] = field(default_factory=Counter)  # kind → values holding it inside longer text
    examples: dict[str, list[str]] = field(default_factory=dict)  # kind → masked examples
    person_names: int = 0
    bare_phones: int = 0  # phones written as bare digits with a trunk 0 (0612345678): also how padded ids look
    digit_runs: int = 0  # values of 8 to 15 digits and nothing else that are no other kind (31612345678)
    dates: list[tuple[int, int, int]] = field(default_factory=list)
    frequencies: Counter[str] = field(default_factory=Counter, repr=False)  # value → count; never leaves memory

    def add_example(self, kind: str, value: str) -> None:
        """Keep up to three different masked examples per kind."""
        masked = p.mask(kind, value)
        found = self.examples.setdefault(kind, [])
        if len(found) < MAX_EXAMPLES and masked not in found:
            found.append(masked)

    @property
    def distinct(self) -> int:
        """Distinct non-null values in the sample."""
        return len(self.frequencies)

    @property
    def singletons(self) -> int:
        """Values seen exactly once in the sample (for the distinct estimate)."""
        return sum(1 for c in self.frequencies.values() if c == 1)


def token_matcher(guard_pattern: str) -> re.Pattern[str]:
    """The compiled token guard of a ``TokenFormat`` (anchored; valid in Python and PostgreSQL)."""
    return re.compile(guard_pattern)


def scan_column(
    column: str,
    values: Iterable[str | None],
    *,
    is_token: re.Pattern[str] | None,
    whole_values: bool = True,
    free_text: bool = True,
    names: bool = False,
    dates: bool = False,
) -> ColumnScan:
    """Count what ``values`` hold: whole-value kinds, kinds inside text, person names and dates (when asked)."""
    scan = ColumnScan(column)
    for raw in values:
        if raw is None:
            continue
        scan.values += 1
        scan.frequencies[raw] += 1
        value = raw.strip()
        if not value:
            scan.empties += 1
            continue
        if is_token is not None and is_token.fullmatch(value):
            scan.tokens += 1
            continue
        scan.examined += 1
        kind = p.classify(value) if whole_values else None
        if kind is not None:
            scan.full[kind] += 1
            scan.add_example(kind, value)
            if kind == p.PHONE and value.isdigit():
                scan.bare_phones += 1
        elif value.isdigit() and 8 <= len(value) <= 15:
            scan.digit_runs += 1
        elif free_text and len(value) >= 6:
            seen: set[str] = set()
            for found_kind, match in p.find_in_text(value):
                if found_kind not in seen:
                    seen.add(found_kind)
                    scan.in_text[found_kind] += 1
                scan.add_example(found_kind, match)
        if names and p.looks_like_person_name(value):
            scan.person_names += 1
            if len(scan.examples.get(p.NAME, [])) < MAX_EXAMPLES:
                scan.add_example(p.NAME, value)
        if dates:
            parsed = p.parse_date(value)
            if parsed:
                scan.dates.append(parsed)
    return scan


def estimate_distinct(scan: ColumnScan, non_null_rows: int) -> int | None:
    """Distinct values in the whole column, from the sample: Haas and Stokes' Duj1, as PostgreSQL's ANALYZE does.

    ``n·d / (n - f1 + f1·n/N)`` with n sampled values, d distinct among them, f1 seen once, N non-null rows.
    """
    n, d, f1 = scan.values, scan.distinct, scan.singletons
    if n == 0 or non_null_rows <= 0:
        return 0 if non_null_rows == 0 else None
    if n >= non_null_rows:
        return d
    estimate = n * d / (n - f1 + f1 * n / non_null_rows)
    return round(min(max(estimate, d), non_null_rows))
