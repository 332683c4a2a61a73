"""The worker's side: run one queued request on the shared engine and report it to DataHub; repair lost events.

A ``tokenize_dataset`` job (dataset urn, stamp) goes:

1. Its row says COMPLETE: only the report is missing (DataHub was unreachable at the end), so post it again from the
   row. Nothing is tokenized twice and the counts DataHub shows are those of the run.
2. The run is reported STARTED (DataProcessInstance, ``report`` module); the dataset's tenant is found from the
   plugin config; the columns tagged ``pii-*`` are read from DataHub (``columns`` module); the engine runs (one
   transaction per table, records in ``tokenize_runs``, logs ``run.started`` / ``tokenize.success`` /
   ``tokenize.error`` with the dataset urn added).
3. The result is written to the request row first, then posted: properties with the counts and the error, and
   COMPLETE with SUCCESS or FAILURE. If DataHub cannot take it, the job fails retryably and its next attempt is
   step 1; the lost-event scan also posts reports that are still missing.

Every failure (no tenant rule, no PII column, a column the table lacks, missing privileges, an unreachable tenant,
an unreachable DataHub) ends the run as FAILURE with its message, in the local record and, as soon as DataHub
answers, on the dataset. Failures that may pass (DataHub or the tenant unreachable) are marked retryable: the scan
runs them again.
"""

from __future__ import annotations

import contextvars
import logging
import time
from collections.abc import Mapping
from typing import Any

from psycopg_pool import ConnectionPool

from provisioner.datahub.columns import datahub_error, pii_columns, read_field_tags
from provisioner.datahub.config import DatasetName, TokenizeActionConfig
from provisioner.datahub.events import TokenizeRequest
from provisioner.datahub.queue import RequestQueue
from provisioner.datahub.report import RunReporter, run_instance
from provisioner.errors import InvalidName, PermanentError, ProvisionerError, TemporaryError, classify
from provisioner.logs import log_event
from provisioner.names import SqlName
from provisioner.persistence.datahub import DatahubRuns
from provisioner.persistence.records import DatahubRun
from provisioner.tokenize import (
    RunRecorder,
    TableTarget,
    Tenants,
    TokenizeOptions,
    TokenizePolicy,
    plan,
    run,
)
from provisioner.tokenize.recording import recorded_run

log = logging.getLogger(__name__)

#: Fields added to the engine's own log events (run.started, tokenize.success, tokenize.error) during a run.
_LOG_CONTEXT: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "datahub_log_context", default=None
)


class _AddDatasetFields(logging.Filter):
    """Adds the dataset urn (and trigger) of the run in progress to the engine's structured events."""

    def filter(self, record: logging.LogRecord) -> bool:
        extra = _LOG_CONTEXT.get()
        if extra and isinstance(getattr(record, "fields", None), dict):
            record.fields = {**extra, **record.fields}  # type: ignore[attr-defined]
        return True


_ENGINE_LOG = logging.getLogger("provisioner.tokenize")
if not any(isinstance(f, _AddDatasetFields) for f in _ENGINE_LOG.filters):
    _ENGINE_LOG.addFilter(_AddDatasetFields())


class ReportPending(TemporaryError):
    """The run is recorded here but DataHub has not accepted its end yet: the job is retried to post it."""


class _Recorder(RunRecorder):
    """The engine's run recorder, remembering the run id and adding where the request came from to the record."""

    def __init__(self, conninfo: str | ConnectionPool, detail: Mapping[str, Any]) -> None:
        super().__init__(conninfo)
        self.run_id: str | None = None
        self._detail = dict(detail)

    def start(self, **kwargs: Any) -> None:
        self.run_id = kwargs["run_id"]
        super().start(**kwargs)

    def finish(self, **kwargs: Any) -> None:
        kwargs["detail"] = {**self._detail, **(kwargs.get("detail") or {})}
        super().finish(**kwargs)


def _now_ms() -> int:
    return int(time.time() * 1000)


