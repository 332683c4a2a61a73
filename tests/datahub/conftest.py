"""Real DataHub Actions pipelines, a real PostgreSQL queue and tenant, the real engine; DataHub's GMS stood in.

``Harness`` holds a stand-in GMS with the dataset ``shop.public.customers`` and its schema, a tenant database with
the table, and runs pipelines (a JSON-lines source of real event shapes) and the ``datahub`` queue's worker.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import psycopg
import pytest

# The Actions framework's source registry imports a module that calls logging.basicConfig(level=INFO) at import:
# a stderr handler on the root logger for the rest of the session. Undo it (the CLI replaces it by JSON logging).
_root = logging.getLogger()
_handlers, _level = list(_root.handlers), _root.level
pytest.importorskip("datahub_actions", reason="the datahub extra is not installed")

from datahub.ingestion.graph.client import DataHubGraph  # noqa: E402
from datahub.ingestion.graph.config import DatahubClientConfig  # noqa: E402
from datahub.metadata.schema_classes import (  # noqa: E402
    EditableSchemaFieldInfoClass,
    EditableSchemaMetadataClass,
    GlobalTagsClass,
    OtherSchemaClass,
    SchemaFieldClass,
    SchemaFieldDataTypeClass,
    SchemaMetadataClass,
    StringTypeClass,
    TagAssociationClass,
)
from datahub_actions.pipeline.pipeline import Pipeline  # noqa: E402

from provisioner.datahub import worker  # noqa: E402
from provisioner.datahub.config import TokenizeActionConfig  # noqa: E402
from provisioner.testing import datahub_events  # noqa: E402  (registers the jsonl source)
from provisioner.testing.datahub_gms import DataHubGMS  # noqa: E402
from provisioner.tokenize import Tenants, TokenFormat, TokenizeOptions  # noqa: E402

_root.handlers[:] = _handlers
_root.setLevel(_level)

pytestmark = pytest.mark.datahub

DATASET = "urn:li:dataset:(urn:li:dataPlatform:postgres,shop.public.customers,PROD)"
TAG = "urn:li:tag:tokenize-now"
KEY = "test-key-0123456789"
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "contract-samples" / "datahub" / "events.json"
ROWS = [("ann@example.com", "+32 470 00 00 01", "Ann"), ("bob@example.com", None, "Bob"), (None, "+32 3 000", "Cy")]


def sample(name: str, **event: Any) -> dict[str, Any]:
    """An enveloped event of contract-samples/datahub/events.json, with ``event`` fields replaced."""
    data = copy.deepcopy(json.loads(SAMPLES.read_text())[name])
    data["event"].update(event)
    return data


def field_event(field: str, time: int = 1_700_000_000_000, **event: Any) -> dict[str, Any]:
    """The UI's field tag event on ``field`` of the dataset."""
    urn = f"urn:li:schemaField:({DATASET},{field})"
    params = {"fieldPath": field, "parentUrn": urn, "tagUrn": TAG}
    return sample(
        "field_tag_add_via_ui_editableSchemaMetadata",
        entityUrn=urn,
        parameters=params,
        auditStamp={"time": time, "actor": "urn:li:corpuser:jdoe"},
        **event,
    )


def tags(*names: str) -> GlobalTagsClass | None:
    return GlobalTagsClass(tags=[TagAssociationClass(tag=f"urn:li:tag:{n}") for n in names]) if names else None


def schema(field_tags: Mapping[str, tuple[str, ...]]) -> SchemaMetadataClass:
    return SchemaMetadataClass(
        schemaName="shop.public.customers",
        platform="urn:li:dataPlatform:postgres",
        version=0,
        hash="",
        platformSchema=OtherSchemaClass(rawSchema=""),
        fields=[
            SchemaFieldClass(
                fieldPath=name,
                type=SchemaFieldDataTypeClass(type=StringTypeClass()),
                nativeDataType="text",
                globalTags=tags(*names),
            )
            for name, names in field_tags.items()
        ],
    )


def editable(field_tags: Mapping[str, tuple[str, ...]]) -> EditableSchemaMetadataClass:
    return EditableSchemaMetadataClass(
        editableSchemaFieldInfo=[
            EditableSchemaFieldInfoClass(fieldPath=name, globalTags=tags(*names)) for name, names in field_tags.items()
        ]
    )


