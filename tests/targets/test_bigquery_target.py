"""The BigQuery target on its own: against bqemulator (a real BigQuery REST server) and, for what the emulator does
not enforce (etags, the exact access entries written, 412), against the request-level stand-in."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from provisioner.errors import TargetUnavailable
from provisioner.names import Namespace
from provisioner.targets.base import HeldGrant, TargetGrant, TargetProduct
from provisioner.targets.bigquery import BigQueryConfig, BigQueryTarget, build_client
from provisioner.testing.bigquery_http import FakeBigQueryHTTP
from provisioner.testing.bqemulator import Emulator
from tests.fixtures.bigquery import PROJECT, fake_client

pytestmark = pytest.mark.bigquery

PRINCIPALS = {"team_a": "group:team-a@example.com", "team_b": "user:bob@example.com"}


def _ns() -> Namespace:
    return Namespace(f"bq-{uuid.uuid4().hex[:10]}")


@pytest.fixture
def emulated(bq_emulator: Emulator) -> BigQueryTarget:
    config = BigQueryConfig(project=PROJECT, location="EU", endpoint=bq_emulator.endpoint, principals=PRINCIPALS)
    return BigQueryTarget(config, build_client(config))


def _product(namespace: Namespace, project_dir: Path | None = None, description: str = "Sales data") -> TargetProduct:
    return TargetProduct(
        f"id-{namespace}", namespace, name=str(namespace), description=description, project_dir=project_dir
    )


def _schema(project: Path, table: str, fields: list[dict[str, Any]]) -> None:
    (project / "bigquery").mkdir(parents=True, exist_ok=True)
    (project / "bigquery" / f"{table}.json").write_text(json.dumps(fields))


# -- create if missing (emulator) -------------------------------------------------------------------------------------
def test_create_if_missing_twice_changes_nothing_and_never_overwrites(emulated: BigQueryTarget) -> None:
    from google.api_core.exceptions import Conflict
    from google.cloud import bigquery

    namespace = _ns()
    first = emulated.ensure(_product(namespace))
    assert first.steps == ["dataset"]
    dataset = emulated.client.get_dataset(f"{PROJECT}.dp_{namespace.sql_name}")
    assert dataset.location == "EU"
    assert dataset.description == "Sales data"
    assert dataset.labels == {"managed-by": "provisioner", "product-id": f"id-{namespace}", "namespace": namespace}
    assert first.env == {"BQ_PROJECT": PROJECT, "BQ_DATASET": f"dp_{namespace.sql_name}", "BQ_LOCATION": "EU"}

    # A second create of the same dataset is refused by the server (409): ensure looks first, so it never gets one.
    with pytest.raises(Conflict):
        emulated.client.create_dataset(bigquery.Dataset(dataset.reference))
    again = emulated.ensure(_product(namespace, description="changed in the portal"))
    assert again.steps == []
    kept = emulated.client.get_dataset(dataset.reference)
    assert (kept.description, kept.etag) == ("Sales data", dataset.etag)  # an existing dataset is never overwritten


def test_schema_files_create_tables_and_a_destructive_change_is_refused_with_a_message(
    emulated: BigQueryTarget, tmp_path: Path
) -> None:
    namespace = _ns()
    _schema(
        tmp_path,
        "orders",
        [
            {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
            {"name": "amount", "type": "NUMERIC"},
            {"name": "note", "type": "STRING"},
        ],
    )
    product = _product(namespace, tmp_path)
    assert emulated.ensure(product).steps == ["dataset", "table:orders"]
    table_id = f"{PROJECT}.dp_{namespace.sql_name}.orders"
    client = emulated.client
    client.query(f"INSERT INTO `{table_id}` (id, amount, note) VALUES (1, 9.5, 'kept')").result()
    assert emulated.ensure(product).steps == []  # the same file again: nothing to do

    # The file now drops `note`, changes `amount`'s type, tightens nothing else, and adds a NULLABLE column.
    _schema(
        tmp_path,
        "orders",
        [
            {"name": "id", "type": "INTEGER", "mode": "REQUIRED"},
            {"name": "amount", "type": "STRING"},
            {"name": "channel", "type": "STRING", "mode": "NULLABLE"},
        ],
    )
    outcome = emulated.ensure(product)
    assert outcome.steps == ["columns_added:orders"]  # only the additive column is applied
    assert outcome.detail["schema_refused"] == [
        "orders.note: dropping a column is not applied",
        "orders.amount: changing type NUMERIC to STRING is not applied",
    ]
    table = client.get_table(table_id)
    assert [(f.name, f.field_type, f.mode) for f in table.schema] == [
        ("id", "INTEGER", "REQUIRED"),
        ("amount", "NUMERIC", "NULLABLE"),
        ("note", "STRING", "NULLABLE"),
        ("channel", "STRING", "NULLABLE"),
    ]
    rows = [tuple(r.values()) for r in client.query(f"SELECT id, note FROM `{table_id}`").result()]
    assert rows == [(1, "kept")]  # the data is untouched


def test_a_required_tightening_and_a_bad_file_are_reported_and_nothing_else_changes(
    emulated: BigQueryTarget, tmp_path: Path
) -> None:
    namespace = _ns()
    _schema(tmp_path, "events", [{"name": "at", "type": "TIMESTAMP"}])
    product = _product(namespace, tmp_path)
    emulated.ensure(product)
    _schema(tmp_path, "events", [{"name": "at", "type": "TIMESTAMP", "mode": "REQUIRED"}])
    (tmp_path / "bigquery" / "broken.json").write_text("{not json")
    outcome = emulated.ensure(product)
    assert outcome.steps == []
    assert outcome.waiting[0].startswith("bigquery/broken.json: ")
    assert outcome.waiting[1] == "events.at: changing mode NULLABLE to REQUIRED is not applied"


def test_access_entries_round_trip_through_the_emulator(emulated: BigQueryTarget) -> None:
    producer, consumer = _ns(), Namespace("team_b")
    emulated.ensure(_product(producer))
    dataset = f"dp_{producer.sql_name}"
    remembered: list[list[HeldGrant]] = []
    granted = emulated.converge_grants(
        _product(consumer), [TargetGrant("p1", producer, Namespace("port"))], [], lambda h: remembered.append(list(h))
    )
    assert granted.steps == [f"granted:{dataset}"]
    assert remembered == [[HeldGrant("p1", dataset, "user:bob@example.com")]]
    entries = [e.to_api_repr() for e in emulated.client.get_dataset(f"{PROJECT}.{dataset}").access_entries]
    assert {"role": "READER", "userByEmail": "bob@example.com"} in entries
    assert granted.env == {"BQ_READ_DATASETS": f"{PROJECT}.{dataset}"}

    revoked = emulated.converge_grants(_product(consumer), [], granted.held or [], lambda h: None)
    assert revoked.steps == [f"revoked:{dataset}"]
    entries = [e.to_api_repr() for e in emulated.client.get_dataset(f"{PROJECT}.{dataset}").access_entries]
    assert {"role": "READER", "userByEmail": "bob@example.com"} not in entries
    assert revoked.env == {"BQ_READ_DATASETS": ""}


def test_probe_says_ok_or_what_is_wrong_in_one_line(emulated: BigQueryTarget) -> None:
    assert emulated.probe().startswith(f"ok: bigquery project {PROJECT} answers at http://127.0.0.1:")
    dead = BigQueryConfig(project=PROJECT, endpoint="http://127.0.0.1:9", principals=PRINCIPALS)
    line = BigQueryTarget(dead, build_client(dead)).probe()
    assert line.startswith(f"BigQuery: project {PROJECT} at http://127.0.0.1:9: ") and "\n" not in line


# -- exact REST bodies, etags and 412 (request-level stand-in) --------------------------------------------------------
@pytest.fixture
def faked(bq_fake: FakeBigQueryHTTP) -> BigQueryTarget:
    return BigQueryTarget(BigQueryConfig(project=PROJECT, principals=PRINCIPALS), fake_client(bq_fake))


def test_grant_writes_exactly_the_reader_entry_with_the_etag_it_read(
    faked: BigQueryTarget, bq_fake: FakeBigQueryHTTP
) -> None:
    producer = Namespace("team_a")
    faked.ensure(_product(producer))
    dataset = "dp_team_a"
    create = next(c for c in bq_fake.calls if c.method == "POST")
    assert create.body == {
        "datasetReference": {"projectId": PROJECT, "datasetId": dataset},
        "labels": {"managed-by": "provisioner", "product-id": "id-team_a", "namespace": "team_a"},
        "location": "US",
        "description": "Sales data",
    }
    owner_patch = bq_fake.patches(dataset)[-1]
    assert owner_patch.body == {"access": [{"role": "WRITER", "groupByEmail": "team-a@example.com"}]}

    etag = bq_fake.datasets[dataset]["etag"]
    faked.converge_grants(
        _product(Namespace("team_b")), [TargetGrant("p", producer, Namespace("x"))], [], lambda h: None
    )
    grant = bq_fake.patches(dataset)[-1]
    assert grant.headers["If-Match"] == etag
    assert grant.body == {
        "access": [
            {"role": "WRITER", "groupByEmail": "team-a@example.com"},
            {"role": "READER", "userByEmail": "bob@example.com"},
        ]
    }


def test_a_concurrent_change_of_the_entries_412_is_read_again_and_retried_keeping_both(
    faked: BigQueryTarget, bq_fake: FakeBigQueryHTTP
) -> None:
    producer = Namespace("team_a")
    faked.ensure(_product(producer))
    dataset = "dp_team_a"
    before = len(bq_fake.patches(dataset))
    someone = {"role": "READER", "userByEmail": "auditor@example.com"}
    bq_fake.change_before_next_patch(dataset, lambda d: d["access"].append(someone))

    outcome = faked.converge_grants(
        _product(Namespace("team_b")), [TargetGrant("p", producer, Namespace("x"))], [], lambda h: None
    )
    assert outcome.steps == [f"granted:{dataset}"]
    first, second = bq_fake.patches(dataset)[before:]
    assert first.headers["If-Match"] != second.headers["If-Match"]  # the second write carries the newer etag
    assert someone not in first.body["access"]
    assert bq_fake.datasets[dataset]["access"] == [
        {"role": "WRITER", "groupByEmail": "team-a@example.com"},
        someone,  # the other writer's entry is kept
        {"role": "READER", "userByEmail": "bob@example.com"},
    ]


def test_entries_that_keep_changing_give_up_as_a_temporary_failure(
    faked: BigQueryTarget, bq_fake: FakeBigQueryHTTP
) -> None:
    faked.ensure(_product(Namespace("team_a")))
    for i in range(10):
        bq_fake.change_before_next_patch("dp_team_a", lambda d, i=i: d.setdefault("labels", {}).update(n=str(i)))
    with pytest.raises(TargetUnavailable, match="changed under every one of 5 writes"):
        faked.converge_grants(
            _product(Namespace("team_b")), [TargetGrant("p", Namespace("team_a"), Namespace("x"))], [], lambda h: None
        )


def test_revoke_removes_only_our_entry_and_deletion_keeps_the_dataset_labelled(
    faked: BigQueryTarget, bq_fake: FakeBigQueryHTTP
) -> None:
    producer = Namespace("team_a")
    faked.ensure(_product(producer))
    dataset = "dp_team_a"
    someone = {"role": "READER", "userByEmail": "auditor@example.com"}
    bq_fake.datasets[dataset]["access"].append(someone)
    held = faked.converge_grants(
        _product(Namespace("team_b")), [TargetGrant("p", producer, Namespace("x"))], [], lambda h: None
    ).held
    assert held is not None
    faked.converge_grants(_product(Namespace("team_b")), [], held, lambda h: None)
    assert bq_fake.datasets[dataset]["access"] == [{"role": "WRITER", "groupByEmail": "team-a@example.com"}, someone]

    gone = faked.clean_up(_product(producer), delete_data=False, held=[])
    assert gone.steps == ["access_removed", "dataset_labelled"]
    assert bq_fake.datasets[dataset]["access"] == [someone]  # entries we did not add stay
    assert bq_fake.datasets[dataset]["labels"]["deleted"] == "true"

    assert faked.clean_up(_product(producer), delete_data=True, held=[]).steps == ["dataset_deleted"]
    assert dataset not in bq_fake.datasets
