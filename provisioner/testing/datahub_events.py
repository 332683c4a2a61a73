"""A JSON-lines event source for DataHub Actions pipelines, registered as DataHub's own tests register theirs.

Each line is an enveloped event as ``EventEnvelope.as_json()`` writes it (``{event_type, event, meta}``, the shape of
``contract-samples/datahub/events.json``); ``events()`` deserialises every line with ``EventEnvelope.from_json``
(the framework's real serialisation) and ends at the end of the file, so ``Pipeline.run()`` returns. ``acked``
counts acknowledgements per processed flag. Registered in the framework's source registry as ``jsonl``
(``event_source_registry.register``, like DataHub's ``test_source``); a pipeline may also name it by import path,
``provisioner.testing.datahub_events:JsonLinesEventSource``. Production modules never import this.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from datahub_actions.event.event_envelope import EventEnvelope
from datahub_actions.pipeline.pipeline_context import PipelineContext
from datahub_actions.source.event_source import EventSource
from datahub_actions.source.event_source_registry import event_source_registry

SOURCE_TYPE = "jsonl"


def tag_added_source(path: Path, tag: str) -> dict[str, Any]:
    """The ``source`` and ``filters`` of a pipeline config: the events in ``path`` that add ``tag`` (the plugin's
    trigger), as a user's pipeline.yaml selects them."""
    return {
        "source": {"type": SOURCE_TYPE, "config": {"path": str(path)}},
        "filters": [
            {
                "type": "event_type",
                "config": {
                    "filter": {
                        "EntityChangeEvent_v1": {"event": [{"category": "TAG", "operation": "ADD", "modifier": tag}]},
                    }
                },
            }
        ],
    }


class JsonLinesEventSource(EventSource):
    """Events from a file, one enveloped event per line; blank lines are skipped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.acked: Counter[bool] = Counter()

    @classmethod
    def create(cls, config_dict: dict[str, Any], ctx: PipelineContext) -> JsonLinesEventSource:
        """``config: {path: events.jsonl}``."""
        return cls(Path(config_dict["path"]))

    def events(self) -> Iterable[EventEnvelope]:
        """Every line of the file, deserialised, until its end (or a stop request)."""
        with self.path.open(encoding="utf-8") as lines:
            for line in lines:
                if self.stop_requested():
                    return
                if line.strip():
                    yield EventEnvelope.from_json(line)

    def ack(self, event: EventEnvelope, processed: bool = True) -> None:
        """Count the acknowledgement."""
        self.acked[processed] += 1

    def close(self) -> None:
        """Nothing to release."""


if SOURCE_TYPE not in event_source_registry.mapping:
    event_source_registry.register(SOURCE_TYPE, JsonLinesEventSource)
