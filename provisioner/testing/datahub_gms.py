"""A loopback stand-in for DataHub's GMS (the Java metadata service cannot run here), for tests and benchmarks.

It serves what the SDK's ``DataHubGraph`` calls, in the shapes the real service answers:

* ``GET /config`` (the emitter checks ``noCode`` and reads the version, 1.7.0: OpenAPI ingestion is on);
* ``GET /aspects/<urn>?aspect=<name>&version=0`` → ``{"version": 0, "aspect": {"<record fullname>": <rest.li JSON>}}``
  or 404 (``get_aspect``);
* ``GET /entitiesV2/<urn>?aspects=List(a,b)`` → ``{"urn", "entityName", "aspects": {name: {"value", "created"}}}``
  (``get_entity_raw``);
* ``POST /api/graphql`` for ``scrollAcrossEntities`` (``get_urns_by_filter``), evaluating ``tags``, ``fieldTags``
  and ``editedFieldTags`` filters over the datasets it holds;
* and it records every write: ``POST /aspects?action=ingestProposal`` (rest.li), ``…ingestProposalBatch`` and
  ``POST /openapi/v3/entity/<type>`` (OpenAPI), normalised into ``Proposal`` rows.

Aspects are SDK objects (``SchemaMetadataClass`` …), serialised with the SDK's own ``pre_json_transform``.
``stop()`` and ``start()`` (same port) make it unreachable and back; ``fail_writes`` answers (some) writes 503.
Production modules never import this.
"""

from __future__ import annotations

import json
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from datahub.emitter.serialization_helper import post_json_transform, pre_json_transform
from datahub.metadata.schema_classes import (
    EditableSchemaMetadataClass,
    GlobalTagsClass,
    SchemaMetadataClass,
)

GMS_VERSION = "v1.7.0"


@dataclass(frozen=True)
class Proposal:
    """One aspect written to the stand-in, whichever endpoint carried it."""

    endpoint: str  # "restli" or "openapi"
    entity_type: str
    entity_urn: str
    aspect_name: str
    value: dict[str, Any]  # the aspect as the SDK's to_obj() writes it (post_json_transform applied)


@dataclass
class _Stored:
    aspect: Any
    created_ms: int


