"""One guarded UPDATE per table on a real Delta table (delta-rs, no JVM): one commit, all or nothing, rerun = 0 rows.

The WHERE clause and the CASE guards are the Databricks executor's own text (``needs_token``), which delta-rs'
SQL (DataFusion) reads too. DataFusion has no ``hmac``/``sha2``, so the new values come from the Python reference
as a lookup; the golden tests show that Spark computes the very same values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.tokenize import TokenFormat, Tokenizer
from provisioner.tokenize import databricks_statements as dsql

pytestmark = [pytest.mark.databricks, pytest.mark.spark]

deltalake = pytest.importorskip("deltalake")
arro3 = pytest.importorskip("arro3.core")

KEY = "delta-test-key"
FMT = TokenFormat()
REFERENCE = Tokenizer(FMT, KEY)
COLUMNS = ["email", "phone"]
FILES = [  # three appends: three data files, version 2
    [(1, "alice@example.com", "+32 470 11 22 33"), (2, "bob@example.org", None)],
    [(3, None, ""), (4, "", "0032 2 555 01 01"), (5, "Zoë Ångström ✓ 😀", REFERENCE.token("☎"))],
    [(6, REFERENCE.token("x@y.z"), "☎ 555-0100"), (7, "carol@example.net", "tok_not-a-token_poc")],
]


def write_table(path: Path) -> Any:
    from arro3.core import Array, DataType, Table

    for rows in FILES:
        ids, emails, phones = zip(*rows, strict=True)
        batch = Table.from_pydict(
            {
                "id": Array(list(ids), DataType.int64()),
                "email": Array(list(emails), DataType.utf8()),
                "phone": Array(list(phones), DataType.utf8()),
            }
        )
        deltalake.write_deltalake(str(path), batch, mode="append")
    return deltalake.DeltaTable(str(path))


def rows(table: Any) -> list[tuple[Any, ...]]:
    result = deltalake.QueryBuilder().register("t", table).execute("SELECT id, email, phone FROM t ORDER BY id")
    data = result.read_all()
    return list(zip(*(data.column(k).to_pylist() for k in ("id", "email", "phone")), strict=True))


def count_needing(table: Any) -> int:
    where = " OR ".join(dsql.needs_token(c, FMT) for c in COLUMNS)
    result = deltalake.QueryBuilder().register("t", table).execute(f"SELECT count(*) AS n FROM t WHERE {where}")
    return int(result.read_all().column("n").to_pylist()[0])


def lookup(column: str, values: list[str | None], fail_on: str | None = None) -> str:
    """The token of each value of the column (what hmac() computes on Databricks), as a CASE."""
    whens = [f"WHEN '{v}' THEN '{REFERENCE.token(v)}'" for v in sorted({v for v in values if v}) if "'" not in v]
    if fail_on is not None:  # a value whose "token" cannot be computed: the statement fails on that row
        whens.insert(0, f"WHEN '{fail_on}' THEN CAST(CAST({dsql.quote(column)} AS INT) AS VARCHAR)")
    return f"CASE {dsql.quote(column)} {' '.join(whens)} END"


def guarded_update(table: Any, fail_on: str | None = None) -> dict[str, Any]:
    """The executor's UPDATE: SET col = CASE WHEN needs_token THEN token ELSE col END WHERE any needs_token."""
    current = rows(table)
    values = {c: [r[i + 1] for r in current] for i, c in enumerate(COLUMNS)}
    updates = {
        c: f"CASE WHEN {dsql.needs_token(c, FMT)} THEN {lookup(c, values[c], fail_on if c == 'email' else None)}"
        f" ELSE {dsql.quote(c)} END"
        for c in COLUMNS
    }
    predicate = " OR ".join(dsql.needs_token(c, FMT) for c in COLUMNS)
    return dict(table.update(updates=updates, predicate=predicate))


def test_one_update_is_one_commit_and_a_rerun_updates_nothing(tmp_path: Path) -> None:
    table = write_table(tmp_path / "customers")
    assert table.version() == 2
    needing = count_needing(table)
    expected = [(i, REFERENCE.tokenize(e), REFERENCE.tokenize(p)) for rows_ in FILES for i, e, p in rows_]
    assert needing == sum(1 for old, new in zip(rows(table), expected, strict=True) if old != new) == 6

    metrics = guarded_update(table)
    assert metrics["num_updated_rows"] == needing
    assert table.version() == 3  # every file rewritten by one commit
    assert rows(table) == expected
    assert count_needing(table) == 0

    again = guarded_update(table)
    assert again["num_updated_rows"] == 0
    assert table.version() == 3 and rows(table) == expected  # nothing committed


def test_an_update_that_fails_leaves_the_table_version_and_rows_unchanged(tmp_path: Path) -> None:
    table = write_table(tmp_path / "customers")
    before = rows(table)
    with pytest.raises(Exception, match=r"(?i)cast"):
        guarded_update(table, fail_on="carol@example.net")  # a row of the last file
    reloaded = deltalake.DeltaTable(str(tmp_path / "customers"))
    assert reloaded.version() == 2
    assert rows(reloaded) == before
    assert count_needing(reloaded) == 6  # and the rerun that follows still sees everything to do
