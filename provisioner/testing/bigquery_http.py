"""A request-level stand-in for BigQuery's REST API, at the google client's HTTP seam (``Client(_http=...)``).

The emulator (bqemulator) creates datasets and tables for real but enforces neither access nor etags. This fake
answers the handful of REST calls the BigQuery target makes, in BigQuery's shapes
(https://cloud.google.com/bigquery/docs/reference/rest/v2/datasets), and *does* enforce ``If-Match``: a PATCH with
a stale etag gets 412 Precondition Failed, as BigQuery answers it. Every request is recorded (method, path, query,
headers, JSON body) so tests can assert the exact bodies written. ``change_before_next_patch`` makes another writer
change a dataset between the target's read and its write: the 412 path.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests

API_ROOT = "/bigquery/v2"


@dataclass
class Call:
    """One request the client sent."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any


@dataclass
class FakeBigQueryHTTP:
    """Stands in for ``requests.Session`` under ``google.cloud.bigquery.Client``; state lives in ``datasets``."""

    project: str = "test-project"
    is_mtls: bool = False  # google.cloud._http asks the session which base URL to use
    datasets: dict[str, dict[str, Any]] = field(default_factory=dict)
    tables: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    _pending: dict[str, list[Callable[[dict[str, Any]], None]]] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _faults: list[tuple[int, tuple[str, ...]]] = field(default_factory=list)

    # -- what tests use ------------------------------------------------------------------------------------------
    def change_before_next_patch(self, dataset_id: str, change: Callable[[dict[str, Any]], None]) -> None:
        """Before the next PATCH of ``dataset_id`` is answered, apply ``change`` as another writer (new etag)."""
        self._pending.setdefault(dataset_id, []).append(change)

    def fail_next(self, n: int, status: int = 500, *, methods: tuple[str, ...] = ("GET", "POST", "PATCH")) -> None:
        """Answer the next ``n`` requests of ``methods`` with ``status`` (a backend that fails), changing nothing."""
        self._faults.extend([(status, methods)] * n)

    def patches(self, dataset_id: str) -> list[Call]:
        """The PATCH requests sent for ``dataset_id``, in order."""
        return [c for c in self.calls if c.method == "PATCH" and c.path.endswith(f"/datasets/{dataset_id}")]

    # -- the requests.Session seam -------------------------------------------------------------------------------
    def request(
        self,
        method: str,
        url: str,
        headers: dict[str, str] | None = None,
        data: Any = None,
        timeout: Any = None,
        **_: Any,
    ) -> requests.Response:
        """Answer one REST call as BigQuery would."""
        del timeout
        parts = urlsplit(url)
        path = parts.path
        body = json.loads(data) if data else None
        self.calls.append(Call(method, path, parse_qs(parts.query), dict(headers or {}), body))
        if self._faults and method in self._faults[0][1]:
            status = self._faults.pop(0)[0]
            return _response(method, url, status, _error(status, "backendError", "the stand-in was told to fail"))
        segments = path.removeprefix(API_ROOT).strip("/").split("/")
        status, payload = self._route(method, segments, dict(headers or {}), body)
        return _response(method, url, status, payload)

    def _route(self, method: str, seg: list[str], headers: dict[str, str], body: Any) -> tuple[int, Any]:
        if len(seg) < 3 or seg[0] != "projects" or seg[2] != "datasets":
            return 404, _error(404, "notFound", f"no route {'/'.join(seg)}")
        if len(seg) == 3:
            if method == "POST":
                return self._create_dataset(body)
            return 200, {"kind": "bigquery#datasetList", "datasets": [_listed(d) for d in self.datasets.values()]}
        dataset_id = seg[3]
        if len(seg) == 4:
            return self._dataset(method, dataset_id, headers, body)
        if seg[4] == "tables":
            return self._table(method, dataset_id, seg[5] if len(seg) > 5 else None, body)
        return 404, _error(404, "notFound", "no such route")

    def _etag(self) -> str:
        return '"' + hashlib.sha256(str(next(self._counter)).encode()).hexdigest()[:16] + '"'

    def _create_dataset(self, body: dict[str, Any]) -> tuple[int, Any]:
        dataset_id = body["datasetReference"]["datasetId"]
        if dataset_id in self.datasets:
            return 409, _error(409, "duplicate", f"Already Exists: Dataset {self.project}:{dataset_id}")
        resource = copy.deepcopy(body)
        resource.setdefault("access", [])
        resource.update(kind="bigquery#dataset", id=f"{self.project}:{dataset_id}", etag=self._etag(), creationTime="0")
        self.datasets[dataset_id] = resource
        return 200, resource

    def _dataset(self, method: str, dataset_id: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
        resource = self.datasets.get(dataset_id)
        if resource is None:
            return 404, _error(404, "notFound", f"Not found: Dataset {self.project}:{dataset_id}")
        if method == "GET":
            return 200, resource
        if method == "DELETE":
            del self.datasets[dataset_id]
            for key in [k for k in self.tables if k[0] == dataset_id]:
                del self.tables[key]
            return 204, None
        if method in ("PATCH", "PUT"):
            pending = self._pending.get(dataset_id)
            if pending:  # one other writer per PATCH
                pending.pop(0)(resource)
                resource["etag"] = self._etag()
            if_match = headers.get("If-Match")
            if if_match is not None and if_match != resource["etag"]:
                return 412, _error(412, "failedPrecondition", "Precondition check failed.")
            for key, value in body.items():
                if key not in ("etag", "kind", "id", "datasetReference"):
                    resource[key] = value
            resource["etag"] = self._etag()
            return 200, resource
        return 405, _error(405, "methodNotAllowed", method)

    def _table(self, method: str, dataset_id: str, table_id: str | None, body: Any) -> tuple[int, Any]:
        if dataset_id not in self.datasets:
            return 404, _error(404, "notFound", f"Not found: Dataset {self.project}:{dataset_id}")
        if table_id is None and method == "POST":
            table_id = body["tableReference"]["tableId"]
            if (dataset_id, table_id) in self.tables:
                return 409, _error(409, "duplicate", f"Already Exists: Table {dataset_id}.{table_id}")
            resource = {**copy.deepcopy(body), "kind": "bigquery#table", "etag": self._etag()}
            self.tables[(dataset_id, table_id)] = resource
            return 200, resource
        if table_id is None:
            listed = [t for (d, _), t in self.tables.items() if d == dataset_id]
            return 200, {"kind": "bigquery#tableList", "tables": listed, "totalItems": len(listed)}
        found = self.tables.get((dataset_id, table_id))
        if found is None:
            return 404, _error(404, "notFound", f"Not found: Table {dataset_id}.{table_id}")
        if method == "PATCH":
            found.update({k: v for k, v in body.items() if k != "etag"})
            found["etag"] = self._etag()
        return 200, found


def _listed(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: resource[k] for k in ("kind", "id", "datasetReference", "location", "labels") if k in resource}


def _error(code: int, reason: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "errors": [{"reason": reason, "message": message}]}}


def _response(method: str, url: str, status: int, payload: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = b"" if payload is None else json.dumps(payload).encode()
    response.headers["Content-Type"] = "application/json"
    response.request = requests.Request(method, url).prepare()
    response.url = url
    return response
