"""Failures end the run as FAILURE with a message a person can act on, and leave the table as it was."""

from __future__ import annotations

import logging

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from provisioner.testing.datahub_gms import Proposal
from tests.datahub.conftest import DATASET, ROWS, Harness, field_event, sample, schema, tags

EMAIL = "public.customers.email"


def _failed(harness: Harness) -> tuple[str, dict[str, str]]:
    """The run's error as DataHub shows it (its COMPLETE event says FAILURE) and as the local record says it."""
    (dpi,) = harness.dpi_urns()
    events = harness.gms.run_events(dpi)
    assert events[-1]["status"] == "COMPLETE" and events[-1]["result"]["type"] == "FAILURE"
    props = harness.properties(dpi)
    (record,) = harness.run_records()
    assert (record.state, record.result, record.total_rows) == ("COMPLETE", "FAILURE", 0)
    assert props["error"] == record.error
    return record.error, props


def test_a_column_the_table_lacks(harness: Harness) -> None:
    harness.gms.put(DATASET, schema({"email": ("pii-email",), "ssn": ("pii-ssn",)}))
    before = harness.snapshot()
    harness.send(sample("dataset_tag_add"))
    harness.work()

    error, _ = _failed(harness)
    assert error == "column 'ssn' does not exist in table public.customers"
    assert harness.snapshot() == before


