"""``TokenizeAction``: the DataHub Actions plugin. ``act()`` records and queues; a worker does the work.

A pipeline YAML names it in ``action.type: "provisioner.datahub:TokenizeAction"`` (DataHub's plugin registry
imports it by that path). ``act()`` must return within milliseconds: the Kafka source's consumer is dropped from
its group when a poll waits longer than ``max.poll.interval.ms``, and every source delivers at least once. So it
parses the event, makes one call to the provisioner's PostgreSQL (``provisioner_datahub_enqueue``: the request
keyed by dataset urn and audit stamp, and a job in the ``datahub`` queue), and returns True once that is committed:
the pipeline acknowledges the event to its source right after act() returns (Kafka stores its offset, pg_queue
acknowledges the message), one event after the other, and no source has a later, selective acknowledgement (Kafka's
offsets are cumulative). So act() cannot acknowledge in batches, and a durable act() costs at least one WAL flush
(``synchronous_commit: on``, the default); docs/datahub.md and bench/RESULTS.md have the figures.

When PostgreSQL cannot be reached, ``act()`` raises: with ``options.failure_mode: THROW`` (as the shipped pipelines
set) the pipeline stops without acknowledging the event, and it is delivered again after a restart. Events that
are not ``tokenize-now`` tag additions are acknowledged and ignored; one whose urn cannot be read is logged and
acknowledged (a retry cannot make it readable).
"""

from __future__ import annotations

import logging
from typing import Any

from datahub_actions.action.action import Action
from datahub_actions.event.event_envelope import EventEnvelope
from datahub_actions.pipeline.pipeline_context import PipelineContext

from provisioner.datahub.config import TokenizeActionConfig
from provisioner.datahub.events import request_from
from provisioner.datahub.queue import RequestQueue
from provisioner.errors import InvalidInput, SettingsError
from provisioner.logs import log_event

log = logging.getLogger(__name__)


def database_url_for(config: TokenizeActionConfig) -> str:
    """The provisioner's database: the plugin config's ``database_url``, else PROVISIONER_DATABASE_URL.

    ``provisioner datahub-actions`` puts the site's URL in the config (with its Lakebase login when
    PROVISIONER_DATABASE_AUTH=databricks-oauth: a password file that process keeps current); DataHub's own
    ``datahub actions`` runs the plugin without a site, so it cannot log in with Lakebase tokens.
    """
    if config.database_url:
        return config.database_url
    from provisioner.settings import Settings

    settings = Settings.from_env()
    if settings.database_auth == "databricks-oauth":
        raise SettingsError(
            "PROVISIONER_DATABASE_AUTH=databricks-oauth: run the pipeline with `provisioner datahub-actions -c "
            "<pipeline.yaml>` (it keeps the Lakebase login fresh), not with `datahub actions`"
        )
    if not settings.database_url:
        raise SettingsError(
            "the DataHub plugin needs the provisioner's PostgreSQL: set PROVISIONER_DATABASE_URL or "
            "action.config.database_url (the embedded database serves one process only)"
        )
    return settings.database_url


class TokenizeAction(Action):
    """Queues a tokenization for every ``tokenize-now`` tag added to a dataset or a column."""

    def __init__(self, config: TokenizeActionConfig, ctx: PipelineContext, queue: RequestQueue) -> None:
        self.config = config
        self.ctx = ctx
        self.queue = queue
        self.queued = 0
        self.absorbed = 0

    @classmethod
    def create(cls, config_dict: dict[str, Any], ctx: PipelineContext) -> TokenizeAction:
        """Validate the config (pydantic, DataHub's ConfigModel) and open the queue connection lazily."""
        config = TokenizeActionConfig.model_validate(config_dict)
        return cls(config, ctx, RequestQueue(database_url_for(config), synchronous_commit=config.synchronous_commit))

    def act(self, event: EventEnvelope) -> bool:
        """Queue the request the event carries and return True once it is committed; raise when it cannot be queued.

        Committed before returning because the pipeline acknowledges the event to its source as soon as act()
        returns True (there is no later acknowledgement): with ``synchronous_commit: on`` (the default) an
        acknowledged event is on disk in the queue.
        """
        try:
            request = request_from(event, self.config.tag)
        except InvalidInput as exc:
            log_event(log, "datahub.event_skipped", level=logging.WARNING, error=str(exc))
            return True
        if request is None:
            return True
        job_id = self.queue.enqueue(request)
        if job_id is None:
            self.absorbed += 1
        else:
            self.queued += 1
        log_event(
            log,
            "datahub.event_queued" if job_id is not None else "datahub.event_absorbed",
            level=logging.DEBUG,
            dataset_urn=request.dataset_urn,
            field_path=request.field_path,
            stamp=request.stamp,
            job_id=job_id,
        )
        return True

    def close(self) -> None:
        """Close the queue connection."""
        self.queue.close()
