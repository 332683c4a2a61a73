"""BigQuery as a provisioning target: a dataset per data product, its tables from schema files, read grants as
dataset access entries (``google-cloud-bigquery``, the optional extra ``provisioner[bigquery]``, imported lazily).

* Dataset ``<prefix>_<namespace as a SQL name>`` (``names.bigquery_dataset_id``) in the configured project and
  location, with labels (``managed-by``, ``product-id``, ``namespace``) and the portal's description. Created when
  missing; an existing dataset is never overwritten (its description, labels and data stay as they are).
* Tables from ``bigquery/<table>.json`` in the product's project, created when missing; an existing table only gains
  additive NULLABLE columns (the rule: ``bigquery_schema``). A change that would be destructive is reported.
* Principals: each product's team is one BigQuery principal, looked up by namespace in the configured mapping
  (``PROVISIONER_BIGQUERY_PRINCIPALS``). The product's own principal gets WRITER on its dataset; a consumer's gets
  READER on each producer dataset it may read.
* Access entries change by read-modify-write: read the dataset (and its etag), change the entries, write them back
  with ``If-Match: <etag>``. A 412 (someone else changed them meanwhile) reads again and retries.
* Deletion keeps the dataset (every access entry we added removed, labelled ``deleted=true``) unless data is to
  be deleted, which deletes the dataset with its tables.
* Credentials: Application Default Credentials (workload identity in production); never a key file. With an
  endpoint set (an emulator), anonymous credentials.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from provisioner.errors import SettingsError, TargetError, TargetUnavailable
from provisioner.logs import log_event, redact_text
from provisioner.names import Namespace, bigquery_dataset_id, bigquery_label
from provisioner.targets.base import HeldGrant, Remember, TargetGrant, TargetOutcome, TargetProduct
from provisioner.targets.bigquery_schema import columns_from_api, plan_change, read_schema_files

if TYPE_CHECKING:
    from google.cloud import bigquery

log = logging.getLogger(__name__)

#: How often an access-entry write is tried when another writer changed the dataset meanwhile (HTTP 412).
ACCESS_WRITE_ATTEMPTS = 5
CALL_SECONDS = 30.0  # one API call, its retries included
PROBE_SECONDS = 3.0
MANAGED_BY = "provisioner"
_ENTITY_TYPES = {"group": "groupByEmail", "user": "userByEmail", "serviceAccount": "userByEmail", "domain": "domain"}


@dataclass(frozen=True)
class BigQueryConfig:
    """The target's plain settings (built by the composition root from ``PROVISIONER_BIGQUERY_*``)."""

    project: str
    location: str = "US"
    dataset_prefix: str = "dp"
    endpoint: str | None = None  # an emulator's URL: anonymous credentials; None: Google's API with ADC
    principals: Mapping[str, str] = field(default_factory=dict)  # namespace -> "group:team@example.com"

    def dataset_id(self, namespace: Namespace) -> str:
        """The dataset of ``namespace``'s product."""
        return bigquery_dataset_id(self.dataset_prefix, namespace)

    def qualified(self, namespace: Namespace) -> str:
        """``<project>.<dataset>``, as ``.env`` files and queries name it."""
        return f"{self.project}.{self.dataset_id(namespace)}"


def build_client(config: BigQueryConfig) -> bigquery.Client:
    """A BigQuery client: ADC for Google's API, anonymous credentials for an emulator endpoint."""
    try:
        from google.cloud import bigquery
    except ImportError as exc:
        raise SettingsError(
            "PROVISIONER_TARGETS includes bigquery, but google-cloud-bigquery is not installed: "
            "pip install 'provisioner[bigquery]'"
        ) from exc
    if config.endpoint is None:
        return bigquery.Client(project=config.project, location=config.location)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=config.project,
        location=config.location,
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options=ClientOptions(api_endpoint=config.endpoint),
    )


def access_entry(role: str, principal: str) -> dict[str, str]:
    """The REST form of an access entry: ``{"role": "READER", "groupByEmail": "team@example.com"}``."""
    kind, _, who = principal.partition(":")
    return {"role": role, _ENTITY_TYPES[kind]: who}


