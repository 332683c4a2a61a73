"""Which columns of a dataset to tokenize, from its field tags in DataHub.

Field tags live in two aspects: ``schemaMetadata`` (written by ingestion) and ``editableSchemaMetadata`` (written by
the UI, where a steward tags a column). A column's tags are the union of both. Columns with a tag ``pii-*`` are PII;
a field-level request narrows them to the tagged fields. Both aspects are read through the SDK's graph client
(``DataHubGraph.get_aspect``, ``GET /aspects/<urn>?aspect=…&version=0``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import requests
from datahub.metadata.schema_classes import (
    EditableSchemaMetadataClass,
    GlobalTagsClass,
    SchemaMetadataClass,
)

from provisioner.errors import PermanentError, TemporaryError
from provisioner.tokenize import is_pii_tag

_TAG_PREFIX = "urn:li:tag:"


class DataHubUnavailable(TemporaryError):
    """DataHub did not answer (connection refused, timeout, 5xx): the run fails retryably."""


class DataHubRefused(PermanentError):
    """DataHub answered 4xx (a token without the privilege to read or write metadata, a bad request)."""


class NothingToTokenize(PermanentError):
    """The request names no column tagged ``pii-*``."""


def datahub_error(exc: Exception, doing: str) -> TemporaryError | PermanentError:
    """A typed error for a failed call to DataHub (requests' exceptions, the SDK's OperationalError)."""
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is None:  # the SDK's OperationalError keeps the cause instead
        cause = exc.__cause__
        response = getattr(cause, "response", None)
        status = getattr(response, "status_code", None)
    if status is not None and 400 <= int(status) < 500 and int(status) != 429:
        hint = "; check the token's privileges" if int(status) in (401, 403) else ""
        return DataHubRefused(f"DataHub refused to {doing}: HTTP {status}{hint}")
    if status is not None:
        return DataHubUnavailable(f"DataHub failed to {doing}: HTTP {status}")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return DataHubUnavailable(f"DataHub is unreachable, could not {doing}: {type(exc).__name__}: {first[:200]}")


def column_name(field_path: str) -> str:
    """The column a field path names: v2 paths (``[version=2.0].[type=string].email``) lose their ``[…]`` parts."""
    return ".".join(part for part in field_path.split(".") if not part.startswith("["))


def _tags(tags: GlobalTagsClass | None) -> list[str]:
    if tags is None:
        return []
    return [t.tag[len(_TAG_PREFIX) :] if t.tag.startswith(_TAG_PREFIX) else t.tag for t in tags.tags]


def field_tags(
    schema: SchemaMetadataClass | None, editable: EditableSchemaMetadataClass | None
) -> dict[str, list[str]]:
    """Column name → tag names, the union of both aspects (in schema order, then columns only the UI knows)."""
    tags: dict[str, list[str]] = {}

    def add(path: str, names: Iterable[str]) -> None:
        bucket = tags.setdefault(column_name(path), [])
        bucket.extend(n for n in names if n not in bucket)

    for f in schema.fields if schema else []:
        add(f.fieldPath, _tags(f.globalTags))
    for info in editable.editableSchemaFieldInfo if editable else []:
        add(info.fieldPath, _tags(info.globalTags))
    return tags


def read_field_tags(graph: Any, dataset_urn: str) -> dict[str, list[str]]:
    """Both aspects of the dataset through the graph client, merged by ``field_tags``; typed errors."""
    try:
        schema = graph.get_aspect(dataset_urn, SchemaMetadataClass)
        editable = graph.get_aspect(dataset_urn, EditableSchemaMetadataClass)
    except (requests.RequestException, OSError) as exc:
        raise datahub_error(exc, f"read the schema of {dataset_urn}") from None
    except Exception as exc:  # the SDK's OperationalError/GraphError wrap HTTP failures
        raise datahub_error(exc, f"read the schema of {dataset_urn}") from None
    if schema is None and editable is None:
        raise NothingToTokenize(
            f"DataHub has no schema for {dataset_urn} (neither schemaMetadata nor editableSchemaMetadata)"
        )
    return field_tags(schema, editable)


def pii_columns(tags: Mapping[str, Sequence[str]], fields: Sequence[str] | None, dataset_urn: str) -> list[str]:
    """The columns to tokenize: tagged ``pii-*``, narrowed to ``fields`` (field-level requests); in schema order.

    NothingToTokenize names the fields that carry the request but no ``pii-*`` tag, or says that no column does.
    """
    pii = [column for column, names in tags.items() if any(is_pii_tag(n) for n in names)]
    if fields is None:
        if not pii:
            raise NothingToTokenize(f"no column of {dataset_urn} is tagged pii-*: tag the PII columns pii-<kind>")
        return pii
    wanted = [column_name(f) for f in fields]
    untagged = [w for w in wanted if w not in pii]
    if untagged and len(untagged) == len(wanted):
        raise NothingToTokenize(
            f"column {', '.join(untagged)} of {dataset_urn} has no pii-* tag: tag it pii-<kind> to tokenize it"
        )
    return [column for column in pii if column in wanted]