def test_a_tenant_role_without_privileges(harness: Harness) -> None:
    with psycopg.connect(harness.tenant_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE dh_reader LOGIN PASSWORD 'reader-pw'")
        conn.execute("GRANT SELECT ON public.customers TO dh_reader")
    harness.tenants = {"t1": {"DSN": make_conninfo(harness.tenant_url, user="dh_reader", password="reader-pw")}}
    before = harness.snapshot()
    try:
        harness.send(field_event("email"))
        harness.work()
    finally:
        with psycopg.connect(harness.tenant_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY dh_reader")
            conn.execute("DROP ROLE dh_reader")

    error, _ = _failed(harness)
    assert error == "role dh_reader lacks SELECT and UPDATE on column public.customers.email; grant them to tokenize it"
    assert harness.snapshot() == before


def test_an_unreachable_tenant(harness: Harness) -> None:
    harness.tenants = {"t1": {"DSN": "host=127.0.0.1 port=1 dbname=shop user=nobody connect_timeout=2"}}
    before = harness.snapshot()
    harness.send(field_event("email"))
    harness.work()

    error, _ = _failed(harness)
    assert error.startswith("cannot connect to tenant t1 (")
    assert harness.snapshot() == before


def test_a_dataset_no_tenant_rule_maps(harness: Harness) -> None:
    harness.config["tenants"] = [{"platform": "postgres", "database": "warehouse", "tenant": "t1"}]
    harness.send(field_event("email"))
    harness.work()

    error, props = _failed(harness)
    assert error.startswith(f"no tenant rule of the plugin config matches dataset {DATASET} (platform=postgres,")
    assert props["tenant"] == "-"
    assert harness.table() == ROWS


def test_a_tagged_column_without_a_pii_tag(harness: Harness) -> None:
    harness.send(field_event("name"))
    harness.work()

    error, _ = _failed(harness)
    assert error == f"column name of {DATASET} has no pii-* tag: tag it pii-<kind> to tokenize it"
    assert harness.table() == ROWS


def test_more_columns_than_max_columns(harness: Harness) -> None:
    harness.config["max_columns"] = 1
    harness.send(sample("dataset_tag_add"))
    harness.work()

    error, _ = _failed(harness)
    assert "more than max_columns=1" in error and "nothing was written" in error
    assert harness.table() == ROWS


def test_dry_run_counts_and_writes_nothing(harness: Harness) -> None:
    harness.config["dry_run"] = True
    before = harness.snapshot()
    harness.send(field_event("email"))
    harness.work()

    assert harness.snapshot() == before
    (dpi,) = harness.dpi_urns()
    props = harness.properties(dpi)
    assert (props["dry_run"], props[f"rows:{EMAIL}"]) == ("true", "2")
    assert harness.gms.run_events(dpi)[-1]["result"]["type"] == "SUCCESS"
    (record,) = harness.run_records()
    assert record.dry_run and record.rows_by_column == {EMAIL: 2}


def test_datahub_unreachable_at_the_start(harness: Harness) -> None:
    harness.send(field_event("email"))
    harness.gms.stop()
    harness.work()

    # The local record says why; nothing was written to the table; DataHub could not be told.
    (record,) = harness.run_records()
    assert (record.result, record.tenant) == ("FAILURE", "t1")
    assert record.error.startswith("DataHub is unreachable, could not record the start of run urn:li:dataProcessInst")
    assert harness.table() == ROWS
    assert harness.gms.proposals == []

    # DataHub is back; the dataset still carries the tag (its aspect written when the event was): the lost-event
    # scan runs the request again (the failure may pass) under the same DataProcessInstance.
    harness.gms.start()
    harness.gms.put(DATASET, tags("tokenize-now"), created_ms=1_700_000_000_000)
    assert harness.handler().scan() == 1
    harness.work()

    assert all(r[0] is None or r[0].startswith("tok_") for r in harness.table())
    (dpi,) = harness.dpi_urns()
    assert [e["status"] for e in harness.gms.run_events(dpi)] == ["STARTED", "COMPLETE"]
    assert harness.gms.run_events(dpi)[-1]["result"]["type"] == "SUCCESS"
    assert [r.result for r in harness.run_records()] == ["SUCCESS", "FAILURE"]


def _complete(p: Proposal) -> bool:
    return p.aspect_name == "dataProcessInstanceRunEvent" and p.value.get("status") == "COMPLETE"


def test_datahub_unreachable_at_the_end_keeps_the_record_and_posts_it_later(harness: Harness) -> None:
    harness.gms.fail_writes = _complete
    harness.send(field_event("email"))
    harness.work()

    # Tokenized and recorded here; DataHub saw the start only, and the job failed (one attempt in this test).
    tokenized = harness.snapshot()
    assert all(r[0] is None or r[0].startswith("tok_") for r in harness.table())
    (record,) = harness.run_records()
    assert (record.result, record.total_rows) == ("SUCCESS", 2)
    (dpi,) = harness.dpi_urns()
    assert [e["status"] for e in harness.gms.run_events(dpi)] == ["STARTED"]
    assert [s for t, s, _ in harness.jobs()] == ["failed"]

    harness.gms.fail_writes = False
    assert harness.handler().scan() == 1  # the report still missing
    harness.work()

    events = harness.gms.run_events(dpi)
    assert [e["status"] for e in events] == ["STARTED", "COMPLETE"] and events[-1]["result"]["type"] == "SUCCESS"
    assert harness.properties(dpi)[f"rows:{EMAIL}"] == "2"  # the run's own counts, not a rerun's 0
    assert harness.snapshot() == tokenized and len(harness.run_records()) == 1
    assert harness.handler().scan() == 0


def test_a_report_refused_once_is_posted_by_the_job_retry(harness: Harness) -> None:
    refused: list[Proposal] = []

    def once(p: Proposal) -> bool:
        if _complete(p) and not refused:
            refused.append(p)
            return True
        return False

    harness.gms.fail_writes = once
    harness.max_attempts = 3
    harness.send(field_event("email"))
    harness.work()

    assert len(refused) == 1
    (dpi,) = harness.dpi_urns()
    assert [e["status"] for e in harness.gms.run_events(dpi)] == ["STARTED", "COMPLETE"]
    assert [s for t, s, _ in harness.jobs()] == ["succeeded"]
    assert len(harness.run_records()) == 1


def test_json_logs_name_the_dataset_tenant_and_counts(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="provisioner")
    harness.send(field_event("email"))
    harness.work()

    events = {r.getMessage(): getattr(r, "fields", {}) for r in caplog.records if r.name == "provisioner.tokenize"}
    assert events["run.started"]["dataset_urn"] == DATASET and events["run.started"]["tenant"] == "t1"
    success = events["tokenize.success"]
    assert (success["dataset_urn"], success["tenant"], success["total_rows"]) == (DATASET, "t1", 2)
    assert success["rows_by_column"] == {EMAIL: 2}