def _same_entry(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    keys = set(a) | set(b)
    return all(str(a.get(k, "")).lower() == str(b.get(k, "")).lower() for k in keys)


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """google's exceptions as the provisioner's typed errors, with one line a person can act on."""
    from google.api_core import exceptions as gexc

    try:
        yield
    except (gexc.ServerError, gexc.TooManyRequests, gexc.RetryError) as exc:
        raise TargetUnavailable(f"BigQuery: {what}: {_message(exc)}") from exc
    except gexc.GoogleAPICallError as exc:
        raise TargetError(f"BigQuery: {what}: {_message(exc)}") from exc
    except (OSError, ConnectionError) as exc:
        raise TargetUnavailable(f"BigQuery: {what}: cannot reach the API: {_message(exc)}") from exc
    except Exception as exc:  # requests' and google-auth's own errors (no credentials, a lost connection)
        if type(exc).__module__.startswith(("requests", "urllib3", "google.auth")):
            raise TargetUnavailable(f"BigQuery: {what}: {_message(exc)}") from exc
        raise


def _message(exc: BaseException) -> str:
    text = " ".join(redact_text(str(exc)).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class BigQueryTarget:
    """Datasets, tables and dataset access entries in one Google Cloud project."""

    name = "bigquery"

    def __init__(
        self, config: BigQueryConfig, client: bigquery.Client | None = None, *, call_seconds: float = CALL_SECONDS
    ) -> None:
        self.config = config
        self._client = client
        self.call_seconds = call_seconds

    @property
    def _calls(self) -> dict[str, Any]:
        """Every API call's retry (the library's own, for 5xx and lost connections) bounded to ``call_seconds``:
        the library's default would keep a job retrying for ten minutes."""
        from google.cloud.bigquery import DEFAULT_RETRY

        return {"retry": DEFAULT_RETRY.with_timeout(self.call_seconds), "timeout": self.call_seconds}

    @property
    def client(self) -> bigquery.Client:
        """The BigQuery client, built on first use (the library is imported only then)."""
        if self._client is None:
            self._client = build_client(self.config)
        return self._client

    def principal(self, namespace: str) -> str | None:
        """The mapped principal of a product's team, or None."""
        return self.config.principals.get(str(namespace))

    # -- ensure ---------------------------------------------------------------------------------------------------
    def ensure(self, product: TargetProduct) -> TargetOutcome:
        """The dataset (created if missing, never overwritten), its tables, and WRITER for the product's team."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        out = TargetOutcome()
        cfg, client = self.config, self.client
        dataset_id = cfg.dataset_id(product.namespace)
        ref = bigquery.DatasetReference(cfg.project, dataset_id)
        with _translated(f"dataset {dataset_id}"):
            try:
                client.get_dataset(ref, **self._calls)
            except NotFound:
                dataset = bigquery.Dataset(ref)
                dataset.location = cfg.location
                dataset.description = product.description or None
                dataset.labels = self._labels(product)
                client.create_dataset(
                    dataset, exists_ok=True, **self._calls
                )  # another writer won the race: theirs stays
                out.step("dataset")
            owner = self.principal(product.namespace)
            if owner is not None and self._change_access(ref, add=[access_entry("WRITER", owner)], remove=[]):
                out.step("owner_access")
        self._ensure_tables(product, ref, out)
        out.env = {"BQ_PROJECT": cfg.project, "BQ_DATASET": dataset_id, "BQ_LOCATION": cfg.location}
        out.detail["dataset"] = f"{cfg.project}.{dataset_id}"
        if owner is None:
            out.waiting.append(
                f"no BigQuery principal for namespace {product.namespace!r} in PROVISIONER_BIGQUERY_PRINCIPALS: "
                "its team gets no WRITER entry"
            )
        return out

    def _labels(self, product: TargetProduct) -> dict[str, str]:
        return {
            "managed-by": MANAGED_BY,
            "product-id": bigquery_label(product.product_id),
            "namespace": bigquery_label(str(product.namespace)),
        }

    def _ensure_tables(self, product: TargetProduct, ref: bigquery.DatasetReference, out: TargetOutcome) -> None:
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        refused: list[str] = []
        for schema in read_schema_files(product.project_dir):
            if schema.problem is not None:
                refused.append(schema.problem)
                continue
            table_ref = ref.table(schema.table)
            wanted = [bigquery.SchemaField.from_api_repr(c.api_repr()) for c in schema.columns]
            with _translated(f"table {ref.dataset_id}.{schema.table}"):
                try:
                    table = self.client.get_table(table_ref, **self._calls)
                except NotFound:
                    self.client.create_table(bigquery.Table(table_ref, schema=wanted), exists_ok=True, **self._calls)
                    out.step(f"table:{schema.table}")
                    continue
                existing = columns_from_api([f.to_api_repr() for f in table.schema])
                change = plan_change(schema.table, existing, schema.columns)
                refused.extend(change.refused)
                if change.added:
                    table.schema = [
                        *table.schema,
                        *(bigquery.SchemaField.from_api_repr(c.api_repr()) for c in change.added),
                    ]
                    self.client.update_table(table, ["schema"], **self._calls)
                    out.step(f"columns_added:{schema.table}")
        if refused:
            out.detail["schema_refused"] = refused
            out.waiting.extend(refused)
            log_event(
                log,
                "bigquery.schema_refused",
                level=logging.WARNING,
                namespace=product.namespace,
                refused=refused,
            )

    # -- grants ---------------------------------------------------------------------------------------------------
    def converge_grants(
        self,
        consumer: TargetProduct,
        grants: Sequence[TargetGrant],
        held: Sequence[HeldGrant],
        remember: Remember,
    ) -> TargetOutcome:
        """READER for the consumer's principal on each granted producer's dataset; every other entry it held goes.

        Removals first, then ``remember`` with what will be held, then additions: a failure anywhere leaves no
        revoked entry in place, and no added entry unrecorded.
        """
        from google.cloud import bigquery

        out = TargetOutcome()
        cfg = self.config
        principal = self.principal(consumer.namespace)
        wanted: list[HeldGrant] = []
        if principal is None and grants:
            out.waiting.append(
                f"no BigQuery principal for consumer namespace {consumer.namespace!r}: add it to "
                "PROVISIONER_BIGQUERY_PRINCIPALS"
            )
        elif principal is not None:
            wanted = sorted(
                {HeldGrant(g.producer_id, cfg.dataset_id(g.producer_namespace), principal) for g in grants},
                key=lambda h: (h.resource, h.producer_id),
            )
        keep = set(wanted)
        for old in sorted(set(held) - keep, key=lambda h: h.resource):
            ref = bigquery.DatasetReference(cfg.project, old.resource)
            if self._change_access(ref, add=[], remove=[access_entry("READER", old.principal)], missing_ok=True):
                out.step(f"revoked:{old.resource}")
        remember(wanted)
        for new in wanted:
            ref = bigquery.DatasetReference(cfg.project, new.resource)
            if self._change_access(ref, add=[access_entry("READER", new.principal)], remove=[]):
                out.step(f"granted:{new.resource}")
        out.held = wanted
        out.env = {"BQ_READ_DATASETS": ",".join(sorted({f"{cfg.project}.{h.resource}" for h in wanted}))}
        return out

    def _change_access(
        self,
        ref: bigquery.DatasetReference,
        *,
        add: Sequence[Mapping[str, str]],
        remove: Sequence[Mapping[str, str]],
        missing_ok: bool = False,
    ) -> bool:
        """Read-modify-write of the dataset's access entries with its etag; retried on 412. True when written."""
        from google.api_core.exceptions import NotFound, PreconditionFailed
        from google.cloud import bigquery

        for _ in range(ACCESS_WRITE_ATTEMPTS):
            with _translated(f"access entries of {ref.dataset_id}"):
                try:
                    dataset = self.client.get_dataset(ref, **self._calls)
                except NotFound:
                    if missing_ok:
                        return False  # the dataset is gone: nobody reads it
                    raise
                entries = [e.to_api_repr() for e in dataset.access_entries]
                kept = [e for e in entries if not any(_same_entry(e, r) for r in remove)]
                missing = [a for a in add if not any(_same_entry(e, a) for e in kept)]
                if len(kept) == len(entries) and not missing:
                    return False
                dataset.access_entries = [bigquery.AccessEntry.from_api_repr(e) for e in [*kept, *missing]]
                try:
                    self.client.update_dataset(
                        dataset, ["access_entries"], **self._calls
                    )  # sends If-Match: the etag read
                except PreconditionFailed:
                    log_event(log, "bigquery.access_conflict", dataset=ref.dataset_id)
                    continue
                return True
        raise TargetUnavailable(
            f"BigQuery: the access entries of {ref.dataset_id} changed under every one of {ACCESS_WRITE_ATTEMPTS} "
            "writes (HTTP 412); the next attempt tries again"
        )

    # -- clean up -------------------------------------------------------------------------------------------------
    def clean_up(self, product: TargetProduct, *, delete_data: bool, held: Sequence[HeldGrant]) -> TargetOutcome:
        """Delete the dataset with ``delete_data``; otherwise remove every entry we added and label it deleted."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        out = TargetOutcome()
        cfg = self.config
        ref = bigquery.DatasetReference(cfg.project, cfg.dataset_id(product.namespace))
        if delete_data:
            with _translated(f"dataset {ref.dataset_id}"):
                try:
                    self.client.get_dataset(ref, **self._calls)
                except NotFound:
                    return out
                self.client.delete_dataset(ref, delete_contents=True, not_found_ok=True, **self._calls)
            out.step("dataset_deleted")
            return out
        ours = [access_entry("READER", h.principal) for h in held]
        owner = self.principal(product.namespace)
        if owner is not None:
            ours.append(access_entry("WRITER", owner))
        if ours and self._change_access(ref, add=[], remove=ours, missing_ok=True):
            out.step("access_removed")
        with _translated(f"dataset {ref.dataset_id}"):
            try:
                dataset = self.client.get_dataset(ref, **self._calls)
            except NotFound:
                return out
            if dataset.labels.get("deleted") != "true":
                dataset.labels = {**dataset.labels, "deleted": "true"}
                self.client.update_dataset(dataset, ["labels"], **self._calls)
                out.step("dataset_labelled")
        out.detail["dataset_kept"] = f"{cfg.project}.{ref.dataset_id}"
        return out

    # -- report and probe -----------------------------------------------------------------------------------------
    def report(self, product: TargetProduct) -> Mapping[str, Any]:
        """The dataset, its labels, access entries and tables as BigQuery shows them (no change)."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        cfg = self.config
        ref = bigquery.DatasetReference(cfg.project, cfg.dataset_id(product.namespace))
        with _translated(f"dataset {ref.dataset_id}"):
            try:
                dataset = self.client.get_dataset(ref, **self._calls)
            except NotFound:
                return {"dataset": f"{cfg.project}.{ref.dataset_id}", "exists": False}
            tables = sorted(t.table_id for t in self.client.list_tables(ref, **self._calls))
        return {
            "dataset": f"{cfg.project}.{ref.dataset_id}",
            "exists": True,
            "labels": dict(dataset.labels),
            "access": [e.to_api_repr() for e in dataset.access_entries],
            "tables": tables,
        }

    def probe(self) -> str:
        """``ok: …`` when the project's datasets can be listed, otherwise what is wrong, in one line."""
        where = self.config.endpoint or "Google's API (ADC)"
        try:
            with _translated(f"project {self.config.project} at {where}"):
                from google.cloud.bigquery import DEFAULT_RETRY

                datasets = self.client.list_datasets(
                    max_results=1, retry=DEFAULT_RETRY.with_timeout(PROBE_SECONDS), timeout=PROBE_SECONDS
                )
                next(iter(datasets), None)
        except Exception as exc:  # a probe reports, it never raises
            return _message(exc)
        return f"ok: bigquery project {self.config.project} answers at {where}"


def principals_map(pairs: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The settings' ``namespace=principal`` pairs as a mapping."""
    return dict(pairs)


__all__ = ["BigQueryConfig", "BigQueryTarget", "access_entry", "build_client", "principals_map"]
