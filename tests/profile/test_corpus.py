"""Column-level precision and recall of the PII proposals on the generated, labelled corpus (``corpus.py``).

Target (issue 19): precision ≥ 0.95 and recall ≥ 0.9 over the pattern kinds (email, phone, IBAN, card, IP);
names, national ids and dates of birth are measured and reported separately.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from provisioner.profile import ProfileOptions, ProfileResult, TableName, profile
from tests.profile import corpus


@dataclass(frozen=True)
class Score:
    precision: float
    recall: float
    true_positives: int
    predicted: int
    labelled: int


def measure(
    labels: dict[tuple[str, str], str | None], predicted: set[tuple[str, str, str]], kinds: tuple[str, ...]
) -> Score:
    """Column-level: a (column, kind) pair is right when the column's label is that kind."""
    wanted = {(t, c, k) for (t, c), k in labels.items() if k in kinds}
    guessed = {p for p in predicted if p[2] in kinds}
    hits = wanted & guessed
    return Score(
        precision=len(hits) / len(guessed) if guessed else 1.0,
        recall=len(hits) / len(wanted) if wanted else 1.0,
        true_positives=len(hits),
        predicted=len(guessed),
        labelled=len(wanted),
    )


def predictions(result: ProfileResult) -> set[tuple[str, str, str]]:
    return {
        (t.table.split(".", 1)[1], c.name, kind)
        for t in result.tables
        for c in t.columns
        for kind in c.proposal.proposed_kinds
    }


def test_pattern_kinds_meet_the_target(pg_empty_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    labels = corpus.build(pg_empty_url, seed=19)
    tables = [TableName.parse(f"corpus.{t}") for t in corpus.TABLES]
    # 1,200 rows per table and a 500-row sample: every table is sampled with TABLESAMPLE BERNOULLI.
    result = profile("corpus", tables, connect=pg_empty_url, options=ProfileOptions(sample_rows=500))
    assert result.ok, result.error
    assert {t.sample_method.split()[0] for t in result.tables} == {"BERNOULLI"}
    predicted = predictions(result)
    score = measure(labels, predicted, corpus.PATTERN_KINDS)
    with capsys.disabled():
        print(f"\npattern kinds {corpus.PATTERN_KINDS}: {score}")
        for kind in (*corpus.PATTERN_KINDS, "name", "national-id", "dob"):
            print(f"  {kind}: {measure(labels, predicted, (kind,))}")
        wrong = sorted(p for p in predicted if labels.get(p[:2]) != p[2])
        missed = sorted((t, c, k) for (t, c), k in labels.items() if k and (t, c, k) not in predicted)
        print(f"  false positives: {wrong}\n  missed: {missed}")
    assert score.labelled >= 15, "the corpus must have enough pattern columns to measure"
    assert score.precision >= 0.95, score
    assert score.recall >= 0.9, score
