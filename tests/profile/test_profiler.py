"""Profiling in the database, as the tenant's role: statistics, sample, proposals, checks, records and events."""

from __future__ import annotations

import json
import logging
from datetime import date

import psycopg
import pytest

from provisioner.profile import ProfileOptions, TableName, profile
from provisioner.profile.model import ColumnProfile, TableProfile
from provisioner.tokenize import RunRecorder, TokenFormat, Tokenizer
from tests.profile.conftest import PEOPLE, create_table, people, tenant_role


def column(table: TableProfile, name: str) -> ColumnProfile:
    return next(c for c in table.columns if c.name == name)


def checks_of(table: TableProfile, name: str) -> dict[str, dict]:
    return {c["check"]["function"]: c for c in table.checks if c["check"]["arguments"]["column"] == name}


def test_statistics_proposals_and_checks(pg_empty_url: str) -> None:
    create_table(pg_empty_url, "people", PEOPLE, people(3000))
    result = profile("sales", [TableName.parse("public.people")], connect=pg_empty_url)
    assert result.ok, result.error
    (table,) = result.tables
    assert table.rows == 3000 and table.statistics == "analyzed"
    assert table.sample_method.startswith("BERNOULLI") and 0 < table.sampled_rows <= 2000

    email = column(table, "email")
    assert email.nulls == 300 and email.empties == 0
    assert email.distinct_source == "pg_stats" and email.distinct_estimate == 2700
    assert email.length == {"min": 19, "max": 22, "avg": pytest.approx(21.6, abs=0.2)}
    assert email.proposal.tags == ("pii-email",) and email.proposal.score == 1.0
    evidence = email.proposal.evidence
    assert evidence["column_name"] == "email" and evidence["matches"]["email"] == evidence["sampled"]
    assert all(e.startswith("p***@e***.com") for e in evidence["examples"])

    notes = column(table, "notes")
    assert notes.proposal.tags == ("pii-email",), "free text holding addresses"
    assert 0.6 < notes.proposal.score < 0.7 and "in_text" in notes.proposal.evidence

    tier = column(table, "tier")
    assert not tier.proposal.tags and tier.distinct_estimate == 3
    age = column(table, "age")
    assert (age.minimum, age.maximum) == (18, 77)

    # DQX checks: email has 10% nulls (no not-null check); tier is a verified list; age a range.
    assert checks_of(table, "email") == {}
    assert checks_of(table, "tier") == {
        "is_not_null_and_not_empty": {
            "check": {"function": "is_not_null_and_not_empty", "arguments": {"column": "tier", "trim_strings": True}},
            "name": "tier_is_null_or_empty",
            "criticality": "error",
        },
        "is_in_list": {
            "check": {
                "function": "is_in_list",
                "arguments": {"column": "tier", "allowed": ["'bronze'", "'gold'", "'silver'"]},
            },
            "name": "tier_other_value",
            "criticality": "error",
        },
    }
    assert checks_of(table, "age")["is_in_range"]["check"]["arguments"] == {
        "column": "age",
        "min_limit": 18,
        "max_limit": 77,
    }
    assert set(checks_of(table, "id")) == {"is_not_null", "is_in_range"}
    assert "is_in_list" not in checks_of(table, "notes"), "no list of a PII column's values"


def test_a_list_check_only_when_every_row_is_in_it(pg_empty_url: str) -> None:
    rows = [(i, "a" if i % 2 else "b", "x" if i % 2 else "y") for i in range(5000)]
    rows[4321] = (4321, "zzz", "x")  # one rare value: neither the statistics nor the sample may see it
    create_table(pg_empty_url, "t", "id int, rare text, clean text", rows)
    options = ProfileOptions(sample_rows=200)
    (table,) = profile("t", [TableName.parse("t")], connect=pg_empty_url, options=options).tables
    assert "is_in_list" not in checks_of(table, "rare")
    assert checks_of(table, "clean")["is_in_list"]["check"]["arguments"]["allowed"] == ["'x'", "'y'"]


