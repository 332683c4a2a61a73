"""Benchmark of the tokenization engine against PostgreSQL's own floor, on 1M rows.

    python bench/tokenization.py [--rows 1000000] [--sample 20000] [--repeat 3]

Uses PROVISIONER_DATABASE_URL when set, else starts embedded PostgreSQL in a temporary directory. For each
table shape (narrow: id + 2 text PII columns; wide: id + 19 other columns + 2 PII) every measurement runs on
a fresh copy of the same data, VACUUM FREEZE'd and CHECKPOINT'ed first, so each starts from the same state:

* raw:      ``UPDATE t SET a = a || '', b = b || ''`` (PostgreSQL rewriting every tuple, the floor)
* hmac:     ``SELECT`` of both columns' tokens computed in SQL, no write, without parallel workers (an UPDATE
            cannot use them); the same with 2 parallel workers is shown too
* engine:   ``provisioner.tokenize.run`` (preflight, key COPY, lock, then the table in batches of 256 pages
            with its tokens computed on a helper connection; end to end from Python); and the same with
            ``batch_pages=0`` (one UPDATE for the whole table, on one connection)
* rerun:    the engine again on the tokenized table (changes 0 rows)
* dry run:  the engine's dry run on an untokenized table
* poc:      the original proof of concept (SELECT … FOR UPDATE, one UPDATE per row from Python, base64 tokens),
            on a sample of ``--sample`` rows, extrapolated linearly to ``--rows``; once psycopg2-style (values
            interpolated client-side, no prepared statements) and once with psycopg 3's prepared statements

WAL volume is the pg_current_wal_lsn() difference around each measurement. Peak RSS is this process's.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import platform
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from provisioner import db
from provisioner.names import SqlName
from provisioner.tokenize import TokenFormat, TokenizeOptions, TokenizePlan, TokenizePolicy, plan, run
from provisioner.tokenize import statements as st
from provisioner.tokenize.policy import TableTarget

KEY = "bench-key-not-a-secret-0123456789"
SERVER_SETTINGS = {
    "max_wal_size": "8GB",  # no checkpoint in the middle of a measurement
    "checkpoint_timeout": "1h",
    "work_mem": "64MB",
}


@dataclass
class Measure:
    seconds: float
    wal_bytes: int
    rows: int


def wal_lsn(conn: psycopg.Connection) -> str:
    row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row
    return str(row[0])


def wal_diff(conn: psycopg.Connection, start: str) -> int:
    row = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)::bigint", (start,)).fetchone()
    assert row
    return int(row[0])


def build_source(conn: psycopg.Connection, name: str, rows: int, extra_columns: int) -> None:
    """A pristine table of realistic PII-shaped values (emails ~30 chars, phone numbers ~13)."""
    extras_def = "".join(f", c{i:02d} {'integer' if i % 2 else 'text'}" for i in range(extra_columns))
    extras_val = "".join(
        f", {'(g::bigint * ' + str(i + 3) + ') % 100000' if i % 2 else 'md5((g + ' + str(i) + ')::text)'}"
        for i in range(extra_columns)
    )
    conn.execute(f"DROP TABLE IF EXISTS {name}")
    conn.execute(f"CREATE UNLOGGED TABLE {name} (id bigint, a text, b text{extras_def})")
    conn.execute(
        f"INSERT INTO {name} SELECT g, 'user' || g || '.' || substr(md5(g::text), 1, 8) || '@example.com',"
        f" '+32 4' || lpad(((g::bigint * 7919) % 100000000)::text, 8, '0'){extras_val}"
        f" FROM generate_series(1, {rows}) AS g"
    )


def fresh(conn: psycopg.Connection, source: str, limit: int | None = None) -> None:
    """Table ``t`` as a logged copy of ``source``, frozen and checkpointed: every measurement starts alike."""
    conn.execute("DROP TABLE IF EXISTS t")
    lim = f" ORDER BY id LIMIT {limit}" if limit else ""
    conn.execute(f"CREATE TABLE t AS SELECT * FROM {source}{lim}")
    conn.execute("ALTER TABLE t ADD PRIMARY KEY (id)")
    conn.execute("VACUUM (FREEZE, ANALYZE) t")
    conn.execute("CHECKPOINT")


def timed(conn: psycopg.Connection, action: Callable[[], int]) -> Measure:
    start = wal_lsn(conn)
    clock = time.perf_counter()
    rows = action()
    seconds = time.perf_counter() - clock
    return Measure(seconds, wal_diff(conn, start), rows)


def median(runs: list[Measure]) -> Measure:
    """The run with the median time (the machine is noisy: ±10% between identical runs)."""
    return sorted(runs, key=lambda m: m.seconds)[len(runs) // 2]


def bench_shape(
    url: str, admin: psycopg.Connection, source: str, rows: int, sample: int, repeat: int
) -> dict[str, Measure]:
    fmt = TokenFormat()
    policy = TokenizePolicy(
        tenant="bench", tables=(TableTarget(SqlName("public"), SqlName("t"), (SqlName("a"), SqlName("b"))),)
    )
    the_plan = plan(policy, TokenizeOptions(format=fmt, key=KEY, statement_timeout_ms=0))
    one_update = plan(policy, TokenizeOptions(format=fmt, key=KEY, statement_timeout_ms=0, batch_pages=0))
    out: dict[str, Measure] = {}

    def raw() -> int:
        with psycopg.connect(url) as c:
            cur = c.execute("UPDATE t SET a = a || '', b = b || ''")
            return cur.rowcount

    runs = []
    for _ in range(repeat):
        fresh(admin, source)
        runs.append(timed(admin, raw))
    out["raw UPDATE"] = median(runs)

    def hmac_only(workers: int) -> Callable[[], int]:
        return lambda: _hmac_select(workers)

    def _hmac_select(workers: int) -> int:
        with psycopg.connect(url, autocommit=True) as c:
            # An UPDATE never runs in parallel; a SELECT does when it can (the pads are InitPlans, computed by the
            # leader). The baseline of "rewrite + HMAC" is the serial one; the parallel one is shown beside it.
            c.execute(sql.SQL("SET max_parallel_workers_per_gather = {}").format(sql.Literal(workers)))
            pads = the_plan.tokenizer.pads
            c.execute(st.create_key_table())
            with c.cursor() as cur, cur.copy(st.copy_key()) as cp:
                cp.write_row((pads.ipad, pads.opad))
            q = sql.SQL("SELECT count(*), sum(length({ta}) + length({tb})) FROM t").format(
                ta=st.token_expr(SqlName("a"), fmt), tb=st.token_expr(SqlName("b"), fmt)
            )
            row = c.execute(q).fetchone()
            assert row
            return int(row[0])

    fresh(admin, source)
    out["HMAC only (SELECT)"] = median([timed(admin, hmac_only(0)) for _ in range(repeat)])
    out["HMAC only, parallel SELECT (2 workers)"] = median([timed(admin, hmac_only(2)) for _ in range(repeat)])

    def engine(dry: bool = False, the_plan: TokenizePlan = the_plan) -> Callable[[], int]:
        def go() -> int:
            result = run(the_plan, dry_run=dry, connect=url)
            assert result.ok, result.error
            return result.total_rows

        return go

    out["dry run (untokenized)"] = median([timed(admin, engine(dry=True)) for _ in range(repeat)])
    runs = []
    for _ in range(repeat):
        fresh(admin, source)
        runs.append(timed(admin, engine()))
    out["engine"] = median(runs)
    runs = []
    for _ in range(repeat):
        fresh(admin, source)
        runs.append(timed(admin, engine(the_plan=one_update)))
    out["engine, one UPDATE (batch_pages=0)"] = median(runs)
    admin.execute("CHECKPOINT")
    out["engine rerun (0 changes)"] = timed(admin, engine())
    out["dry run (tokenized)"] = timed(admin, engine(dry=True))

    def poc(client_side: bool) -> Callable[[], int]:
        def go() -> int:
            # client_side: psycopg2's way (values interpolated into each statement, nothing prepared), as the
            # original proof of concept ran; otherwise psycopg 3's default (server-side binding, auto-prepared).
            options: dict[str, object] = (
                {"cursor_factory": psycopg.ClientCursor, "prepare_threshold": None} if client_side else {}
            )
            with psycopg.connect(url, **options) as c:  # type: ignore[arg-type]
                selected = c.execute("SELECT id, a, b FROM t FOR UPDATE").fetchall()
                with c.cursor() as cur:
                    for rid, a, b in selected:
                        cur.execute(
                            "UPDATE t SET a = %s, b = %s WHERE id = %s",
                            (
                                "tok_" + base64.b64encode(a.encode()).decode() + "_poc",
                                "tok_" + base64.b64encode(b.encode()).decode() + "_poc",
                                rid,
                            ),
                        )
                return len(selected)

        return go

    for client_side, label in ((True, "psycopg2-style"), (False, "prepared")):
        fresh(admin, source, limit=sample)
        m = timed(admin, poc(client_side))
        scale = rows / m.rows
        out[f"PoC row-by-row, {label} ({m.rows:,} rows, extrapolated)"] = Measure(
            m.seconds * scale, int(m.wal_bytes * scale), rows
        )
    admin.execute("DROP TABLE t")
    return out


def report(shape: str, rows: int, res: dict[str, Measure]) -> tuple[list[str], dict[str, object]]:
    lines = [f"**{shape}**", "", "| measurement | seconds | rows/s | WAL MB |", "|---|---:|---:|---:|"]
    for name, m in res.items():
        lines.append(f"| {name} | {m.seconds:.2f} | {rows / m.seconds:,.0f} | {m.wal_bytes / 1e6:,.0f} |")
    raw, hm, eng = res["raw UPDATE"], res["HMAC only (SELECT)"], res["engine"]
    one = res["engine, one UPDATE (batch_pages=0)"]
    poc, poc_prepared = (v for k, v in res.items() if k.startswith("PoC"))
    ratios: dict[str, object] = {
        "engine / (raw + hmac)": round(eng.seconds / (raw.seconds + hm.seconds), 3),
        "engine rows/s": round(rows / eng.seconds),
        "engine speed / raw speed": round(raw.seconds / eng.seconds, 3),
        "one-UPDATE engine speed / raw speed": round(raw.seconds / one.seconds, 3),
        "engine speed / PoC speed (psycopg2-style)": round(poc.seconds / eng.seconds, 1),
        "engine speed / PoC speed (prepared)": round(poc_prepared.seconds / eng.seconds, 1),
        "engine WAL / raw WAL": round(eng.wal_bytes / raw.wal_bytes, 3),
        "rerun / raw": round(res["engine rerun (0 changes)"].seconds / raw.seconds, 3),
        "dry run s per 1M rows": round(res["dry run (untokenized)"].seconds * 1e6 / rows, 2),
    }
    lines += ["", "| ratio | value |", "|---|---:|"] + [f"| {k} | {v} |" for k, v in ratios.items()]
    return lines, ratios


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=20_000, help="rows for the row-by-row baseline")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each main measurement; the median is shown")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    args = parser.parse_args()

    url = os.environ.get("PROVISIONER_DATABASE_URL")
    if not url:
        # Left on disk for inspection (the embedded server stops when this process exits).
        data_dir = Path(tempfile.mkdtemp(prefix="bench-tokenize-")) / "pg"
        url = db.start_embedded(data_dir).url
        print(f"embedded PostgreSQL in {data_dir}", file=sys.stderr)
    with psycopg.connect(url, autocommit=True) as admin:
        for name, value in SERVER_SETTINGS.items():
            admin.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
        admin.execute("SELECT pg_reload_conf()")
        time.sleep(1)  # the reload is asynchronous: let the postmaster apply it before SHOW and the first run
        version = admin.execute("SHOW server_version").fetchone()
        shown = {
            n: admin.execute(sql.SQL("SHOW {}").format(sql.Identifier(n))).fetchone()
            for n in (
                "shared_buffers",
                "max_wal_size",
                "checkpoint_timeout",
                "full_page_writes",
                "fsync",
                "synchronous_commit",
                "wal_compression",
                "data_checksums",
                "work_mem",
            )
        }
        print(f"PostgreSQL {version[0] if version else '?'}; {os.cpu_count()} CPUs; {platform.platform()}")
        print("server settings: " + ", ".join(f"{k}={v[0] if v else '?'}" for k, v in shown.items()))
        all_lines: list[str] = []
        figures: dict[str, object] = {}
        for shape, extra in (("narrow: id + 2 PII text columns", 0), ("wide: id + 2 PII + 19 other columns", 19)):
            source = "src_wide" if extra else "src_narrow"
            clock = time.perf_counter()
            build_source(admin, source, args.rows, extra)
            print(f"built {source} in {time.perf_counter() - clock:.1f}s", file=sys.stderr)
            res = bench_shape(url, admin, source, args.rows, args.sample, args.repeat)
            lines, ratios = report(f"{shape}, {args.rows:,} rows", args.rows, res)
            all_lines += [*lines, ""]
            figures[shape] = {"ratios": ratios, **{k: vars(v) for k, v in res.items()}}
            print("\n".join(lines) + "\n", flush=True)
            admin.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(source)))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the Python process: {peak_mb:.0f} MB")
    figures["peak_rss_mb"] = round(peak_mb)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