class DataHubGMS:
    """The stand-in server; use as a context manager or call ``start()``/``stop()``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.proposals: list[Proposal] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, in order
        #: True, or a predicate on each written aspect: matching writes are answered 503 and not recorded.
        self.fail_writes: bool | Callable[[Proposal], bool] = False
        self._aspects: dict[tuple[str, str], _Stored] = {}
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL to give ``datahub.server``."""
        return f"http://{self.host}:{self.port}"

    def start(self) -> DataHubGMS:
        """Listen (again, on the same port after ``stop``)."""
        handler = type("Handler", (_Handler,), {"gms": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name="datahub-gms", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: clients get connection refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> DataHubGMS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what it holds -------------------------------------------------------------------------------------

    def put(self, urn: str, aspect: Any, created_ms: int | None = None) -> None:
        """Store an aspect (an SDK aspect object) of an entity, written at ``created_ms`` (default now)."""
        with self._lock:
            self._aspects[urn, aspect.ASPECT_NAME] = _Stored(aspect, created_ms or int(time.time() * 1000))

    def get(self, urn: str, name: str) -> Any | None:
        """A stored aspect, or None."""
        with self._lock:
            stored = self._aspects.get((urn, name))
        return stored.aspect if stored else None

    def writes(self, *, entity_urn: str | None = None, aspect_name: str | None = None) -> list[Proposal]:
        """Recorded writes, optionally of one entity and/or aspect, in arrival order."""
        with self._lock:
            rows = list(self.proposals)
        return [
            p
            for p in rows
            if (entity_urn is None or p.entity_urn == entity_urn)
            and (aspect_name is None or p.aspect_name == aspect_name)
        ]

    def run_events(self, dpi_urn: str | None = None) -> list[dict[str, Any]]:
        """The ``dataProcessInstanceRunEvent`` values written (of one instance), in order."""
        return [p.value for p in self.writes(entity_urn=dpi_urn, aspect_name="dataProcessInstanceRunEvent")]

    # -- request handling ----------------------------------------------------------------------------------

    def _record(self, proposals: Iterable[Proposal]) -> None:
        with self._lock:
            self.proposals.extend(proposals)

    def _entity(self, urn: str, names: list[str] | None) -> dict[str, Any]:
        with self._lock:
            found = {name: s for (u, name), s in self._aspects.items() if u == urn and (not names or name in names)}
        aspects = {
            name: {
                "name": name,
                "version": 0,
                "value": pre_json_transform(s.aspect.to_obj()),
                "created": {"time": s.created_ms, "actor": "urn:li:corpuser:datahub"},
            }
            for name, s in found.items()
        }
        return {"urn": urn, "entityName": urn.split(":")[2], "aspects": aspects}

    def _search(self, variables: dict[str, Any]) -> list[str]:
        with self._lock:
            urns = sorted({u for (u, _) in self._aspects if u.startswith("urn:li:dataset:")})
        groups = variables.get("orFilters") or [{"and": []}]
        return [u for u in urns if any(all(self._rule(u, r) for r in g.get("and", [])) for g in groups)]

    def _rule(self, urn: str, rule: dict[str, Any]) -> bool:
        values = set(rule.get("values") or [])
        field = rule.get("field")
        if field == "removed":
            return bool(rule.get("negated"))  # nothing here is soft-deleted
        if field == "tags":
            tags: GlobalTagsClass | None = self.get(urn, "globalTags")
            have = {t.tag for t in tags.tags} if tags else set()
        elif field == "fieldTags":
            schema: SchemaMetadataClass | None = self.get(urn, "schemaMetadata")
            fields = schema.fields if schema else []
            have = {t.tag for f in fields for t in (f.globalTags.tags if f.globalTags else [])}
        elif field == "editedFieldTags":
            editable: EditableSchemaMetadataClass | None = self.get(urn, "editableSchemaMetadata")
            infos = editable.editableSchemaFieldInfo if editable else []
            have = {t.tag for i in infos for t in (i.globalTags.tags if i.globalTags else [])}
        else:
            return False
        hit = bool(have & values)
        return not hit if rule.get("negated") else hit


_ASPECT_CLASSES = {c.ASPECT_NAME: c for c in (SchemaMetadataClass, EditableSchemaMetadataClass, GlobalTagsClass)}


class _Handler(BaseHTTPRequestHandler):
    gms: DataHubGMS
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read the recorded requests instead
        return

    def _send(self, status: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        return json.loads(self.rfile.read(length) or b"null")

    def do_GET(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        self.gms.requests.append(("GET", self.path))
        query = urllib.parse.parse_qs(parsed.query)
        if parsed.path == "/config":
            self._send(200, _CONFIG)
        elif parsed.path.startswith("/aspects/"):
            urn = urllib.parse.unquote(parsed.path[len("/aspects/") :])
            name = (query.get("aspect") or [""])[0]
            aspect = self.gms.get(urn, name)
            if aspect is None:
                self._send(404, {"status": 404, "message": f"No aspect {name} found for {urn}"})
                return
            fullname = type(aspect).RECORD_SCHEMA.fullname.replace(".pegasus2avro", "")
            self._send(200, {"version": 0, "aspect": {fullname: pre_json_transform(aspect.to_obj())}})
        elif parsed.path.startswith("/entitiesV2/"):
            urn = urllib.parse.unquote(parsed.path[len("/entitiesV2/") :])
            match = re.search(r"aspects=List\(([^)]*)\)", urllib.parse.unquote(parsed.query))
            names = match.group(1).split(",") if match else None
            self._send(200, self.gms._entity(urn, names))
        else:
            self._send(404, {"status": 404, "message": f"no route {parsed.path}"})

    def do_POST(self) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        self.gms.requests.append(("POST", self.path))
        body = self._body()
        if parsed.path == "/api/graphql":
            variables = body.get("variables") or {}
            if "scrollAcrossEntities" not in body.get("query", ""):
                self._send(200, {"errors": [{"message": "the stand-in answers scrollAcrossEntities only"}]})
                return
            results = [{"entity": {"urn": u}, "extraProperties": []} for u in self.gms._search(variables)]
            self._send(200, {"data": {"scrollAcrossEntities": {"nextScrollId": None, "searchResults": results}}})
            return
        if parsed.path == "/aspects" and "action=ingestProposal" in parsed.query:
            raw = body["proposals"] if "ingestProposalBatch" in parsed.query else [body["proposal"]]
            proposals = [_restli(p) for p in raw]
            answer: Any = {"value": ""} if "Batch" not in parsed.query else {"value": []}
        elif parsed.path.startswith("/openapi/v3/entity/"):
            entity_type = parsed.path.rsplit("/", 1)[-1]
            proposals = [_openapi(entity_type, item) for item in body]
            answer = [{"urn": item["urn"]} for item in body]
        else:
            self._send(404, {"status": 404, "message": f"no route {parsed.path}"})
            return
        refuse = self.gms.fail_writes
        if refuse is True or (callable(refuse) and any(refuse(p) for p in proposals)):
            self._send(503, {"status": 503, "message": "the stand-in refuses this write (fail_writes)"})
            return
        self.gms._record(proposals)
        self._send(200, answer)


def _restli(proposal: dict[str, Any]) -> Proposal:
    aspect = proposal.get("aspect") or {}
    value = json.loads(aspect["value"]) if isinstance(aspect.get("value"), str) else aspect.get("value") or {}
    return Proposal(
        "restli", proposal["entityType"], proposal["entityUrn"], proposal["aspectName"], post_json_transform(value)
    )


def _openapi(entity_type: str, item: dict[str, Any]) -> Proposal:
    (name,) = [k for k in item if k != "urn"]
    return Proposal("openapi", entity_type, item["urn"], name, post_json_transform(item[name]["value"]))


_CONFIG = {
    "models": {},
    "patchCapable": True,
    "versions": {"acryldata/datahub": {"version": GMS_VERSION, "commit": "0" * 40}},
    "managedIngestion": {"defaultCliVersion": "1.7.0", "enabled": True},
    "statefulIngestionCapable": True,
    "supportsImpactAnalysis": True,
    "timeZone": "GMT",
    "telemetry": {"enabledCli": False, "enabledIngestion": False},
    "datasetUrnNameCasing": False,
    "retention": "true",
    "datahub": {"serverType": "quickstart", "serverEnv": "core"},
    "noCode": "true",
}