def test_runs_as_the_tenant_role_with_its_privileges_only(pg_empty_url: str) -> None:
    create_table(pg_empty_url, "people", PEOPLE, people(500))
    tenant = tenant_role(pg_empty_url, ["SELECT (id, email, tier, age) ON people"])
    result = profile("sales", [TableName.parse("public.people")], connect=tenant)
    assert result.ok, result.error
    (table,) = result.tables
    # A role that does not own the table cannot ANALYZE it: PostgreSQL warns, the profile says so.
    assert table.statistics.startswith("stale: the tenant role may not ANALYZE")
    assert column(table, "notes").skipped == "the tenant role may not SELECT it"
    email = column(table, "email")
    assert email.proposal.tags == ("pii-email",)
    assert email.distinct_source == "sample" and email.distinct_estimate == 450  # all 450 rows are in the sample

    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("REVOKE SELECT ON people FROM " + psycopg.conninfo.conninfo_to_dict(tenant)["user"])
    refused = profile("sales", [TableName.parse("public.people")], connect=tenant)
    assert refused.status == "FAILURE" and "may not SELECT any column of public.people" in (refused.error or "")


class CountingCursor(psycopg.Cursor):
    fetched = 0

    def fetchone(self):  # type: ignore[no-untyped-def]
        row = super().fetchone()
        CountingCursor.fetched += row is not None
        return row

    def fetchall(self):  # type: ignore[no-untyped-def]
        rows = super().fetchall()
        CountingCursor.fetched += len(rows)
        return rows


def test_the_table_never_comes_into_python(pg_empty_url: str) -> None:
    create_table(pg_empty_url, "big", PEOPLE, people(50_000))
    CountingCursor.fetched = 0

    def connect(_tenant: str) -> psycopg.Connection:
        return psycopg.connect(pg_empty_url, cursor_factory=CountingCursor)

    result = profile("t", [TableName.parse("big")], connect=connect, options=ProfileOptions(sample_rows=300))
    assert result.ok and result.tables[0].rows == 50_000
    assert result.tables[0].sample_method.startswith("BERNOULLI")
    # The sample and a handful of catalog rows: nothing near the table's 50,000 rows.
    assert CountingCursor.fetched <= 300 + 20


