"""Putting the plugin together from plain parts: the DataHub graph client, the worker's app, the pipeline.

``provisioner datahub-actions`` (cli/datahub_actions.py) turns the provisioner's Settings and a pipeline YAML into
these parts; tests build them by hand. Nothing here reads the environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import procrastinate
from datahub.ingestion.graph.client import DataHubGraph
from datahub.ingestion.graph.config import DatahubClientConfig
from psycopg_pool import ConnectionPool

from provisioner import jobs
from provisioner.datahub.config import TokenizeActionConfig
from provisioner.datahub.handler import DatasetTokenizer
from provisioner.errors import SettingsError
from provisioner.tokenize import Tenants, TokenizeOptions

ACTION_TYPES = ("provisioner.datahub:TokenizeAction", "provisioner.datahub.TokenizeAction")


@dataclass(frozen=True)
class PipelineParts:
    """What a pipeline YAML says that the worker needs too: the plugin config and the DataHub connection."""

    action: TokenizeActionConfig
    datahub: DatahubClientConfig


def pipeline_parts(pipeline: Mapping[str, Any]) -> PipelineParts:
    """The plugin config and the ``datahub:`` section of a pipeline; SettingsError naming what is missing."""
    action = pipeline.get("action") or {}
    if action.get("type") not in ACTION_TYPES:
        raise SettingsError(f"the pipeline's action.type must be {ACTION_TYPES[0]!r}, got {action.get('type')!r}")
    if not pipeline.get("datahub"):
        raise SettingsError(
            "the pipeline has no 'datahub:' section (server, token): the worker reads schemas and reports runs there"
        )
    try:
        config = TokenizeActionConfig.model_validate(action.get("config") or {})
        client = DatahubClientConfig.model_validate(pipeline["datahub"])
    except ValueError as exc:  # pydantic's ValidationError
        raise SettingsError(f"the pipeline's configuration is invalid: {exc}") from None
    return PipelineParts(config, client)


def graph_for(client: DatahubClientConfig) -> DataHubGraph:
    """The SDK's graph client (reads aspects, searches, emits the runs)."""
    return DataHubGraph(client)


def build_app(
    *,
    database_url: str,
    graph: Any,
    config: TokenizeActionConfig,
    tenants: Tenants,
    options: TokenizeOptions,
    max_attempts: int,
    backoff_seconds: float = 2.0,
    metrics: jobs.JobMetrics | None = None,
    pool: ConnectionPool | None = None,
) -> procrastinate.App:
    """The ``datahub`` queue's procrastinate app over a ``DatasetTokenizer`` built from these parts (its rows and run
    records borrow from ``pool`` when given)."""
    unknown = sorted({rule.tenant for rule in config.tenants} - {*tenants.connectors, *tenants.executors})
    if unknown:
        raise SettingsError(
            f"the plugin's tenant rules name {', '.join(unknown)}, which PROVISIONER_TENANT_<ID>_* does not define"
        )
    handler = DatasetTokenizer(
        database_url=database_url, graph=graph, config=config, tenants=tenants, options=options, pool=pool
    )
    return jobs.build_datahub_app(
        database_url,
        handler,
        max_attempts=max_attempts,
        scan_seconds=config.scan_seconds,
        backoff_seconds=backoff_seconds,
        metrics=metrics,
    )


async def run_worker(app: procrastinate.App, *, concurrency: int = 1, wait: bool = True, **kwargs: Any) -> None:
    """Run the ``datahub`` queue's jobs (``wait=False``: until it is empty)."""
    await jobs.run_worker(
        app, concurrency=concurrency, wait=wait, queues=[jobs.DATAHUB_QUEUE], name="provisioner-datahub", **kwargs
    )
