"""Which DataHub events ask for a tokenization, and what they ask for.

An ``EntityChangeEvent_v1`` of category TAG, operation ADD, whose modifier is the configured tag
(``urn:li:tag:tokenize-now``), on:

* a schema field: ``entityUrn = urn:li:schemaField:(<dataset urn>,<field path>)``. The dataset comes from that urn,
  never from ``parameters.parentUrn``: a tag added in the UI (editableSchemaMetadata) names the schema field itself
  there, not the dataset.
* a dataset: ``entityUrn`` is the dataset urn. A dataset-level tag means every column of the dataset tagged
  ``pii-*``.

``auditStamp.time`` (milliseconds) identifies the change: with the dataset urn it is the key of the request, so the
same event delivered twice is one job.
"""

from __future__ import annotations

from dataclasses import dataclass

from datahub.metadata.urns import SchemaFieldUrn
from datahub_actions.event.event_envelope import EventEnvelope
from datahub_actions.event.event_registry import ENTITY_CHANGE_EVENT_V1_TYPE, EntityChangeEvent

from provisioner.datahub.config import DatasetName
from provisioner.errors import InvalidInput


@dataclass(frozen=True)
class TokenizeRequest:
    """A request to tokenize a dataset (``field_path`` None) or one of its fields, keyed by (dataset, stamp)."""

    dataset_urn: str
    stamp: int
    field_path: str | None
    actor: str | None


def request_from(envelope: EventEnvelope, tag: str) -> TokenizeRequest | None:
    """The request an event carries, or None when the event is not a ``tag`` ADD on a dataset or field.

    InvalidInput when it is one but its urn cannot be read (the plugin logs and skips it: retrying cannot help).
    """
    if envelope.event_type != ENTITY_CHANGE_EVENT_V1_TYPE:
        return None
    event = envelope.event
    if not isinstance(event, EntityChangeEvent):
        return None
    if event.category != "TAG" or event.operation != "ADD" or event.modifier != tag:
        return None
    urn = event.entityUrn
    stamp = int(event.auditStamp.time)
    actor = event.auditStamp.actor
    if event.entityType == "schemaField" or urn.startswith("urn:li:schemaField:"):
        try:
            field = SchemaFieldUrn.from_string(urn)
        except Exception as exc:  # InvalidUrnError and friends
            raise InvalidInput(f"{urn!r} is not a schema field urn ({type(exc).__name__})") from None
        DatasetName.parse(field.parent)
        return TokenizeRequest(field.parent, stamp, field.field_path, actor)
    if event.entityType == "dataset" or urn.startswith("urn:li:dataset:"):
        DatasetName.parse(urn)
        return TokenizeRequest(urn, stamp, None, actor)
    return None
