"""The residual-PII gate: PII left in columns a policy does not tokenize, warn or fail, tokens never count."""

from __future__ import annotations

import json
import logging

import pytest

from provisioner.profile.gate import residual_pii_gate
from provisioner.tokenize import (
    PolicyFile,
    RunRecorder,
    Tenants,
    TokenFormat,
    TokenizeOptions,
    TokenizePolicy,
    plan,
    run,
)
from tests.profile.conftest import create_table

KEY = "gate-test-key"


def customers(url: str) -> None:
    """``customers(id, email, phone, notes, tier)``: notes hold an email address in every 4th row."""
    rows = []
    for i in range(400):
        notes = f"asked anna{i}@example.com for the invoice" if i % 4 == 0 else "no answer yet"
        rows.append((i, f"person{i}@example.com", f"+31 6 {10_000_000 + i}", notes, ("a", "b")[i % 2]))
    create_table(url, "customers", "id int, email text, phone text, notes text, tier text", rows)


def policy(mode: str | None, columns: tuple[str, ...] = ("email", "phone")) -> TokenizePolicy:
    """The sales/customers policy tokenizing ``columns``, with ``residual_pii: mode`` (or none)."""
    entry: dict = {
        "producer": "sales",
        "output_port": "customers",
        "tenant": "sales",
        "tables": [{"schema": "public", "table": "customers", "columns": list(columns)}],
    }
    if mode:
        entry["residual_pii"] = mode
    found = PolicyFile.from_dict({"policies": [entry]}).for_output_port("sales", "customers")
    assert found is not None
    return found


def tokenize(url: str, pol: TokenizePolicy) -> None:
    assert run(plan(pol, TokenizeOptions(key=KEY)), connect=url).ok


def test_fail_blocks_on_emails_in_notes_and_names_the_column(
    pg_url: str, pg_empty_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    customers(pg_empty_url)
    pol = policy("fail")
    tokenize(pg_empty_url, pol)
    recorder = RunRecorder(pg_url)
    with caplog.at_level(logging.INFO, logger="provisioner.profile.gate"):
        gate = residual_pii_gate(pol, connect=pg_empty_url, token_format=TokenFormat(), recorder=recorder)
    assert gate.blocked
    assert [(f.table, f.column, f.kinds) for f in gate.findings] == [("public.customers", "notes", ("email",))]
    assert "public.customers.notes (email)" in gate.message and "grant blocked" in gate.message
    record = recorder.get(gate.run_id or "")
    assert record is not None and record.kind == "gate" and record.result == "FAILURE"
    assert record.detail["findings"][0]["column"] == "notes" and record.detail["blocked"] is True
    logged = json.dumps([vars(r) for r in caplog.records], default=str) + json.dumps(record.detail)
    assert "@example.com" not in logged, "names, kinds and counts only"


def test_warn_lets_the_grant_go_and_records_the_finding(pg_url: str, pg_empty_url: str) -> None:
    customers(pg_empty_url)
    pol = policy(None)  # warn is the default
    tokenize(pg_empty_url, pol)
    recorder = RunRecorder(pg_url)
    gate = residual_pii_gate(pol, connect=pg_empty_url, token_format=TokenFormat(), recorder=recorder)
    assert not gate.blocked and gate.mode == "warn"
    assert [f.column for f in gate.findings] == ["notes"]
    record = recorder.get(gate.run_id or "")
    assert record is not None and record.result == "SUCCESS" and record.detail["findings"][0]["kinds"] == ["email"]


def test_tokenized_columns_and_clean_tables_pass(pg_empty_url: str) -> None:
    customers(pg_empty_url)
    pol = policy("fail", ("email", "phone", "notes"))
    # Before tokenization every PII column is PII; after it, nothing is left (tokens never count).
    before = residual_pii_gate(policy("fail", ("email",)), connect=pg_empty_url, token_format=TokenFormat())
    assert {f.column for f in before.findings} == {"phone", "notes"}
    tokenize(pg_empty_url, pol)
    gate = residual_pii_gate(pol, connect=pg_empty_url, token_format=TokenFormat())
    assert gate.findings == () and not gate.blocked


def test_a_scan_that_cannot_run_blocks_only_in_fail_mode(pg_empty_url: str) -> None:
    # No customers table: the scan fails.
    failed = residual_pii_gate(policy("fail"), connect=pg_empty_url, token_format=TokenFormat())
    assert failed.blocked and "table public.customers does not exist" in failed.message
    warned = residual_pii_gate(policy("warn"), connect=pg_empty_url, token_format=TokenFormat())
    assert not warned.blocked and warned.error is not None


def test_tenants_that_are_not_postgresql_are_skipped_or_refused() -> None:
    warehouse = Tenants(connectors={}, executors={"sales": object()})  # type: ignore[dict-item]
    skipped = residual_pii_gate(policy("warn"), connect=warehouse, token_format=TokenFormat())
    assert not skipped.blocked and skipped.findings == () and skipped.error is None
    refused = residual_pii_gate(policy("fail"), connect=warehouse, token_format=TokenFormat())
    assert refused.blocked and "scans PostgreSQL tenants only" in refused.message


class _Warehouse:
    """The executor of a tenant of another kind (as a DatabricksExecutor is), given where a connection is expected."""

    def execute_plan(self, plan: object, dry_run: bool, done: list[object], progress: object) -> None:
        raise AssertionError("the gate never runs a plan")


def test_an_executor_given_directly_is_refused_by_name_not_as_an_internal_error() -> None:
    refused = residual_pii_gate(policy("fail"), connect=_Warehouse(), token_format=TokenFormat())
    assert refused.blocked and "tenant 'sales' is not a PostgreSQL database" in refused.message
    assert "internal error" not in refused.message