class Harness:
    """A GMS stand-in, the provisioner's database, a tenant database, and the pipeline and worker between them."""

    def __init__(self, gms: DataHubGMS, database_url: str, tenant_url: str, tmp: Path) -> None:
        self.gms = gms
        self.database_url = database_url
        self.tenant_url = tenant_url
        self.tmp = tmp
        self.config: dict[str, Any] = {
            "tenants": [{"platform": "postgres", "database": "shop", "schema": "public", "tenant": "t1"}],
            "database_url": database_url,
            "emit_attempts": 1,
        }
        self.tenants: dict[str, dict[str, str]] = {"t1": {"DSN": tenant_url}}
        self.max_attempts = 1
        self.pipelines: list[Pipeline] = []

    def pipeline_config(self, events: list[dict[str, Any]]) -> dict[str, Any]:
        path = self.tmp / f"events-{len(self.pipelines)}.jsonl"
        path.write_text("".join(json.dumps(e) + "\n" for e in events))
        return {
            "name": "tokenize-now",
            **datahub_events.tag_added_source(path, TAG),
            "action": {"type": "provisioner.datahub:TokenizeAction", "config": self.config},
            "datahub": {"server": self.gms.url},
            "options": {"failure_mode": "THROW", "failed_events_dir": str(self.tmp / "failed")},
        }

    def send(self, *events: dict[str, Any]) -> Pipeline:
        """Run a real Actions pipeline over ``events`` (the JSON-lines source ends with them)."""
        pipeline = Pipeline.create(self.pipeline_config(list(events)))
        self.pipelines.append(pipeline)
        try:
            pipeline.run()
        finally:
            pipeline.close()
        return pipeline

    def graph(self) -> DataHubGraph:
        return DataHubGraph(DatahubClientConfig(server=self.gms.url, timeout_sec=5, retry_max_times=0))

    def app(self) -> Any:
        return worker.build_app(
            database_url=self.database_url,
            graph=self.graph(),
            config=TokenizeActionConfig.model_validate(self.config),
            tenants=Tenants.from_mapping(self.tenants),
            options=TokenizeOptions(format=TokenFormat(), key=KEY, lock_timeout_ms=1000),
            max_attempts=self.max_attempts,
            backoff_seconds=0,
        )

    def work(self) -> None:
        """Run the datahub queue's jobs until none is left."""
        asyncio.run(worker.run_worker(self.app(), wait=False, install_signal_handlers=False))

    def handler(self) -> Any:
        from provisioner.datahub.handler import DatasetTokenizer

        return DatasetTokenizer(
            database_url=self.database_url,
            graph=self.graph(),
            config=TokenizeActionConfig.model_validate(self.config),
            tenants=Tenants.from_mapping(self.tenants),
            options=TokenizeOptions(format=TokenFormat(), key=KEY, lock_timeout_ms=1000),
        )

    # -- what a user checks --------------------------------------------------------------------------------

    def table(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.tenant_url) as conn:
            return conn.execute("SELECT email, phone, name FROM public.customers ORDER BY id").fetchall()

    def snapshot(self) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.tenant_url) as conn:
            return conn.execute("SELECT ctid::text, xmin::text, c.* FROM public.customers c ORDER BY id").fetchall()

    def jobs(self) -> list[tuple[str, str, dict[str, Any]]]:
        with psycopg.connect(self.database_url) as conn:
            return conn.execute(
                "SELECT task_name, status::text, args FROM procrastinate_jobs"
                " WHERE task_name = 'tokenize_dataset' ORDER BY id"
            ).fetchall()

    def run_records(self) -> list[Any]:
        from provisioner.tokenize import RunRecorder

        return RunRecorder(self.database_url).last(50)

    def dpi_urns(self) -> list[str]:
        return sorted({p.entity_urn for p in self.gms.writes(aspect_name="dataProcessInstanceRunEvent")})

    def properties(self, dpi_urn: str) -> dict[str, str]:
        written = self.gms.writes(entity_urn=dpi_urn, aspect_name="dataProcessInstanceProperties")
        return dict(written[-1].value.get("customProperties") or {})


@pytest.fixture
def gms() -> Iterator[DataHubGMS]:
    with DataHubGMS() as server:
        server.put(DATASET, schema({"id": (), "email": ("pii-email",), "phone": ("pii-phone",), "name": ()}))
        yield server


@pytest.fixture
def harness(gms: DataHubGMS, pg_url: str, pg_empty_url: str, tmp_path: Path) -> Harness:
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.customers (id int PRIMARY KEY, email text, phone text, name text)")
        for i, row in enumerate(ROWS, start=1):
            conn.execute("INSERT INTO public.customers VALUES (%s, %s, %s, %s)", (i, *row))
    return Harness(gms, pg_url, pg_empty_url, tmp_path)