class DatasetTokenizer:
    """The job handlers of the ``datahub`` queue: ``tokenize_dataset`` and the periodic ``scan``.

    Takes plain parts (``worker.py`` builds them): the provisioner's database, the DataHub graph client (any
    object with the SDK's ``get_aspect``, ``get_entity_raw``, ``get_urns_by_filter`` and ``emit``), the tenants
    and token options of the provisioner's settings, and the plugin config. The request rows and run records borrow
    from ``pool`` (the process's sync pool) when given, else connect to ``database_url``.
    """

    def __init__(
        self,
        *,
        database_url: str,
        graph: Any,
        config: TokenizeActionConfig,
        tenants: Tenants,
        options: TokenizeOptions,
        reporter: RunReporter | None = None,
        pool: ConnectionPool | None = None,
    ) -> None:
        self.database_url = database_url
        self._records: str | ConnectionPool = pool if pool is not None else database_url
        self.graph = graph
        self.config = config
        self.tenants = tenants
        self.options = options
        self.runs = DatahubRuns(self._records)
        self.reporter = reporter or RunReporter(graph, attempts=config.emit_attempts)

    # -- the job ---------------------------------------------------------------------------------------------

    def tokenize_dataset(self, dataset_urn: str, stamp: int) -> None:
        """Run (or finish reporting) the request (dataset_urn, stamp); ReportPending while DataHub lacks its end."""
        row = self.runs.get(dataset_urn, stamp)
        if row is None:
            log_event(log, "datahub.request_missing", level=logging.WARNING, dataset_urn=dataset_urn, stamp=stamp)
            return
        if row.state == "complete":
            if not row.reported:
                self._report_end(row)
            return
        self._run(row)

    def _run(self, row: DatahubRun) -> None:
        started_ms = _now_ms()
        name = DatasetName.parse(row.dataset_urn)
        tenant: str | None = None
        failure: ProvisionerError | None = None
        try:
            tenant = self.config.tenant_for(name)
        except PermanentError as exc:
            failure = exc
        detail: dict[str, Any] = {
            "dataset_urn": row.dataset_urn,
            "stamp": row.stamp,
            "trigger": row.origin,
            "actor": row.actor,
            "tenant": tenant,
            "dry_run": self.config.dry_run,
            "started_ms": started_ms,
        }
        instance = run_instance(row.dataset_urn, row.stamp, self.config.env, self._properties(detail, row.fields))
        row = self.runs.start(row.dataset_urn, row.stamp, str(instance.urn), detail)
        detail["fields"] = list(row.fields) if row.fields is not None else None
        detail["dpi_urn"] = str(instance.urn)
        token = _LOG_CONTEXT.set({"dataset_urn": row.dataset_urn, "dpi_urn": str(instance.urn), "trigger": row.origin})
        try:
            policy: TokenizePolicy | None = None
            try:
                self.reporter.started(instance, started_ms)
                if failure is None:
                    columns = pii_columns(read_field_tags(self.graph, row.dataset_urn), row.fields, row.dataset_urn)
                    policy = self._policy(name, tenant or "", columns)
            except ProvisionerError as exc:
                failure = failure or exc
            if policy is None or failure is not None:
                self._fail_before_run(row, detail, failure or PermanentError("the run could not be prepared"))
            else:
                self._execute(row, detail, policy)
        finally:
            _LOG_CONTEXT.reset(token)
        done = self.runs.get(row.dataset_urn, row.stamp)
        assert done is not None
        self._report_end(done)

    def _policy(self, name: DatasetName, tenant: str, columns: list[str]) -> TokenizePolicy:
        try:
            target = TableTarget(SqlName(name.schema), SqlName(name.table), tuple(SqlName(c) for c in columns))
        except InvalidName as exc:
            raise PermanentError(f"{name.urn}: {exc}") from None
        return TokenizePolicy(
            tenant=tenant,
            tables=(target,),
            max_columns=self.config.max_columns,
            name=f"datahub:{name.urn}",
        )

    def _execute(self, row: DatahubRun, detail: dict[str, Any], policy: TokenizePolicy) -> None:
        recorder = _Recorder(self._records, {"source": "datahub", **_public(detail)})
        result = run(plan(policy, self.options), dry_run=self.config.dry_run, connect=self.tenants, recorder=recorder)
        detail.update(
            columns=[f"{t.name}.{c}" for t in policy.tables for c in t.columns],
            rows_by_column=dict(result.rows_by_column),
            total_rows=result.total_rows,
            error=result.error,
            run_id=result.run_id,
            finished_ms=_now_ms(),
        )
        self.runs.complete(
            row.dataset_urn,
            row.stamp,
            result=result.status,
            retryable=result.retryable,
            run_id=result.run_id,
            detail=detail,
        )

    def _fail_before_run(self, row: DatahubRun, detail: dict[str, Any], failure: ProvisionerError) -> None:
        """A run that ends before the engine starts still gets a local record, a log line and a FAILURE report."""
        error = str(failure)
        tenant = detail.get("tenant") or "-"
        name = DatasetName.parse(row.dataset_urn)
        with recorded_run(
            RunRecorder(self._records),
            tenant=tenant,
            policy=f"datahub:{row.dataset_urn}",
            dry_run=self.config.dry_run,
            tables=[f"{name.schema}.{name.table}"],
        ) as opened:
            opened.close("FAILURE", error=error, detail={"source": "datahub", **_public(detail)})
        run_id = opened.run_id
        detail.update(rows_by_column={}, total_rows=0, error=error, run_id=run_id, finished_ms=_now_ms())
        retryable = classify(failure).temporary  # the error policy: a failure declared to pass runs again
        log_event(
            log,
            "tokenize.error",
            level=logging.ERROR,
            run_id=run_id,
            tenant=tenant,
            dry_run=self.config.dry_run,
            error=error,
            retryable=retryable,
            rows_committed=0,
        )
        self.runs.complete(
            row.dataset_urn, row.stamp, result="FAILURE", retryable=retryable, run_id=run_id, detail=detail
        )

    def _properties(self, detail: Mapping[str, Any], fields: tuple[str, ...] | None) -> dict[str, Any]:
        props: dict[str, Any] = {
            "dataset": detail.get("dataset_urn"),
            "tenant": detail.get("tenant") or "-",
            "dry_run": bool(detail.get("dry_run")),
            "trigger": detail.get("trigger"),
            "actor": detail.get("actor"),
            "fields": list(fields) if fields is not None else "every pii-* column",
        }
        if "rows_by_column" in detail:
            for column, rows in dict(detail.get("rows_by_column") or {}).items():
                props[f"rows:{column}"] = rows
            props["total_rows"] = detail.get("total_rows", 0)
            props["error"] = detail.get("error")
            props["provisioner_run_id"] = detail.get("run_id")
        return props

    def _report_end(self, row: DatahubRun) -> None:
        detail = dict(row.detail)
        url = None
        if self.config.external_url_base and detail.get("run_id"):
            url = f"{self.config.external_url_base.rstrip('/')}/{detail['run_id']}"
        instance = run_instance(row.dataset_urn, row.stamp, self.config.env, self._properties(detail, row.fields), url)
        started = int(detail.get("started_ms") or _now_ms())
        ended = int(detail.get("finished_ms") or _now_ms())
        try:
            self.reporter.ended(instance, started, ended, success=row.result == "SUCCESS")
        except ProvisionerError as exc:
            log_event(
                log,
                "datahub.report_pending",
                level=logging.WARNING,
                dataset_urn=row.dataset_urn,
                dpi_urn=str(instance.urn),
                result=row.result,
                error=str(exc),
            )
            raise ReportPending(
                f"run {detail.get('run_id')} of {row.dataset_urn} ended {row.result} and is recorded, but DataHub "
                f"did not accept its report yet ({exc}); it will be posted again"
            ) from None
        self.runs.mark_reported(row.dataset_urn, row.stamp)
        log_event(
            log,
            "datahub.run_reported",
            dataset_urn=row.dataset_urn,
            dpi_urn=str(instance.urn),
            result=row.result,
            total_rows=detail.get("total_rows", 0),
        )

    # -- the lost-event scan ---------------------------------------------------------------------------------

    def scan(self) -> int:
        """Queue the datasets tagged ``tag`` that have no run since the tag was set, and reports still missing.

        DataHub is searched (``get_urns_by_filter`` over ``tags``, ``fieldTags`` and ``editedFieldTags``); the time
        the tag was set is the write time of the aspect that carries it (what its event's audit stamp says). A
        dataset whose run since then succeeded, or still waits or runs, is left alone; one whose run failed in a way
        that may pass runs again. Returns how many jobs were queued.
        """
        tag = self.config.tag
        rule = [{"and": [{"field": f, "condition": "EQUAL", "values": [tag]}]} for f in _TAG_FIELDS]
        queue = RequestQueue(self.database_url)
        queued = 0
        try:
            try:
                urns = list(self.graph.get_urns_by_filter(entity_types=["dataset"], extra_or_filters=rule))
            except Exception as exc:
                raise datahub_error(exc, f"search the datasets tagged {tag}") from None
            for urn in urns:
                queued += self._scan_dataset(queue, urn)
            for row in self.runs.unreported():
                request = TokenizeRequest(row.dataset_urn, row.stamp, None, row.actor)
                queued += queue.enqueue(request, origin="scan") is not None
        finally:
            queue.close()
        log_event(log, "datahub.scan", datasets=len(urns), queued=queued)
        return queued

    def _scan_dataset(self, queue: RequestQueue, urn: str) -> int:
        try:
            DatasetName.parse(urn)
            raw = self.graph.get_entity_raw(urn, aspects=list(_TAG_ASPECTS))
        except ProvisionerError as exc:
            log_event(log, "datahub.scan_skipped", level=logging.WARNING, dataset_urn=urn, error=str(exc))
            return 0
        except Exception as exc:
            raise datahub_error(exc, f"read the tags of {urn}") from None
        when, fields, whole = _tagged(raw.get("aspects") or {}, self.config.tag)
        if when is None:
            return 0
        for existing in self.runs.for_dataset(urn):
            if existing.stamp >= when and (existing.state != "complete" or existing.result == "SUCCESS"):
                return 0
        targets: list[str | None] = [None] if whole else list(fields)
        jobs = [queue.enqueue(TokenizeRequest(urn, when, field, "scan"), origin="scan") for field in targets]
        if any(j is not None for j in jobs):
            log_event(log, "datahub.scan_queued", dataset_urn=urn, stamp=when, fields=None if whole else fields)
            return 1
        return 0


