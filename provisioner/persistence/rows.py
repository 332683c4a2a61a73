"""Rows of the provisioner's tables read as their typed records (``records.py``), by field name."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row

R = TypeVar("R")


def select_records(
    conn: psycopg.Connection[Any], record: type[R], query: str, params: Sequence[object] = ()
) -> list[R]:
    """Run ``query`` and build one ``record`` (a dataclass) per row from the columns named like its fields.

    Columns the record does not name are left out (a table may hold more than its record shows); a field without a
    column is an error, as a typo in either should be.
    """
    names = [f.name for f in dataclasses.fields(record)]  # type: ignore[arg-type]  # R is a dataclass type
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(query, params)
        return [record(**{name: row[name] for name in names}) for row in cur.fetchall()]
