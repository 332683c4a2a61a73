"""Read the data products this product may consume: every namespace in S3_READ_PREFIXES.

`python consume.py` (or `make consume`) lists s3://<bucket>/<producer>/published/*.parquet for each
producer and shows each file's row count and first rows, using this product's own key from ``.env``.
S3_READ_PREFIXES is updated by the provisioner when an access request in the portal is approved or
revoked. Without an approved request the store answers HTTP 403 (AccessDenied) and this script says so.
"""

from __future__ import annotations

import sys

import duckdb
from duckdb_s3 import ROOT, ProjectConfigError, connect, load_env, read_prefixes, s3_url


def published_files(con: duckdb.DuckDBPyConnection, env: dict[str, str], producer: str) -> list[str]:
    """The Parquet files a producer has published."""
    pattern = s3_url(env, producer, "published", "*.parquet")
    return [row[0] for row in con.execute("SELECT file FROM glob(?) ORDER BY file", [pattern]).fetchall()]


def read_published(con: duckdb.DuckDBPyConnection, url: str, limit: int = 5) -> tuple[int, list[tuple]]:
    """Row count and the first ``limit`` rows of one published file."""
    count = con.execute("SELECT count(*) FROM read_parquet(?)", [url]).fetchone()[0]  # type: ignore[index]
    rows = con.execute("SELECT * FROM read_parquet(?) LIMIT ?", [url, limit]).fetchall()
    return int(count), rows


def main(producers: list[str] | None = None) -> int:
    try:
        env = load_env(ROOT)
        producers = producers or read_prefixes(env)
        if not producers:
            print("S3_READ_PREFIXES is empty: request access to a data product in the portal first")
            return 0
        con = connect(ROOT)
    except ProjectConfigError as exc:
        print(f"consume failed: {exc}", file=sys.stderr)
        return 1
    failures = 0
    for producer in producers:
        try:
            files = published_files(con, env, producer)
            if not files:
                print(f"{producer}: nothing published yet")
            for url in files:
                count, rows = read_published(con, url)
                print(f"{url}: {count} rows")
                for row in rows:
                    print("  ", row)
        except duckdb.Error as exc:
            failures += 1
            hint = ""
            if "403" in str(exc) or "AccessDenied" in str(exc):
                hint = " (access denied: is your access request to this product approved in the portal?)"
            print(f"{producer}: cannot read published data{hint}: {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or None))