def test_records_and_logs_hold_counts_never_values(
    pg_url: str, pg_empty_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    create_table(pg_empty_url, "people", PEOPLE, people(400))
    recorder = RunRecorder(pg_url)
    with caplog.at_level(logging.INFO, logger="provisioner.profile"):
        result = profile("sales", [TableName.parse("people")], connect=pg_empty_url, recorder=recorder)
    record = recorder.get(result.run_id)
    assert record is not None and record.kind == "profile" and record.result == "SUCCESS"
    assert record.tables == ["public.people"] and record.total_rows == 400
    assert record.detail["tables"]["public.people"]["proposed"] == {"email": ["pii-email"], "notes": ["pii-email"]}
    events = [r for r in caplog.records if getattr(r, "event", "").startswith("profile.")] or [
        r for r in caplog.records if r.getMessage().startswith("profile.")
    ]
    names = [getattr(r, "event", r.getMessage()) for r in events]
    assert names == ["profile.started", "profile.success"]
    text = json.dumps([vars(r) for r in caplog.records], default=str) + json.dumps(record.detail)
    assert "@example.com" not in text and "@mail.nl" not in text and "gold" not in text


def test_a_missing_table_is_a_failure_that_names_it(pg_url: str, pg_empty_url: str) -> None:
    recorder = RunRecorder(pg_url)
    result = profile("sales", [TableName.parse("public.ghost")], connect=pg_empty_url, recorder=recorder)
    assert result.status == "FAILURE" and not result.retryable
    assert result.error == "table public.ghost does not exist (or the tenant role cannot see it)"
    record = recorder.get(result.run_id)
    assert record is not None and record.result == "FAILURE" and record.error == result.error


def test_tokens_never_count_as_pii(pg_empty_url: str) -> None:
    tokens = Tokenizer(TokenFormat(), "k")
    create_table(
        pg_empty_url,
        "done",
        "id int, email text",
        [(i, tokens.token(f"person{i}@example.com")) for i in range(300)],
    )
    (table,) = profile("t", [TableName.parse("done")], connect=pg_empty_url).tables
    email = column(table, "email")
    assert email.proposal.tags == () and email.proposal.evidence["tokens"] == 300


def test_dates_of_birth_by_name_and_range(pg_empty_url: str) -> None:
    create_table(
        pg_empty_url,
        "births",
        "id int, birth_date date, due_date date, born date",
        [(i, date(1950 + i % 60, 1 + i % 12, 1 + i % 28), date(2030, 1, 1), date(2150, 1, 1)) for i in range(200)],
    )
    (table,) = profile("t", [TableName.parse("births")], connect=pg_empty_url).tables
    assert column(table, "birth_date").proposal.tags == ("pii-dob",)
    assert not column(table, "due_date").proposal.tags, "a date is no birth date without the name"
    assert not column(table, "born").proposal.tags, "dates after today are no birth dates"
    as_json = column(table, "birth_date").to_json()
    assert as_json["min"] is None and as_json["max"] is None, "no value of a PII column"
    assert "is_in_range" not in checks_of(table, "birth_date")


def test_exact_distinct_on_request_and_views(pg_empty_url: str) -> None:
    create_table(pg_empty_url, "people", PEOPLE, people(1000))
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("CREATE VIEW adults AS SELECT id, email FROM people WHERE age >= 21")
    result = profile(
        "t",
        [TableName.parse("people"), TableName.parse("adults")],
        connect=pg_empty_url,
        options=ProfileOptions(exact_distinct=True),
    )
    people_table, view = result.tables
    assert column(people_table, "tier").distinct_source == "exact"
    assert column(people_table, "email").distinct_estimate == 900
    assert view.statistics == "none" and view.sample_method == "first rows"
    assert column(view, "email").proposal.tags == ("pii-email",)


@pytest.mark.parametrize("text", ["a.b.c", "1table", "public.", "pub lic.t"])
def test_bad_table_names_are_refused(text: str) -> None:
    from provisioner.profile import ProfileInputError

    with pytest.raises(ProfileInputError, match="is invalid"):
        TableName.parse(text)


def test_empty_tables_odd_types_and_partitions(pg_empty_url: str) -> None:
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE empty (id int, t text)")
        conn.execute("CREATE TABLE odd (n numeric, f float8, d date, ok boolean, a int[], j jsonb)")
        conn.execute(
            "INSERT INTO odd SELECT CASE WHEN g = 1 THEN 'NaN'::numeric ELSE g END, 'Infinity', 'infinity',"
            " g % 2 = 0, CASE WHEN g % 2 = 0 THEN ARRAY[1, 2] ELSE ARRAY[3] END,"
            " jsonb_build_object('email', 'x' || g || '@example.com') FROM generate_series(1, 300) g"
        )
        conn.execute("CREATE TABLE parts (id int, email text) PARTITION BY RANGE (id)")
        conn.execute("CREATE TABLE parts_a PARTITION OF parts FOR VALUES FROM (0) TO (5000)")
        conn.execute("CREATE TABLE parts_b PARTITION OF parts FOR VALUES FROM (5000) TO (100000)")
        conn.execute("INSERT INTO parts SELECT g, 'p' || g || '@example.com' FROM generate_series(1, 20000) g")
    result = profile("t", [TableName.parse(t) for t in ("empty", "odd", "parts")], connect=pg_empty_url)
    assert result.ok, result.error
    empty, odd, parts = result.tables
    assert (
        empty.rows == 0 and empty.checks == () and column(empty, "t").length == {"min": None, "max": None, "avg": None}
    )
    assert column(odd, "j").proposal.tags == ("pii-email",), "addresses inside JSON"
    assert column(odd, "d").maximum is None, "an infinite date is no limit"
    assert "is_in_range" not in checks_of(odd, "n") and "is_in_range" not in checks_of(odd, "f")
    json.dumps(result.to_json(), allow_nan=False)  # NaN and infinity are written as strings
    assert parts.rows == 20000 and parts.sample_method.startswith("BERNOULLI")
    assert column(parts, "email").proposal.tags == ("pii-email",)
