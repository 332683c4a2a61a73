"""The lost-event repair: datasets tagged tokenize-now with no run since the tag was set are queued."""

from __future__ import annotations

from tests.datahub.conftest import DATASET, ROWS, Harness, editable, field_event, tags

TAGGED_AT = 1_700_000_000_000


def test_a_field_tag_whose_event_never_arrived(harness: Harness) -> None:
    harness.gms.put(DATASET, editable({"email": ("tokenize-now",)}), created_ms=TAGGED_AT)

    assert harness.handler().scan() == 1
    harness.work()

    table = harness.table()
    assert all(r[0] is None or r[0].startswith("tok_") for r in table)
    assert [r[1] for r in table] == [r[1] for r in ROWS]
    (dpi,) = harness.dpi_urns()
    props = harness.properties(dpi)
    assert (props["trigger"], props["fields"], props["total_rows"]) == ("scan", "email", "2")
    assert harness.gms.run_events(dpi)[-1]["result"]["type"] == "SUCCESS"
    assert harness.handler().scan() == 0  # a run since the tag: nothing to repair


def test_a_dataset_tag_whose_event_never_arrived(harness: Harness) -> None:
    harness.gms.put(DATASET, tags("tokenize-now"), created_ms=TAGGED_AT)

    assert harness.handler().scan() == 1
    harness.work()

    (record,) = harness.run_records()
    assert record.rows_by_column == {"public.customers.email": 2, "public.customers.phone": 2}


def test_a_dataset_whose_event_arrived_is_left_alone(harness: Harness) -> None:
    harness.send(field_event("email", time=TAGGED_AT))
    harness.gms.put(DATASET, editable({"email": ("tokenize-now",)}), created_ms=TAGGED_AT)
    assert harness.handler().scan() == 0  # its job waits: not queued twice
    harness.work()
    assert harness.handler().scan() == 0
    assert len(harness.run_records()) == 1


def test_untagged_datasets_and_other_tags_are_not_queued(harness: Harness) -> None:
    harness.gms.put(DATASET, editable({"email": ("pii-email",)}), created_ms=TAGGED_AT)
    assert harness.handler().scan() == 0
    assert harness.jobs() == []


def test_the_scan_is_a_periodic_task_of_the_worker(harness: Harness) -> None:
    harness.config["scan_seconds"] = 3600
    periodic = {t.periodic_id: t.task.name for t in harness.app().periodic_registry.periodic_tasks.values()}
    assert periodic["datahub_scan"] == "datahub_scan"
    harness.config["scan_seconds"] = 0
    periodic = {t.periodic_id for t in harness.app().periodic_registry.periodic_tasks.values()}
    assert "datahub_scan" not in periodic
