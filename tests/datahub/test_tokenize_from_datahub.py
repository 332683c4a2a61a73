"""A tag in DataHub → the table tokenized, the run on the dataset (STARTED, then COMPLETE), and the local record."""

from __future__ import annotations

from tests.datahub.conftest import DATASET, ROWS, Harness, editable, field_event, sample, schema

EMAIL = "public.customers.email"
PHONE = "public.customers.phone"


def test_field_tag_tokenizes_the_column_and_reports_the_run(harness: Harness) -> None:
    pipeline = harness.send(field_event("email"))
    assert pipeline.source.acked[True] == 1  # type: ignore[attr-defined]
    assert [(t, s) for t, s, _ in harness.jobs()] == [("tokenize_dataset", "todo")]
    assert harness.table() == ROWS  # act() only queued the job

    harness.work()

    table = harness.table()
    assert [r[0] is None or r[0].startswith("tok_") for r in table] == [True, True, True]
    assert table[0][0] != ROWS[0][0] and table[2][0] is None
    assert [r[1:] for r in table] == [r[1:] for r in ROWS]  # phone is PII too, but the tag named email only
    (dpi,) = harness.dpi_urns()
    events = harness.gms.run_events(dpi)
    assert [e["status"] for e in events] == ["STARTED", "COMPLETE"]
    assert events[-1]["result"] == {"type": "SUCCESS", "nativeResultType": "tokenize"}
    props = harness.properties(dpi)
    assert props[f"rows:{EMAIL}"] == "2" and props["total_rows"] == "2"
    assert props["tenant"] == "t1" and props["dry_run"] == "false" and props["fields"] == "email"
    # The run names the dataset as its output, and nothing is written to the dataset itself (no datasetKey).
    outputs = harness.gms.writes(entity_urn=dpi, aspect_name="dataProcessInstanceOutput")
    assert outputs[-1].value["outputs"] == [DATASET]
    assert harness.gms.writes(entity_urn=DATASET) == []
    assert not [p for p in harness.gms.proposals if p.aspect_name == "datasetKey"]
    # `provisioner runs` shows it: the local run record with its counts and where it came from.
    (record,) = harness.run_records()
    assert (record.state, record.result, record.tenant, record.total_rows) == ("COMPLETE", "SUCCESS", "t1", 2)
    assert record.rows_by_column == {EMAIL: 2}
    assert record.detail["dataset_urn"] == DATASET and record.detail["dpi_urn"] == dpi
    assert props["provisioner_run_id"] == record.run_id


def test_replayed_event_is_one_run_and_changes_nothing(harness: Harness) -> None:
    event = field_event("email")
    harness.send(event, event)  # at-least-once delivery: twice in a row
    assert len(harness.jobs()) == 1
    harness.work()
    after_first = harness.snapshot()

    harness.send(event)  # and again after the run
    harness.work()

    assert len(harness.jobs()) == 1
    assert harness.snapshot() == after_first  # 0 rows changed
    (dpi,) = harness.dpi_urns()
    assert [e["status"] for e in harness.gms.run_events(dpi)] == ["STARTED", "COMPLETE"]
    assert len(harness.run_records()) == 1


def test_a_new_tag_on_a_tokenized_table_changes_no_row(harness: Harness) -> None:
    harness.send(field_event("email", time=1_700_000_000_000))
    harness.work()
    before = harness.snapshot()

    harness.send(field_event("email", time=1_700_000_500_000))  # removed and added again: a new audit stamp
    harness.work()

    assert harness.snapshot() == before
    first, second = harness.run_records()[::-1]
    assert (first.total_rows, second.total_rows, second.result) == (2, 0, "SUCCESS")
    assert len(harness.dpi_urns()) == 2


def test_dataset_tag_tokenizes_every_pii_column(harness: Harness) -> None:
    harness.send(sample("dataset_tag_add"))
    harness.work()

    table = harness.table()
    assert all(v is None or v.startswith("tok_") for r in table for v in r[:2])
    assert [r[2] for r in table] == ["Ann", "Bob", "Cy"]
    (record,) = harness.run_records()
    assert record.rows_by_column == {EMAIL: 2, PHONE: 2} and record.total_rows == 3
    (dpi,) = harness.dpi_urns()
    assert harness.properties(dpi)["fields"] == "every pii-* column"


def test_columns_tagged_only_in_the_ui(harness: Harness) -> None:
    # Ingestion knows no tags; a steward tagged name as PII in the UI (editableSchemaMetadata).
    harness.gms.put(DATASET, schema({"id": (), "email": (), "phone": (), "name": ()}))
    harness.gms.put(DATASET, editable({"name": ("pii-name",)}))
    harness.send(sample("dataset_tag_add"))
    harness.work()

    table = harness.table()
    assert [r[:2] for r in table] == [r[:2] for r in ROWS]
    assert all(r[2].startswith("tok_") for r in table)
    (record,) = harness.run_records()
    assert record.rows_by_column == {"public.customers.name": 3}


def test_ingestion_schema_event_and_other_events(harness: Harness) -> None:
    other_tag = field_event("phone", modifier="urn:li:tag:pii-phone")
    removed = field_event("phone", operation="REMOVE")
    harness.send(other_tag, removed, sample("field_tag_add_via_ingestion_schemaMetadata"))

    assert [j[2]["dataset_urn"] for j in harness.jobs()] == [DATASET]
    harness.work()
    assert [r[1] for r in harness.table()] == [r[1] for r in ROWS]
    assert harness.run_records()[0].rows_by_column == {EMAIL: 2}


def test_external_url_base_links_the_run(harness: Harness) -> None:
    harness.config["external_url_base"] = "https://provisioner.example.com/runs/"
    harness.send(field_event("email"))
    harness.work()

    (dpi,) = harness.dpi_urns()
    (record,) = harness.run_records()
    written = harness.gms.writes(entity_urn=dpi, aspect_name="dataProcessInstanceProperties")
    assert written[-1].value["externalUrl"] == f"https://provisioner.example.com/runs/{record.run_id}"
