"""Scoring: which ``pii-*`` tags to propose for a column, how sure we are, and the evidence a person reviews.

A score is between 0 and 1; a kind is proposed from ``PROPOSE_AT`` (0.5). Nothing is ever applied: proposals are
printed, and written to a policy file only on request, for a person to review.

* **Pattern kinds** (email, phone, IBAN, card, IP, national id): the share of sampled values that *are* a
  validated instance. Free text counts too: from two sampled values holding a validated email, IBAN, card or
  international phone, the score is ``0.6 + 0.4 * share``. A column name suggesting the kind adds 0.1 to value
  evidence (never on its own).
* **Phones need their name when the values cannot tell**: national numbers written as bare digits
  (``0612345678``) look exactly like zero-padded ids, so when most phone matches are bare and the name does not
  suggest a phone, the score is halved; numbers with a country code but no ``+`` (``31612345678``, an MSISDN) are
  phones only when the name suggests one (``0.5 + 0.3 * share`` when 80% of values are such digit runs).
* **Date of birth**: a name suggesting it (``dob``, ``birth_date``, ``geboortedatum``…) and values that are dates
  between 1900 and today; 0.9.
* **Person names**: a name suggesting it (``first_name``, ``achternaam``…) and at least 70% of values shaped like
  names; ``0.5 + 0.4 * share``.
* **Cardinality**: a column with only one to three distinct values over 50 rows or more is more likely a shared
  mailbox or a default than personal data: its score is multiplied by 0.4, 0.6 or 0.8.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from provisioner.profile import hints
from provisioner.profile import patterns as p
from provisioner.profile.scan import ColumnScan

PROPOSE_AT = 0.5
TEXT_HITS = 2  # validated matches inside free text needed before they count
NAME_BONUS = 0.1
BARE_PHONE_FACTOR = 0.45
OLDEST_BIRTH_YEAR = 1900
ALL_KINDS: tuple[str, ...] = (*p.PATTERN_KINDS, p.DOB, p.NAME)


@dataclass(frozen=True)
class Proposal:
    """The proposed tags of one column, its score and the evidence behind them."""

    tags: tuple[str, ...] = ()
    score: float = 0.0
    kinds: dict[str, float] = field(default_factory=dict)  # every kind with some evidence → its score
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def proposed_kinds(self) -> tuple[str, ...]:
        """The kinds behind ``tags`` (``pii-email`` → ``email``)."""
        return tuple(t.removeprefix("pii-") for t in self.tags)


def tag(kind: str) -> str:
    """The tag proposed for a kind: ``pii-<kind>``."""
    return f"pii-{kind}"


def propose(
    column: str,
    scan: ColumnScan | None,
    *,
    rows: int,
    distinct_estimate: int | None,
    minimum: Any = None,
    maximum: Any = None,
    kinds: tuple[str, ...] = ALL_KINDS,
    today: date | None = None,
) -> Proposal:
    """Score ``column`` for each of ``kinds`` from its sampled values, its name, its range and its cardinality."""
    suggested = hints.name_suggests(column)
    scores: dict[str, float] = {}
    shares: dict[str, float] = {}
    examined = scan.examined if scan else 0
    if scan and examined:
        for kind in (k for k in kinds if k in p.PATTERN_KINDS):
            full, inside = scan.full[kind], scan.in_text[kind]
            share = full / examined
            score = share
            if inside + full >= TEXT_HITS and inside:
                text_share = (inside + full) / examined
                score = max(score, 0.6 + 0.4 * text_share)
                share = max(share, text_share)
            if kind == p.PHONE and suggested != p.PHONE and full and scan.bare_phones > full / 2:
                score *= BARE_PHONE_FACTOR
            if kind == p.PHONE and suggested == p.PHONE and scan.digit_runs / examined >= 0.8:
                runs = (scan.digit_runs + full) / examined
                score, share = max(score, 0.5 + 0.3 * min(runs, 1.0)), max(share, runs)
            if score > 0:
                if suggested == kind:
                    score += NAME_BONUS
                scores[kind], shares[kind] = min(score, 1.0), share
        if p.NAME in kinds and suggested == p.NAME and scan.person_names:
            share = scan.person_names / examined
            if share >= 0.7:
                scores[p.NAME], shares[p.NAME] = 0.5 + 0.4 * share, share
    if p.DOB in kinds and suggested == p.DOB:
        plausible = _plausible_birth_dates(scan, minimum, maximum, today or date.today())
        if plausible is not None:
            scores[p.DOB], shares[p.DOB] = (0.9, plausible) if plausible >= 0.8 else (0.3, plausible)
    damping = _cardinality_damping(rows, distinct_estimate)
    scores = {k: round(v * damping, 3) for k, v in scores.items()}
    ranked = sorted(scores, key=lambda k: (-scores[k], ALL_KINDS.index(k)))
    proposed = tuple(tag(k) for k in ranked if scores[k] >= PROPOSE_AT)
    best = ranked[0] if ranked else None
    evidence: dict[str, Any] = {"column_name": suggested}
    if scan:
        evidence["sampled"] = examined
        if scan.full:
            evidence["matches"] = {k: scan.full[k] for k in p.PATTERN_KINDS if scan.full[k]}
        if scan.in_text:
            evidence["in_text"] = {k: scan.in_text[k] for k in p.TEXT_KINDS if scan.in_text[k]}
        if scan.tokens:
            evidence["tokens"] = scan.tokens
    if best is not None:
        evidence["share"] = round(shares[best], 3)
        if scan and scan.examples.get(best):
            evidence["examples"] = list(scan.examples[best])
    if distinct_estimate is not None:
        evidence["cardinality"] = {
            "distinct_estimate": distinct_estimate,
            "ratio": round(distinct_estimate / rows, 4) if rows else 0.0,
        }
    return Proposal(
        tags=proposed,
        score=scores[best] if best is not None else 0.0,
        kinds=dict(sorted(scores.items(), key=lambda kv: -kv[1])),
        evidence=evidence,
    )


def _cardinality_damping(rows: int, distinct: int | None) -> float:
    if distinct is None or rows < 50 or distinct >= 4:
        return 1.0
    return 0.2 + 0.2 * max(distinct, 1)


def _plausible_birth_dates(scan: ColumnScan | None, minimum: Any, maximum: Any, today: date) -> float | None:
    """The share of values that are dates between 1900 and today; None when the column holds no dates."""
    low, high = _as_date(minimum), _as_date(maximum)
    if low is not None and high is not None:
        return 1.0 if low.year >= OLDEST_BIRTH_YEAR and high <= today else 0.0
    if scan is None or not scan.examined or not scan.dates:
        return None
    plausible = 0
    for year, month, day in scan.dates:
        try:
            when = date(year, month, day)
        except ValueError:
            continue
        if when.year >= OLDEST_BIRTH_YEAR and when <= today:
            plausible += 1
    return plausible / scan.examined


def _as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return None
