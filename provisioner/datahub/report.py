"""A run as DataHub shows it: a DataProcessInstance on the dataset (its Runs tab), STARTED then COMPLETE.

Built with the SDK's helpers (``DataProcessInstance.emit_process_start`` / ``emit_process_end``) with
``materialize_iolets=False``: the dataset is named as the run's output, but no aspect of the dataset is written (no
``datasetKey`` upsert that would create a dataset DataHub does not know). The instance belongs to the DataJob
``urn:li:dataJob:(urn:li:dataFlow:(tokenize,provisioner,<env>),<dataset name>)``; its id is derived from the request
(dataset urn and audit stamp), so a replay or a retry upserts the same run rather than adding one.

Properties: dataset, tenant, dry_run, trigger, actor, fields, and at the end rows:<column> per column, total_rows,
error and the provisioner's run id; ``external_url_base`` adds the link ``<base>/<run id>``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from datahub.api.entities.datajob import DataFlow, DataJob
from datahub.api.entities.dataprocess.dataprocess_instance import DataProcessInstance, InstanceRunResult
from datahub.utilities.urns.dataset_urn import DatasetUrn

from provisioner.datahub.columns import datahub_error
from provisioner.errors import PermanentError, TemporaryError, classify
from provisioner.logs import log_event

log = logging.getLogger(__name__)

ORCHESTRATOR = "tokenize"
FLOW_ID = "provisioner"
RESULT_TYPE = "tokenize"


def run_instance(
    dataset_urn: str, stamp: int, env: str, properties: Mapping[str, Any], url: str | None = None
) -> DataProcessInstance:
    """The DataProcessInstance of the request (dataset urn, stamp): the same urn on every call."""
    dataset = DatasetUrn.from_string(dataset_urn)
    flow = DataFlow(orchestrator=ORCHESTRATOR, id=FLOW_ID, env=env)
    job = DataJob(id=dataset.name, flow_urn=flow.urn)
    instance = DataProcessInstance.from_datajob(job, id=f"tokenize {dataset.name} @{stamp}")
    instance.outlets = [dataset]
    instance.properties = {k: _text(v) for k, v in properties.items() if v is not None}
    instance.url = url
    return instance


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return str(value)


class RunReporter:
    """Posts a run's start and end through an emitter (the graph client), retrying the end a few times."""

    def __init__(
        self,
        emitter: Any,
        *,
        attempts: int = 3,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._emitter = emitter
        self._attempts = attempts
        self._backoff = backoff_seconds
        self._sleep = sleep

    def started(self, instance: DataProcessInstance, started_ms: int) -> None:
        """STARTED, with the instance's properties and its relation to the job and the dataset; typed errors."""
        try:
            instance.emit_process_start(
                self._emitter, started_ms, attempt=1, emit_template=True, materialize_iolets=False
            )
        except Exception as exc:  # requests' errors, the SDK's OperationalError
            raise datahub_error(exc, f"record the start of run {instance.urn}") from None

    def ended(self, instance: DataProcessInstance, started_ms: int, ended_ms: int, success: bool) -> None:
        """Properties (now with counts and error), then COMPLETE with SUCCESS or FAILURE; retried, then typed."""
        result = InstanceRunResult.SUCCESS if success else InstanceRunResult.FAILURE
        error: TemporaryError | PermanentError | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                for mcp in instance.generate_mcp(created_ts_millis=started_ms, materialize_iolets=False):
                    self._emitter.emit(mcp)
                instance.emit_process_end(
                    self._emitter,
                    ended_ms,
                    result,
                    result_type=RESULT_TYPE,
                    attempt=1,
                    start_timestamp_millis=started_ms,
                )
                return
            except Exception as exc:
                error = datahub_error(exc, f"record the end of run {instance.urn}")
                log_event(
                    log,
                    "datahub.report_failed",
                    level=logging.WARNING,
                    dpi_urn=str(instance.urn),
                    attempt=attempt,
                    error=str(error),
                )
                if not classify(error).retry:  # the error policy: DataHub refused, posting again cannot help
                    break
                if attempt < self._attempts:
                    self._sleep(self._backoff * 2 ** (attempt - 1))
        assert error is not None
        raise error
