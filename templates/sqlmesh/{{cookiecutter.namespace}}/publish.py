"""Publish every mart of this product as Parquet: s3://<bucket>/<namespace>/published/<model>.parquet.

Run it after `sqlmesh plan` (or `sqlmesh run`): `python publish.py` or `make publish`. It reads the
production views SQLMesh keeps in the local DuckDB file (schema ``marts``) and writes them with this
product's own key from ``.env``. Consumers whose access request was approved read these files.
"""

from __future__ import annotations

import sys

import duckdb
from duckdb_s3 import DATABASE, ROOT, ProjectConfigError, connect, load_env, namespace, s3_url

MART_SCHEMA = "marts"


def publish() -> list[str]:
    """Write each table or view of the ``marts`` schema to ``published/``; return the S3 URLs written."""
    if not DATABASE.exists():
        raise ProjectConfigError(f"{DATABASE.name} not found: run `sqlmesh plan` first to build the models")
    env = load_env(ROOT)
    con = connect(ROOT, database=DATABASE, read_only=True)
    try:
        names = [
            row[0]
            for row in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
                [MART_SCHEMA],
            ).fetchall()
        ]
        if not names:
            raise ProjectConfigError(f"no models in schema {MART_SCHEMA!r}: run `sqlmesh plan` first")
        written = []
        for name in names:
            url = s3_url(env, namespace(env), "published", f"{name}.parquet")
            con.execute(f"COPY (SELECT * FROM {MART_SCHEMA}.\"{name}\") TO '{url}' (FORMAT parquet)")
            written.append(url)
        return written
    finally:
        con.close()


def main() -> int:
    try:
        for url in publish():
            print(f"published {url}")
    except (ProjectConfigError, duckdb.Error) as exc:
        print(f"publish failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