_TAG_FIELDS = ("tags", "fieldTags", "editedFieldTags")
_TAG_ASPECTS = ("globalTags", "schemaMetadata", "editableSchemaMetadata")


def _tagged(aspects: Mapping[str, Any], tag: str) -> tuple[int | None, list[str], bool]:
    """From an entitiesV2 answer: when the tag was last written, the fields carrying it, and whether the dataset does.

    Aspect values are rest.li JSON; only the tag urns and field paths are read, so no union decoding is needed.
    """
    when: int | None = None
    fields: list[str] = []
    whole = False

    def seen(aspect: Mapping[str, Any]) -> None:
        nonlocal when
        created = (aspect.get("created") or {}).get("time")
        if created is not None:
            when = max(when or 0, int(created))

    def has(tags: Any) -> bool:
        return any(t.get("tag") == tag for t in (tags or {}).get("tags") or [])

    dataset_tags = aspects.get("globalTags")
    if dataset_tags and has(dataset_tags.get("value")):
        whole = True
        seen(dataset_tags)
    for name, key in (("schemaMetadata", "fields"), ("editableSchemaMetadata", "editableSchemaFieldInfo")):
        aspect = aspects.get(name)
        if not aspect:
            continue
        hits = [f["fieldPath"] for f in (aspect.get("value") or {}).get(key) or [] if has(f.get("globalTags"))]
        if hits:
            fields.extend(h for h in hits if h not in fields)
            seen(aspect)
    return when, fields, whole


def _public(detail: Mapping[str, Any]) -> dict[str, Any]:
    """What of a request goes in the local run record's detail (no counts: the record has its own)."""
    keys = ("dataset_urn", "stamp", "trigger", "actor", "fields", "dpi_urn")
    return {k: detail[k] for k in keys if k in detail}
