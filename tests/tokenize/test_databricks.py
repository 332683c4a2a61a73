"""The Databricks executor's dialogue with a warehouse, through a fake PEP 249 connection (provisioner.testing).

What is checked here is what the executor sends and how it reacts: statements and parameters (no key bytes),
counts, dry runs, limits, run records and events, commit/rollback with and without transactions, and typed errors.
The SQL itself runs on Spark in test_golden_tokens.py and on delta-rs in test_databricks_delta.py.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from provisioner.testing.warehouse import FakeTable, FakeWarehouse, request_error, server_error
from provisioner.tokenize import RunRecorder, TokenFormat, TokenizeOptions, Tokenizer, plan, run
from provisioner.tokenize.databricks import DatabricksExecutor
from provisioner.tokenize.databricks_statements import SecretScopeKey
from provisioner.tokenize.databricks_tenants import DatabricksTenant
from provisioner.tokenize.errors import TenantError
from provisioner.tokenize.tenants import Tenants
from tests.tokenize.conftest import KEY

pytestmark = pytest.mark.databricks

POLICY = {"tenant": "lake", "schema": "sales", "table": "customers", "columns": ["email", "phone"]}
SAMPLE = [
    {"id": 1, "email": "alice@example.com", "phone": "+32 470 11 22 33"},
    {"id": 2, "email": "bob@example.org", "phone": None},
    {"id": 3, "email": None, "phone": ""},
    {"id": 4, "email": "", "phone": "0032 2 555 01 01"},
    {"id": 5, "email": "Zoë Ångström ✓ 😀", "phone": "☎ 555-0100"},
]
REFERENCE = Tokenizer(TokenFormat(), KEY)


def warehouse(**kwargs: Any) -> FakeWarehouse:
    table = FakeTable({"id": "int", "email": "string", "phone": "varchar(64)"}, [dict(r) for r in SAMPLE])
    return FakeWarehouse(tables={"sales.customers": table}, secrets={("tok", "key"): KEY}, **kwargs)


def executor(wh: FakeWarehouse, **kwargs: Any) -> DatabricksExecutor:
    options = {"catalog": "main", "key": SecretScopeKey("tok", "key"), **kwargs}
    connect = options.pop("connect", wh.connect)
    return DatabricksExecutor("lake", connect, **options)


def options(**kwargs: Any) -> TokenizeOptions:
    return TokenizeOptions(format=TokenFormat(), key=KEY, **kwargs)


def test_tokens_match_the_reference_and_a_rerun_changes_nothing(pg_empty_url: str) -> None:
    wh = warehouse()
    recorder = RunRecorder(pg_empty_url)
    first = run(plan(POLICY, options()), connect=executor(wh), recorder=recorder)
    assert first.status == "SUCCESS", first.error
    assert first.total_rows == 4  # row 3 holds only NULL and ''
    assert first.rows_by_column == {"sales.customers.email": 3, "sales.customers.phone": 3}
    table = wh.tables["sales.customers"]
    assert [r["email"] for r in table.rows] == [REFERENCE.tokenize(r["email"]) for r in SAMPLE]
    assert [r["phone"] for r in table.rows] == [REFERENCE.tokenize(r["phone"]) for r in SAMPLE]
    assert table.version == 1  # one UPDATE, one commit
    updates = [s for s in wh.statements if s.startswith("UPDATE")]
    assert len(updates) == 1 and "`main`.`sales`.`customers`" in updates[0]

    second = run(plan(POLICY, options()), connect=executor(wh), recorder=recorder)
    assert second.ok and second.total_rows == 0
    assert second.rows_by_column == {"sales.customers.email": 0, "sales.customers.phone": 0}
    assert table.version == 1 and len([s for s in wh.statements if s.startswith("UPDATE")]) == 1
    record = recorder.get(first.run_id)
    assert record is not None and (record.state, record.result, record.tenant) == ("COMPLETE", "SUCCESS", "lake")
    assert record.rows_by_column == dict(first.rows_by_column) and record.tables == ["sales.customers"]


def test_no_key_bytes_in_statements_or_parameters() -> None:
    wh = warehouse()
    assert run(plan(POLICY, options()), connect=executor(wh, mac="sha2")).ok
    assert run(plan(POLICY, options()), connect=executor(warehouse())).ok
    pads = REFERENCE.pads
    secrets = [KEY, KEY.encode().hex(), base64.b64encode(KEY.encode()).decode(), pads.ipad.hex(), pads.opad.hex()]
    sent = [repr(item) for conn in wh.connections for item in conn.executed]
    assert sent and all(p is None for conn in wh.connections for _, p in conn.executed)
    for text in sent:
        for secret in secrets:
            assert secret.lower() not in text.lower()
    assert any("secret('tok', 'key')" in s for s in sent)  # only the secret's name travels


def test_events_and_records_are_those_of_the_postgres_path(pg_empty_url: str, caplog: pytest.LogCaptureFixture) -> None:
    from tests.tokenize.conftest import create_people

    create_people(pg_empty_url, [("a@example.com", None)])
    pg_policy = {"tenant": "t1", "schema": "public", "table": "people", "columns": ["email"]}
    with caplog.at_level(logging.INFO, logger="provisioner.tokenize"):
        assert run(plan(pg_policy, options()), connect=pg_empty_url).ok
        pg_events = [(r.event, sorted(r.fields)) for r in caplog.records if hasattr(r, "event")]
        caplog.clear()
        assert run(plan(POLICY, options()), connect=executor(warehouse())).ok
        dbx_events = [(r.event, sorted(r.fields)) for r in caplog.records if hasattr(r, "event")]
    assert dbx_events == pg_events
    assert [e for e, _ in dbx_events] == ["run.started", "tokenize.success"]


def test_dry_run_counts_and_writes_nothing() -> None:
    wh = warehouse()
    result = run(plan(POLICY, options()), dry_run=True, connect=executor(wh))
    assert result.ok and result.dry_run and result.total_rows == 4
    assert result.rows_by_column == {"sales.customers.email": 3, "sales.customers.phone": 3}
    assert wh.tables["sales.customers"].version == 0
    assert not [s for s in wh.statements if s.startswith("UPDATE") or "secret(" in s]


def test_max_columns_fails_before_any_statement() -> None:
    wh = warehouse()
    result = run(plan(POLICY, options(max_columns=1)), connect=executor(wh))
    assert result.status == "FAILURE" and "max_columns=1" in (result.error or "")
    assert wh.connections == []


def test_a_secret_that_is_not_the_key_stops_the_run_before_any_write() -> None:
    wh = warehouse()
    wh.secrets[("tok", "key")] = "another key"
    result = run(plan(POLICY, options()), connect=executor(wh))
    assert result.status == "FAILURE" and not result.retryable
    assert "is not the configured tokenization key" in (result.error or "")
    assert "another key" not in (result.error or "")
    assert wh.tables["sales.customers"].version == 0


def test_runtime_without_hmac_falls_back_to_sha2_with_the_same_tokens() -> None:
    wh = warehouse(has_hmac=False)
    result = run(plan(POLICY, options()), connect=executor(wh))
    assert result.ok, result.error
    update = next(s for s in wh.statements if s.startswith("UPDATE"))
    assert "sha2(" in update and "hmac(" not in update
    assert any("hmac(" in s for s in wh.statements)  # the probe tried hmac() first
    assert [r["email"] for r in wh.tables["sales.customers"].rows] == [REFERENCE.tokenize(r["email"]) for r in SAMPLE]


def test_hmac_mode_without_a_secret_scope_is_refused() -> None:
    wh = warehouse()
    result = run(plan(POLICY, options()), connect=executor(wh, key=None))
    assert result.status == "FAILURE" and "SECRET_SCOPE" in (result.error or "")
    assert wh.connections == []


def test_failed_update_is_retryable_changes_nothing_and_never_calls_rollback() -> None:
    # ignore_transactions=True (the connector's default): rollback() would raise NotSupportedError.
    def concurrent(statement: str) -> BaseException | None:
        if statement.startswith("UPDATE"):
            return server_error("DELTA_CONCURRENT_APPEND", "Files were added by a concurrent update.", "2D521")
        return None

    wh = warehouse(fail=concurrent)
    result = run(plan(POLICY, options()), connect=executor(wh))
    assert result.status == "FAILURE" and result.retryable
    assert "DELTA_CONCURRENT_APPEND" in (result.error or "") and "committed nothing" in (result.error or "")
    assert wh.tables["sales.customers"].version == 0
    assert all(c.closed and c.rollbacks == 0 for c in wh.connections)


def test_with_real_transactions_the_update_is_committed_or_rolled_back() -> None:
    wh = warehouse()
    connect = lambda: wh.connect(ignore_transactions=False, autocommit=False)  # noqa: E731
    assert run(plan(POLICY, options()), connect=executor(wh, connect=connect)).ok
    assert (wh.connections[0].commits, wh.connections[0].rollbacks) == (1, 0)

    def permission(statement: str) -> BaseException | None:
        if statement.startswith("UPDATE"):
            return server_error("PERMISSION_DENIED", "User does not have MODIFY on Table 'main.sales.customers'.")
        return None

    wh = warehouse(fail=permission)
    result = run(plan(POLICY, options()), connect=executor(wh, connect=connect))
    assert result.status == "FAILURE" and not result.retryable and "MODIFY" in (result.error or "")
    assert (wh.connections[0].commits, wh.connections[0].rollbacks) == (0, 1)


def test_an_error_quoting_a_value_is_reduced_to_its_class() -> None:
    def cast(statement: str) -> BaseException | None:
        if statement.startswith("UPDATE"):
            return server_error("CAST_INVALID_INPUT", "The value 'alice@example.com' cannot be cast.", "22018")
        return None

    result = run(plan(POLICY, options()), connect=executor(warehouse(fail=cast)))
    assert result.status == "FAILURE"
    assert "alice" not in (result.error or "") and "[CAST_INVALID_INPUT] (SQLSTATE 22018)" in (result.error or "")


@pytest.mark.parametrize(
    ("code", "words"), [(503, "starting or unavailable"), (429, "throttled"), (504, "starting or unavailable")]
)
def test_warehouse_starting_or_throttling_is_retryable(code: int, words: str) -> None:
    wh = warehouse()

    def refuse() -> Any:
        raise request_error(code)

    result = run(plan(POLICY, options()), connect=executor(wh, connect=refuse))
    assert result.status == "FAILURE" and result.retryable and words in (result.error or "")

    def busy(statement: str) -> BaseException | None:
        return request_error(code) if statement.startswith("SELECT count_if") else None

    result = run(plan(POLICY, options()), connect=executor(warehouse(fail=busy)))
    assert result.status == "FAILURE" and result.retryable and words in (result.error or "")


def test_rows_written_after_the_update_fail_retryably_and_a_rerun_takes_them() -> None:
    wh = warehouse()
    wh.after_update = lambda t: t.rows.append({"id": 9, "email": "late@example.com", "phone": None})
    result = run(plan(POLICY, options()), connect=executor(wh))
    assert result.status == "FAILURE" and result.retryable and "written meanwhile" in (result.error or "")
    wh.after_update = None
    again = run(plan(POLICY, options()), connect=executor(wh))
    assert again.ok and again.total_rows == 1
    assert wh.tables["sales.customers"].rows[-1]["email"] == REFERENCE.token("late@example.com")


def test_rows_written_before_the_update_are_covered_by_its_guard(caplog: pytest.LogCaptureFixture) -> None:
    wh = warehouse()
    wh.before_update = lambda t: t.rows.append({"id": 9, "email": "early@example.com", "phone": None})
    with caplog.at_level(logging.WARNING, logger="provisioner.tokenize"):
        result = run(plan(POLICY, options()), connect=executor(wh))
    assert result.ok and result.total_rows == 5
    assert [r for r in caplog.records if getattr(r, "event", None) == "tokenize.rows_changed_meanwhile"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t: setattr(t, "provider", "parquet"), "stored as parquet; only Delta tables"),
        (lambda t: setattr(t, "kind", "VIEW"), "is a view"),
        (lambda t: t.columns.pop("phone"), "column 'phone' does not exist"),
        (lambda t: t.columns.update(phone="int"), "of type int"),
        (lambda t: t.columns.update(phone="varchar(10)"), "too short"),
    ],
)
def test_unsuitable_targets_fail_before_any_write(change: Any, message: str) -> None:
    wh = warehouse()
    change(wh.tables["sales.customers"])
    result = run(plan(POLICY, options()), connect=executor(wh))
    assert result.status == "FAILURE" and message in (result.error or "")
    assert not [s for s in wh.statements if s.startswith("UPDATE")]


def test_missing_table_is_named() -> None:
    result = run(plan({**POLICY, "table": "nobody"}, options()), connect=executor(warehouse()))
    assert result.status == "FAILURE" and "TABLE_OR_VIEW_NOT_FOUND" in (result.error or "")
    assert "nobody" in (result.error or "") and not result.retryable


def test_base64_mode_needs_no_secret() -> None:
    wh = warehouse(fmt=TokenFormat(mode="base64"))
    result = run(plan(POLICY, TokenizeOptions(format=TokenFormat(mode="base64"))), connect=executor(wh, key=None))
    assert result.ok, result.error
    assert wh.tables["sales.customers"].rows[0]["email"] == Tokenizer(TokenFormat(mode="base64")).token(
        "alice@example.com"
    )


FIELDS = {
    "KIND": "databricks",
    "HOST": "https://adb-123.4.azuredatabricks.net/",
    "HTTP_PATH": "/sql/1.0/warehouses/abc",
    "CATALOG": "main",
    "AUTH": "token",
    "TOKEN": "dapi-secret-token",
    "SECRET_SCOPE": "tok",
    "SECRET_KEY": "key",
}


def test_tenants_of_kind_databricks_get_an_executor_the_engine_uses() -> None:
    tenants = Tenants.from_mapping({"lake": FIELDS, "pg": {"DSN": "postgresql://u@h/db"}})
    found = tenants.executor("lake")
    assert isinstance(found, DatabricksExecutor)
    assert (found.catalog, found.key, found.where) == (
        "main",
        SecretScopeKey("tok", "key"),
        "adb-123.4.azuredatabricks.net/sql/1.0/warehouses/abc",
    )
    assert tenants.executor("pg") is None and "dapi-secret-token" not in repr(tenants)
    with pytest.raises(TenantError, match="not a PostgreSQL database"):
        tenants["lake"]

    wh = warehouse()
    routed = Tenants({}, {"lake": executor(wh)})
    assert run(plan(POLICY, options()), connect=routed).ok
    assert wh.tables["sales.customers"].version == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"HOST": "bad host/x"}, "_HOST"),
        ({"HTTP_PATH": "sql"}, "_HTTP_PATH"),
        ({"TOKEN": ""}, "_TOKEN"),
        ({"AUTH": "oauth-m2m"}, "_CLIENT_ID"),
        ({"AUTH": "kerberos"}, "unknown"),
        ({"SECRET_KEY": ""}, "_SECRET_SCOPE and"),
        ({"SECRET_SCOPE": "bad scope"}, "secret scope"),
        ({"HMAC": "md5"}, "_HMAC"),
        ({"CATALOG": "a b"}, "catalog"),
        ({"KIND": "oracle"}, "_KIND"),
    ],
)
def test_bad_databricks_fields_are_explained(change: dict[str, str], message: str) -> None:
    with pytest.raises(TenantError, match=message):
        Tenants.from_mapping({"lake": {**FIELDS, **change}})


def test_the_real_connector_is_opened_without_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    from databricks import sql as dbsql

    seen: dict[str, Any] = {}
    monkeypatch.setattr(dbsql, "connect", lambda **kw: seen.update(kw) or "conn")
    assert DatabricksTenant.from_fields("lake", FIELDS).connect() == "conn"
    assert seen["ignore_transactions"] is True and seen["access_token"] == "dapi-secret-token"
    assert (seen["server_hostname"], seen["http_path"]) == ("adb-123.4.azuredatabricks.net", "/sql/1.0/warehouses/abc")


def test_settings_read_the_databricks_tenant_fields() -> None:
    from provisioner.settings import Settings

    env = {f"PROVISIONER_TENANT_SALES_EU_{k}": v for k, v in FIELDS.items()}
    settings = Settings.from_env(env)
    assert settings.tenants == {"sales_eu": FIELDS}
    found = Tenants.from_mapping(settings.tenants).executor("sales_eu")
    assert isinstance(found, DatabricksExecutor) and found.key == SecretScopeKey("tok", "key")
