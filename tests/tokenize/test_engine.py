"""The PostgreSQL executor against a real server: bit-exact tokens, idempotence, rollback, limits, dry runs."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from provisioner.tokenize import (
    RunRecorder,
    TableProgress,
    TokenFormat,
    TokenizeOptions,
    TokenizePolicy,
    Tokenizer,
    detokenize,
    plan,
    run,
)
from provisioner.tokenize.engine import _preflight, _table
from provisioner.tokenize.errors import RowCountMismatch
from provisioner.tokenize.statements import create_key_table, needs_token, update_statement
from tests.tokenize.conftest import KEY, add_trigger, column, create_people, snapshot

PEOPLE = {"tenant": "t1", "schema": "public", "table": "people", "columns": ["email", "phone"]}
SAMPLE = [
    ("alice@example.com", "+32 470 11 22 33"),
    ("bob@example.org", None),
    (None, ""),
    ("", "0032 2 555 01 01"),
    ("Zoë Ångström ✓ 😀", "☎ 555-0100"),
]
pg_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=60)
db_settings = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def test_tokens_match_the_python_reference_and_a_rerun_changes_nothing(
    pg_empty_url: str, options: TokenizeOptions
) -> None:
    create_people(pg_empty_url, SAMPLE)
    p = plan(PEOPLE, options)
    first = run(p, connect=pg_empty_url)
    assert first.status == "SUCCESS", first.error
    assert first.total_rows == 4  # row 3 holds only NULL and ''
    assert first.rows_by_column == {"public.people.email": 3, "public.people.phone": 3}
    reference = Tokenizer(TokenFormat(), KEY)
    assert column(pg_empty_url, "email") == [reference.tokenize(e) for e, _ in SAMPLE]
    assert column(pg_empty_url, "phone") == [reference.tokenize(ph) for _, ph in SAMPLE]
    assert column(pg_empty_url, "email")[2] is None and column(pg_empty_url, "phone")[2] == ""

    before = snapshot(pg_empty_url)
    second = run(p, connect=pg_empty_url)
    assert second.ok and second.total_rows == 0
    assert second.rows_by_column == {"public.people.email": 0, "public.people.phone": 0}
    assert snapshot(pg_empty_url) == before


@db_settings
@given(values=st.lists(pg_text, min_size=1, max_size=30))
def test_sql_tokens_equal_python_tokens_for_any_unicode(pg_empty_url: str, values: list[str]) -> None:
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS people")
    create_people(pg_empty_url, [(v, None) for v in values])
    result = run(plan({**PEOPLE, "columns": ["email"]}, TokenizeOptions(key=KEY)), connect=pg_empty_url)
    assert result.ok, result.error
    reference = Tokenizer(TokenFormat(), KEY)
    assert column(pg_empty_url, "email") == [reference.tokenize(v) for v in values]


@pytest.mark.parametrize("length", [22, 23, 24, 31, 42, 43])
def test_every_token_length_matches_the_python_reference(pg_empty_url: str, length: int) -> None:
    # The SQL encodes only the digest bytes the token shows; each length ends at a different bit.
    create_people(pg_empty_url, SAMPLE)
    fmt = TokenFormat(length=length)
    assert run(plan(PEOPLE, TokenizeOptions(format=fmt, key=KEY)), connect=pg_empty_url).ok
    reference = Tokenizer(fmt, KEY)
    assert column(pg_empty_url, "email") == [reference.tokenize(e) for e, _ in SAMPLE]


def test_tokens_do_not_depend_on_the_client_encoding(pg_empty_url: str, options: TokenizeOptions) -> None:
    # The SQL hashes textsend() bytes, which follow client_encoding: the engine must set UTF8 itself.
    create_people(pg_empty_url, [("Zoë Ångström", "café")])
    result = run(plan(PEOPLE, options), connect=lambda _t: psycopg.connect(pg_empty_url, client_encoding="LATIN1"))
    assert result.ok, result.error
    reference = Tokenizer(TokenFormat(), KEY)
    assert column(pg_empty_url, "email") == [reference.token("Zoë Ångström")]
    assert column(pg_empty_url, "phone") == [reference.token("café")]


# Near-tokens: the right length, bodies mostly of the token alphabet with now and then a character outside it.
near_body = st.text(alphabet=st.sampled_from("aZ09_-+/=é.:"), min_size=21, max_size=23)
near_tokens = st.one_of(near_body.map(lambda s: f"tok_{s}_poc"), near_body.map(lambda s: f"pii:{s}"))


@db_settings
@given(values=st.lists(st.one_of(pg_text, pg_text.map(lambda s: f"tok_{s}_poc"), near_tokens), min_size=1, max_size=40))
def test_sql_guard_agrees_with_the_python_guard(pg_empty_url: str, values: list[str]) -> None:
    # "pii:" is outside the body's alphabet: the SQL then checks only the body's characters.
    for fmt in (TokenFormat(), TokenFormat(prefix="pii:", suffix=""), TokenFormat(mode="base64")):
        tk = Tokenizer(fmt, KEY)
        sample = [*values, *(tk.token(v) for v in values)]
        query = psycopg.sql.SQL("SELECT {} FROM guard_sample AS t ORDER BY i").format(needs_token("v", fmt))
        with psycopg.connect(pg_empty_url) as conn:
            conn.execute("CREATE TEMPORARY TABLE guard_sample (i int, v text)")
            with conn.cursor() as cur, cur.copy("COPY guard_sample (i, v) FROM STDIN") as copy:
                for i, v in enumerate(sample):
                    copy.write_row((i, v))
            needs = [r[0] for r in conn.execute(query)]
        assert needs == [v != "" and not tk.is_token(v) for v in sample]


def test_mixed_table_changes_only_values_that_are_not_tokens(pg_empty_url: str, options: TokenizeOptions) -> None:
    reference = Tokenizer(TokenFormat(), KEY)
    already = reference.token("carol@example.com")
    rows = [(already, reference.token("1")), ("dave@example.com", reference.token("2")), (already, "3")]
    create_people(pg_empty_url, rows)
    result = run(plan(PEOPLE, options), connect=pg_empty_url)
    assert result.ok
    assert result.total_rows == 2
    assert result.rows_by_column == {"public.people.email": 1, "public.people.phone": 1}
    assert column(pg_empty_url, "email") == [already, reference.token("dave@example.com"), already]


@pytest.mark.parametrize("pads", [0, 2], ids=["no key row", "two key rows"])
def test_update_without_exactly_one_key_writes_nothing(pg_empty_url: str, pads: int) -> None:
    # The pads are scalar subqueries: without the guard, an empty key table would write NULL tokens.
    create_people(pg_empty_url, SAMPLE)
    before = snapshot(pg_empty_url)
    pad = Tokenizer(TokenFormat(), KEY).pads
    with psycopg.connect(pg_empty_url) as conn:
        conn.execute(create_key_table())
        with conn.cursor() as cur, cur.copy("COPY pg_temp.provisioner_tokenize_key FROM STDIN") as copy:
            for _ in range(pads):
                copy.write_row((pad.ipad, pad.opad))
        cur = conn.execute(update_statement("public", "people", ["email", "phone"], TokenFormat()))
        assert cur.rowcount == 0
    assert snapshot(pg_empty_url) == before


def test_base64_mode_round_trips_through_postgres(pg_empty_url: str) -> None:
    create_people(pg_empty_url, [*SAMPLE, ("x" * 200, "long values wrap at 76 in encode()")])
    result = run(plan(PEOPLE, TokenizeOptions(format=TokenFormat(mode="base64"))), connect=pg_empty_url)
    assert result.ok, result.error
    emails = column(pg_empty_url, "email")
    assert [detokenize(e) if e else e for e in emails] == [e for e, _ in SAMPLE] + ["x" * 200]
    assert run(plan(PEOPLE, TokenizeOptions(format=TokenFormat(mode="base64"))), connect=pg_empty_url).total_rows == 0


def test_error_mid_table_leaves_it_byte_identical(pg_empty_url: str, options: TokenizeOptions) -> None:
    create_people(pg_empty_url, [(f"user{i}@example.com", f"+32 {i}") for i in range(500)])
    add_trigger(
        pg_empty_url, "IF NEW.id = 250 THEN RAISE EXCEPTION 'injected failure at row %', NEW.id; END IF; RETURN NEW;"
    )
    before = snapshot(pg_empty_url)
    recorder = RunRecorder(pg_empty_url)
    result = run(plan(PEOPLE, options), connect=pg_empty_url, recorder=recorder)
    assert result.status == "FAILURE"
    assert "injected failure at row 250" in (result.error or "")
    assert "public.people" in (result.error or "")
    assert result.total_rows == 0 and result.rows_by_column == {}
    assert snapshot(pg_empty_url) == before
    record = recorder.get(result.run_id)
    assert record is not None and (record.state, record.result) == ("COMPLETE", "FAILURE")
    assert record.error == result.error


def test_max_columns_fails_before_any_write(pg_empty_url: str, options: TokenizeOptions) -> None:
    create_people(pg_empty_url, SAMPLE)
    create_people(pg_empty_url, SAMPLE, table="other")
    before = snapshot(pg_empty_url), snapshot(pg_empty_url, "other")
    policy = {
        "tenant": "t1",
        "max_columns": 3,
        "tables": [
            {"table": "people", "columns": ["email", "phone"]},
            {"table": "other", "columns": ["email", "phone"]},
        ],
    }
    result = run(plan(policy, options), connect=pg_empty_url)
    assert result.status == "FAILURE"
    assert "4 PII columns, more than max_columns=3" in (result.error or "")
    assert (snapshot(pg_empty_url), snapshot(pg_empty_url, "other")) == before
    # The global limit applies too, whichever is lower.
    small = TokenizeOptions(key=KEY, max_columns=1)
    assert "max_columns=1" in (run(plan(PEOPLE, small), connect=pg_empty_url).error or "")


def test_unknown_targets_fail_before_any_write_naming_them(pg_empty_url: str, options: TokenizeOptions) -> None:
    create_people(pg_empty_url, SAMPLE)
    before = snapshot(pg_empty_url)
    cases = {
        "column 'mail' does not exist in table public.people": ["email", "mail"],
        "column public.people.age is of type integer": ["email", "age"],
    }
    for message, columns in cases.items():
        result = run(plan({**PEOPLE, "columns": columns}, options), connect=pg_empty_url)
        assert result.status == "FAILURE" and message in (result.error or "")
    two = {"tenant": "t1", "tables": [{"table": "people", "columns": ["email"]}, {"table": "ghost", "columns": ["a"]}]}
    result = run(plan(two, options), connect=pg_empty_url)
    assert result.error == "table public.ghost does not exist (or the tenant role cannot see it)"
    assert snapshot(pg_empty_url) == before  # people was checked and not written: ghost failed the preflight


def test_varchar_too_short_for_tokens_is_refused(pg_empty_url: str, options: TokenizeOptions) -> None:
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE short (id int PRIMARY KEY, code varchar(10))")
    result = run(plan({"tenant": "t1", "table": "short", "columns": ["code"]}, options), connect=pg_empty_url)
    assert "public.short.code is character varying(10), too short for 30-character tokens" in (result.error or "")


def test_dry_run_counts_and_writes_nothing(pg_empty_url: str, options: TokenizeOptions) -> None:
    reference = Tokenizer(TokenFormat(), KEY)
    create_people(pg_empty_url, [*SAMPLE, (reference.token("t"), "x")])
    before = snapshot(pg_empty_url)
    dry = run(plan(PEOPLE, options), dry_run=True, connect=pg_empty_url)
    assert dry.ok and dry.dry_run
    assert dry.total_rows == 5
    assert dry.rows_by_column == {"public.people.email": 3, "public.people.phone": 4}
    assert snapshot(pg_empty_url) == before
    real = run(plan(PEOPLE, options), connect=pg_empty_url)
    assert (real.total_rows, real.rows_by_column) == (dry.total_rows, dry.rows_by_column)


def test_one_update_that_misses_rows_fails_the_table(pg_empty_url: str, options: TokenizeOptions) -> None:
    # A trigger that silently skips a row would leave its value untokenized, and a grant would follow.
    create_people(pg_empty_url, SAMPLE)
    add_trigger(pg_empty_url, "IF NEW.id = 2 THEN RETURN NULL; END IF; RETURN NEW;")  # skips Bob
    before = snapshot(pg_empty_url)
    result = run(plan(PEOPLE, options), connect=pg_empty_url)
    assert result.status == "FAILURE" and result.tables == ()
    assert result.error == (
        "table public.people: 4 rows needed tokens but 3 were rewritten (a trigger or a row-level security policy"
        " kept some from being updated); the transaction was rolled back, nothing in it was changed"
    )
    assert snapshot(pg_empty_url) == before


def test_one_update_without_the_key_fails_instead_of_changing_nothing(
    pg_empty_url: str, options: TokenizeOptions
) -> None:
    create_people(pg_empty_url, SAMPLE)
    p = plan(PEOPLE, options)
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute(create_key_table())  # and no pads in it: the UPDATE's guard lets no row through
        with pytest.raises(RowCountMismatch, match="4 rows needed tokens but 0 were rewritten"):
            _table(conn, p, p.tables[0], False, _preflight(conn, p.tables[0], p.tokenizer.format))
    assert column(pg_empty_url, "email") == [e for e, _ in SAMPLE]


def test_role_without_update_privilege_fails_clearly(pg_empty_url: str, options: TokenizeOptions) -> None:
    create_people(pg_empty_url, SAMPLE)
    role = f"reader_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT SELECT ON people TO {role}")
    try:
        before = snapshot(pg_empty_url)
        as_reader = psycopg.conninfo.make_conninfo(pg_empty_url, user=role)
        for dry in (False, True):
            result = run(plan(PEOPLE, options), dry_run=dry, connect=as_reader)
            assert result.status == "FAILURE"
            assert f"role {role} lacks SELECT and UPDATE on column public.people.email" in (result.error or "")
        assert snapshot(pg_empty_url) == before
    finally:
        with psycopg.connect(pg_empty_url, autocommit=True) as conn:
            conn.execute(f"REVOKE ALL ON people FROM {role}")
            conn.execute(f"DROP ROLE {role}")


def test_lock_timeout_fails_retryably_without_writing(pg_empty_url: str) -> None:
    create_people(pg_empty_url, SAMPLE)
    before = snapshot(pg_empty_url)
    with psycopg.connect(pg_empty_url) as holder:
        holder.execute("LOCK TABLE people IN ROW EXCLUSIVE MODE")  # a writer's open transaction
        result = run(plan(PEOPLE, TokenizeOptions(key=KEY, lock_timeout_ms=100)), connect=pg_empty_url)
        holder.rollback()
    assert result.status == "FAILURE" and result.retryable
    assert "lock_timeout=100ms" in (result.error or "")
    assert snapshot(pg_empty_url) == before


def test_tables_run_in_their_own_transactions(pg_empty_url: str, options: TokenizeOptions) -> None:
    create_people(pg_empty_url, SAMPLE)
    create_people(pg_empty_url, SAMPLE, table="other")
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE other ADD CONSTRAINT short_email CHECK (length(email) < 25)")
    other_before = snapshot(pg_empty_url, "other")
    policy = {
        "tenant": "t1",
        "tables": [{"table": "people", "columns": ["email"]}, {"table": "other", "columns": ["email"]}],
    }
    events: list[tuple[str, str]] = []
    result = run(plan(policy, options), connect=pg_empty_url, progress=lambda e: events.append((e.table, e.phase)))
    assert result.status == "FAILURE"
    assert 'violates check constraint "short_email"' in (result.error or "")
    assert result.rows_by_column == {"public.people.email": 3}  # committed, and a rerun would skip it
    assert snapshot(pg_empty_url, "other") == other_before
    assert events == [
        ("public.people", "started"),
        ("public.people", "finished"),
        ("public.other", "started"),
        ("public.other", "failed"),
    ]


def test_run_records_go_from_running_to_complete(pg_empty_url: str, options: TokenizeOptions) -> None:
    create_people(pg_empty_url, SAMPLE)
    recorder = RunRecorder(pg_empty_url)
    seen: list[tuple[str, str | None]] = []

    def peek(event: TableProgress) -> None:
        records = recorder.last(1)
        seen.append((records[0].state, records[0].result))

    result = run(plan(PEOPLE, options), connect=pg_empty_url, recorder=recorder, progress=peek)
    assert seen[0] == ("RUNNING", None)
    record = recorder.get(result.run_id)
    assert record is not None
    assert (record.state, record.result, record.dry_run, record.tenant) == ("COMPLETE", "SUCCESS", False, "t1")
    assert record.rows_by_column == dict(result.rows_by_column) and record.total_rows == 4
    assert record.finished_at is not None and record.finished_at >= record.started_at
    assert record.tables == ["public.people"]


def test_missing_key_fails_at_plan_time(pg_empty_url: str) -> None:
    from provisioner.tokenize import TokenizeConfigError

    with pytest.raises(TokenizeConfigError, match="PROVISIONER_TOKENIZE_KEY is not set"):
        plan(PEOPLE, TokenizeOptions())
    assert isinstance(TokenizePolicy.from_dict(PEOPLE), TokenizePolicy)
