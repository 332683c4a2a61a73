"""Read what this product may consume: every output port folder in S3_READ_PREFIXES.

`python consume.py` (or `make consume`) lists the Parquet files of each approved output port
(``s3://<bucket>/<producer>/published/<output port>/``) and shows each file's row count and first rows, using this
product's own key from ``.env``. `python consume.py <text>` reads only the folders whose path contains ``<text>``
(a producer's namespace, or ``producer/published/port``). The provisioner updates S3_READ_PREFIXES when an access
request in the portal is approved or revoked. Anything else answers HTTP 403 (AccessDenied), and this script says so.
"""

from __future__ import annotations

import sys

import duckdb
from duckdb_s3 import ROOT, ProjectConfigError, connect, load_env, read_prefixes


def published_files(con: duckdb.DuckDBPyConnection, prefix: str) -> list[str]:
    """The Parquet files in one granted folder (``<bucket>/<producer>/published/<port>/``) and below it."""
    pattern = f"s3://{prefix}**/*.parquet"
    return [row[0] for row in con.execute("SELECT file FROM glob(?) ORDER BY file", [pattern]).fetchall()]


def read_published(con: duckdb.DuckDBPyConnection, url: str, limit: int = 5) -> tuple[int, list[tuple]]:
    """Row count and the first ``limit`` rows of one published file."""
    count = con.execute("SELECT count(*) FROM read_parquet(?)", [url]).fetchone()[0]  # type: ignore[index]
    rows = con.execute("SELECT * FROM read_parquet(?) LIMIT ?", [url, limit]).fetchall()
    return int(count), rows


def folders(env: dict[str, str], wanted: list[str] | None) -> list[str]:
    """The granted folders to read: all of them, or those whose path contains one of ``wanted``.

    A name that matches no granted folder is still tried as ``<bucket>/<name>/`` so the store answers for it
    (HTTP 403 when it is not yours to read).
    """
    granted = read_prefixes(env)
    if not wanted:
        return granted
    chosen = [p for p in granted if any(w.strip("/") in p for w in wanted)]
    missing = [w for w in wanted if not any(w.strip("/") in p for p in granted)]
    return chosen + [f"{env['S3_BUCKET']}/{w.strip('/')}/" for w in missing]


def main(wanted: list[str] | None = None) -> int:
    try:
        env = load_env(ROOT)
        targets = folders(env, wanted)
        if not targets:
            print("S3_READ_PREFIXES is empty: request access to an output port in the portal first")
            return 0
        con = connect(ROOT)
    except ProjectConfigError as exc:
        print(f"consume failed: {exc}", file=sys.stderr)
        return 1
    failures = 0
    for prefix in targets:
        try:
            files = published_files(con, prefix)
            if not files:
                print(f"s3://{prefix}: nothing published yet")
            for url in files:
                count, rows = read_published(con, url)
                print(f"{url}: {count} rows")
                for row in rows:
                    print("  ", row)
        except duckdb.Error as exc:
            failures += 1
            hint = ""
            if "403" in str(exc) or "AccessDenied" in str(exc):
                hint = " (access denied: is your access request to this output port approved in the portal?)"
            print(f"s3://{prefix}: cannot read published data{hint}: {exc}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] or None))
