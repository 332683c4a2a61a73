"""Table schema files of a product's project (``bigquery/<table>.json``) and the one rule for changing a table.

A schema file holds BigQuery's JSON schema: a list of fields ``{"name", "type", "mode", "description", "fields"}``
(what ``bq show --schema`` prints and the workloads' ``config/<dataset>_<table>.json`` hold); ``{"fields": [...]}``
is accepted too. The file's name (without ``.json``) is the table id.

The rule (``plan_change``): a table is created when missing. An existing table is changed only by *adding* top-level
columns in ``NULLABLE`` or ``REPEATED`` mode, which BigQuery applies without touching data. Anything else a file asks
for is destructive or tightening and is **reported, not applied**: a column missing from the file (dropped), a
changed type, a mode made stricter (``NULLABLE`` → ``REQUIRED``), a new ``REQUIRED`` column, a changed nested
record. A relaxation (``REQUIRED`` → ``NULLABLE``) is reported too: the provisioner never loosens a table by itself.
Descriptions are not compared.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_TABLE_ID = re.compile(r"[A-Za-z0-9_]{1,1024}")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,299}")
_MODES = ("NULLABLE", "REQUIRED", "REPEATED")
# Legacy and standard SQL names of the same type compare equal.
_SAME_TYPE = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}
SCHEMA_DIR = "bigquery"


@dataclass(frozen=True)
class Column:
    """One column of a schema (nested ``fields`` for a RECORD)."""

    name: str
    type: str
    mode: str = "NULLABLE"
    description: str = ""
    fields: tuple[Column, ...] = ()

    def api_repr(self) -> dict[str, Any]:
        """The column as BigQuery's REST API writes it."""
        body: dict[str, Any] = {"name": self.name, "type": self.type, "mode": self.mode}
        if self.description:
            body["description"] = self.description
        if self.fields:
            body["fields"] = [f.api_repr() for f in self.fields]
        return body

    def same_shape(self, other: Column) -> bool:
        """Same name, type, mode and nested columns (descriptions aside)."""
        return (
            self.name.lower() == other.name.lower()
            and _norm(self.type) == _norm(other.type)
            and self.mode == other.mode
            and len(self.fields) == len(other.fields)
            and all(a.same_shape(b) for a, b in zip(self.fields, other.fields, strict=True))
        )


@dataclass(frozen=True)
class SchemaFile:
    """A table's wanted schema, read from ``bigquery/<table>.json``; ``problem`` when the file is unusable."""

    table: str
    columns: tuple[Column, ...] = ()
    problem: str | None = None


@dataclass
class Change:
    """What converging an existing table to its file takes: columns to add, and what is refused (with why)."""

    added: list[Column] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _norm(kind: str) -> str:
    upper = kind.upper()
    return _SAME_TYPE.get(upper, upper)


def read_schema_files(project_dir: Path | None) -> list[SchemaFile]:
    """Every ``bigquery/*.json`` of the project, sorted by table; a file that cannot be used carries ``problem``."""
    if project_dir is None or not (project_dir / SCHEMA_DIR).is_dir():
        return []
    return [_read(path) for path in sorted((project_dir / SCHEMA_DIR).glob("*.json"))]


def _read(path: Path) -> SchemaFile:
    table = path.stem
    where = f"{SCHEMA_DIR}/{path.name}"
    if not _TABLE_ID.fullmatch(table):
        return SchemaFile(table, problem=f"{where}: the table id must be 1 to 1,024 letters, digits or '_'")
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
        raw = body.get("fields") if isinstance(body, dict) else body
        columns = _columns(raw, where)
    except (OSError, ValueError) as exc:
        return SchemaFile(table, problem=f"{where}: {exc}")
    return SchemaFile(table, columns)


def _columns(raw: Any, where: str) -> tuple[Column, ...]:
    if not isinstance(raw, list) or not raw:
        raise ValueError("expected a non-empty list of fields")
    seen: set[str] = set()
    out: list[Column] = []
    for item in raw:
        if not isinstance(item, dict):
            raise ValueError("every field must be an object with name and type")
        name, kind, mode = item.get("name"), item.get("type"), str(item.get("mode") or "NULLABLE").upper()
        if not isinstance(name, str) or not _COLUMN.fullmatch(name):
            raise ValueError(f"field name {name!r} must be a letter or '_' then letters, digits or '_'")
        if name.lower() in seen:
            raise ValueError(f"field {name!r} appears twice")
        seen.add(name.lower())
        if not isinstance(kind, str) or not kind.strip():
            raise ValueError(f"field {name!r} has no type")
        if mode not in _MODES:
            raise ValueError(f"field {name!r} has mode {mode!r}: use NULLABLE, REQUIRED or REPEATED")
        nested = _columns(item["fields"], where) if _norm(kind) == "RECORD" else ()
        description = item.get("description") or ""
        out.append(Column(name, kind.upper(), mode, str(description), nested))
    return tuple(out)


def columns_from_api(raw: list[dict[str, Any]]) -> tuple[Column, ...]:
    """A table's schema as the REST API returned it."""
    return tuple(
        Column(
            str(f["name"]),
            str(f.get("type", "STRING")).upper(),
            str(f.get("mode") or "NULLABLE").upper(),
            str(f.get("description") or ""),
            columns_from_api(f.get("fields") or []),
        )
        for f in raw
    )


def plan_change(table: str, existing: tuple[Column, ...], wanted: tuple[Column, ...]) -> Change:
    """What may be applied to ``existing`` to reach ``wanted`` (the rule in the module docstring)."""
    change = Change()
    have = {c.name.lower(): c for c in existing}
    want = {c.name.lower(): c for c in wanted}
    for key, column in have.items():
        if key not in want:
            change.refused.append(f"{table}.{column.name}: dropping a column is not applied")
    for key, column in want.items():
        old = have.get(key)
        if old is None:
            if column.mode == "REQUIRED":
                change.refused.append(f"{table}.{column.name}: a new REQUIRED column is not applied (make it NULLABLE)")
            else:
                change.added.append(column)
        elif _norm(old.type) != _norm(column.type):
            change.refused.append(f"{table}.{column.name}: changing type {old.type} to {column.type} is not applied")
        elif old.mode != column.mode:
            change.refused.append(f"{table}.{column.name}: changing mode {old.mode} to {column.mode} is not applied")
        elif not old.same_shape(column):
            change.refused.append(f"{table}.{column.name}: changing a nested record is not applied")
    return change
