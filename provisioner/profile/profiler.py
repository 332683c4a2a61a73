"""Profile tables in a tenant's PostgreSQL, as the tenant's role, without pulling a table into Python.

Per table, in this order:

1. look the table and its columns up (columns the role may not SELECT are listed as skipped);
2. ``ANALYZE`` it unless its statistics are fresh (analyzed, and fewer than 10% of its rows changed since; under
   ``lock_timeout``; a role that may not analyze gets PostgreSQL's warning and the statistics there are), then
   read ``pg_stats``: distinct estimates and the most common values;
3. take a sample with ``TABLESAMPLE`` (``BERNOULLI`` up to 100,000 rows, ``SYSTEM`` above, ``REPEATABLE`` so a
   rerun sees the same rows) and match its values against the validated PII patterns, in Python;
4. one aggregate pass: rows, and per column nulls, empties and lengths (text), minimum and maximum (numbers,
   dates), rows outside an allowed-list candidate (to make ``is_in_list`` exact), exact distinct counts on request;
5. score proposals (``proposals``) and suggest DQX checks (``checks``).

Steps 3 and 4 run in one read-only transaction. A run is recorded (``tokenize_runs``, kind ``profile``) with
counts only, and logged as ``profile.started`` / ``profile.success`` / ``profile.error``: never a value.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import psycopg
from psycopg import errors as pg_errors

from provisioner.errors import ProvisionerError, classify
from provisioner.logs import log_event, redact_text
from provisioner.profile import hints
from provisioner.profile import patterns as p
from provisioner.profile import queries as q
from provisioner.profile.checks import TEMPORAL, suggest_checks
from provisioner.profile.connect import APPLICATION_NAME, opener
from provisioner.profile.errors import ProfileTargetError
from provisioner.profile.model import (
    ColumnProfile,
    ProfileOptions,
    ProfileProgress,
    ProfileResult,
    Progress,
    TableName,
    TableProfile,
)
from provisioner.profile.proposals import Proposal, propose
from provisioner.profile.scan import ColumnScan, estimate_distinct, scan_column, token_matcher
from provisioner.tokenize import RunRecorder
from provisioner.tokenize.engine import Connect
from provisioner.tokenize.recording import INTERNAL_ERROR, recorded_run

log = logging.getLogger("provisioner.profile")

BERNOULLI_UP_TO = 100_000  # rows; above, SYSTEM (whole pages) keeps the sample from reading the whole table
_ROWS_PER_PAGE_GUESS = 60  # when the table was never analyzed and its row count is unknown
_READABLE_KINDS = {"r": "table", "p": "partitioned table", "m": "materialized view", "v": "view", "f": "foreign table"}
_SAMPLEABLE_KINDS = frozenset({"r", "p", "m"})
STALE_SHARE = 0.1  # statistics count as stale once this share of the rows changed since the last ANALYZE


def profile(
    tenant: str,
    tables: Sequence[TableName],
    *,
    connect: Connect,
    options: ProfileOptions | None = None,
    recorder: RunRecorder | None = None,
    progress: Progress | None = None,
) -> ProfileResult:
    """Profile ``tables`` as ``tenant``'s role; record and log the run. Never raises for a failed run (the result
    says why); errors of the recorder itself do propagate."""
    options = options or ProfileOptions()
    names = [str(t) for t in tables]
    with recorded_run(recorder, tenant=tenant, policy="profile", dry_run=False, tables=names, kind="profile") as opened:
        log_event(
            log,
            "profile.started",
            run_id=opened.run_id,
            tenant=tenant,
            tables=names,
            sample_rows=options.sample_rows,
        )
        done: list[TableProfile] = []
        error: str | None = None
        retryable = False
        try:
            conn = opener(connect)(tenant)
            try:
                prepare_session(conn, options)
                for index, name in enumerate(tables, start=1):
                    if progress:
                        progress(ProfileProgress(index, len(tables), str(name), "started"))
                    table_clock = time.perf_counter()
                    try:
                        done.append(profile_table(conn, name, options, on_sampled=_sampled(progress, index, tables)))
                    except BaseException:
                        if progress:
                            elapsed = time.perf_counter() - table_clock
                            progress(ProfileProgress(index, len(tables), str(name), "failed", elapsed))
                        raise
                    if progress:
                        progress(ProfileProgress(index, len(tables), str(name), "finished", done[-1].seconds))
            finally:
                conn.close()
        except ProvisionerError as exc:
            error, retryable = str(exc), classify(exc).temporary  # the error policy: declared to pass
        except psycopg.Error as exc:
            error, retryable = describe_error(exc, tenant), _retryable(exc)
        except Exception as exc:  # a defect: still close the run record rather than leave it RUNNING
            log.exception("profile.internal_error")
            error = INTERNAL_ERROR.format(type(exc).__name__)
        rows = sum(t.rows for t in done)
        status: Literal["SUCCESS", "FAILURE"] = "FAILURE" if error else "SUCCESS"
        finished_at, duration = opened.close(
            status, error=error, total_rows=rows, detail={"tables": {t.table: t.record() for t in done}}
        )
    run_id = opened.run_id
    result = ProfileResult(
        run_id=run_id,
        status=status,
        tenant=tenant,
        tables=tuple(done),
        error=error,
        retryable=retryable,
        started_at=opened.started_at,
        finished_at=finished_at,
        duration_s=duration,
    )
    if error:
        log_event(
            log,
            "profile.error",
            level=logging.ERROR,
            run_id=run_id,
            tenant=tenant,
            error=error,
            retryable=retryable,
            tables_done=len(done),
            duration_s=round(duration, 3),
        )
    else:
        log_event(
            log,
            "profile.success",
            run_id=run_id,
            tenant=tenant,
            tables=len(done),
            rows=rows,
            columns=sum(len(t.columns) for t in done),
            proposed=sum(len(t.proposed) for t in done),
            checks=sum(len(t.checks) for t in done),
            duration_s=round(duration, 3),
        )
    return result


def _sampled(progress: Progress | None, index: int, tables: Sequence[TableName]) -> Callable[[float], None] | None:
    if progress is None:
        return None
    return lambda seconds: progress(ProfileProgress(index, len(tables), str(tables[index - 1]), "sampled", seconds))


def prepare_session(conn: psycopg.Connection, options: ProfileOptions) -> None:
    """Autocommit, UTF-8, our application name, and the statement and lock timeouts."""
    conn.autocommit = True
    conn.execute(
        "SELECT set_config('application_name', %s, false), set_config('client_encoding', 'UTF8', false),"
        " set_config('statement_timeout', %s, false), set_config('lock_timeout', %s, false)",
        (APPLICATION_NAME, f"{options.statement_timeout_ms}ms", f"{options.lock_timeout_ms}ms"),
    )


@dataclass(frozen=True)
class Relation:
    """A table as the catalog describes it to the tenant role."""

    name: TableName
    oid: int
    relkind: str
    reltuples: float
    pages: int
    columns: tuple[tuple[str, str, str, bool], ...]  # (name, shown type, category, readable)

    @property
    def readable(self) -> list[q.Col]:
        """Columns the role may SELECT."""
        return [q.Col(n, cat) for n, _, cat, ok in self.columns if ok]

    @property
    def estimated_rows(self) -> float | None:
        """The planner's row estimate; None when the table was never analyzed or vacuumed."""
        return self.reltuples if self.reltuples >= 0 and (self.reltuples > 0 or self.pages == 0) else None


def describe(conn: psycopg.Connection, name: TableName) -> Relation:
    """Look a table up as the tenant role; ProfileTargetError when it is missing, not readable or not a table."""
    found = conn.execute(q.FIND_RELATION, (name.schema, name.table)).fetchone()
    if found is None:
        raise ProfileTargetError(f"table {name} does not exist (or the tenant role cannot see it)")
    oid, relkind, reltuples, pages = found
    if relkind not in _READABLE_KINDS:
        raise ProfileTargetError(f"{name} is not a table or view (relkind {relkind!r}); it cannot be profiled")
    columns = tuple(
        (n, shown, q.category(typname, typcat), bool(ok))
        for n, shown, typname, typcat, ok in conn.execute(q.DESCRIBE_COLUMNS, (oid,)).fetchall()
    )
    if not any(ok for *_, ok in columns):
        raise ProfileTargetError(f"the tenant role may not SELECT any column of {name}; grant SELECT to profile it")
    return Relation(name, int(oid), str(relkind), float(reltuples), int(pages), columns)


def stale_statistics(conn: psycopg.Connection, relation: Relation) -> bool:
    """True when the table was never analyzed or more than 10% of its rows changed since (pg_stat_all_tables)."""
    found = conn.execute(q.FRESHNESS, (relation.oid,)).fetchone()
    if found is None:
        return True
    analyzed_once, changed = found
    return not analyzed_once or changed > STALE_SHARE * max(relation.reltuples, 0) + 50


def analyze(conn: psycopg.Connection, relation: Relation) -> str:
    """ANALYZE the table for fresh pg_stats: ``analyzed``, or ``stale: <why>`` when the role may not (PostgreSQL
    only warns) or another transaction holds a conflicting lock past ``lock_timeout``."""
    warnings: list[str] = []

    def collect(diag: psycopg.errors.Diagnostic) -> None:
        warnings.append(diag.severity_nonlocalized or diag.severity or "")

    conn.add_notice_handler(collect)
    try:
        conn.execute(q.analyze(relation.name.schema, relation.name.table))
    except pg_errors.LockNotAvailable:
        log_event(log, "profile.analyze_skipped", level=logging.WARNING, table=str(relation.name), reason="lock busy")
        return "stale: ANALYZE waited past lock_timeout for another transaction"
    finally:
        conn.remove_notice_handler(collect)
    if "WARNING" in warnings:
        return "stale: the tenant role may not ANALYZE it (owner or MAINTAIN privilege needed)"
    return "analyzed"


def sampling(relation: Relation, sample_rows: int) -> tuple[str | None, float]:
    """The TABLESAMPLE method and percentage that return about ``sample_rows`` rows (None: the first rows)."""
    if relation.relkind not in _SAMPLEABLE_KINDS:
        return None, 100.0
    estimated = relation.estimated_rows
    if estimated is None:
        estimated = relation.pages * _ROWS_PER_PAGE_GUESS
    if estimated <= sample_rows * 1.2:
        return None, 100.0
    if estimated <= BERNOULLI_UP_TO:
        return "BERNOULLI", min(100.0, 100.0 * sample_rows * 1.3 / estimated)
    # SYSTEM picks whole pages: ask for half as many again to make up for pages that are not full.
    return "SYSTEM", min(100.0, 100.0 * sample_rows * 1.5 / estimated)


def take_sample(
    conn: psycopg.Connection, relation: Relation, columns: Sequence[q.Col], options: ProfileOptions
) -> tuple[list[tuple[Any, ...]], str]:
    """The sampled rows of ``columns`` (as text) and how they were taken."""
    if not columns:
        return [], "none"
    method, percent = sampling(relation, options.sample_rows)
    statement = q.sample(
        relation.name.schema,
        relation.name.table,
        columns,
        method=method,
        percent=percent,
        seed=options.seed,
        limit=options.sample_rows,
    )
    rows = conn.execute(statement).fetchall()
    shown = f"{method} {percent:.3g}%" if method else "first rows"
    return rows, shown


def scan_sample(
    rows: Sequence[tuple[Any, ...]],
    columns: Sequence[q.Col],
    options: ProfileOptions,
    *,
    names_and_dates: bool = True,
) -> dict[str, ColumnScan]:
    """Each sampled column's scan (whole values for text, integers and addresses; free text for text and JSON)."""
    guard = token_matcher(options.token_format.guard_pattern)
    scans = {}
    for i, col in enumerate(columns):
        suggested = hints.name_suggests(col.name) if names_and_dates else None
        scans[col.name] = scan_column(
            col.name,
            (row[i] for row in rows),
            is_token=guard,
            whole_values=col.category != q.JSON,
            free_text=col.category in (q.TEXT, q.JSON),
            names=suggested == p.NAME and col.category == q.TEXT,
            dates=suggested == p.DOB and col.category == q.TEXT,
        )
    return scans


def profile_table(
    conn: psycopg.Connection,
    name: TableName,
    options: ProfileOptions,
    *,
    on_sampled: Callable[[float], None] | None = None,
) -> TableProfile:
    """Profile one table on an open session (see the module's docstring for the steps)."""
    clock = time.perf_counter()
    relation = describe(conn, name)
    if relation.relkind not in _SAMPLEABLE_KINDS:
        statistics = "none"
    elif options.analyze == "always" or (options.analyze == "auto" and stale_statistics(conn, relation)):
        statistics = analyze(conn, relation)
        if statistics == "analyzed":
            relation = describe(conn, name)  # reltuples and pages as ANALYZE left them
    else:
        statistics = "fresh" if options.analyze == "auto" else "as found (--analyze never)"
    columns = relation.readable
    listable = [c.name for c in columns if c.category in (q.TEXT, q.INTEGER)]
    found = conn.execute(q.COLUMN_STATS, (listable, name.schema, name.table)).fetchall()
    stats = {r[0]: (r[1], r[2], r[3]) for r in found}
    sampled = [c for c in columns if c.category in q.SAMPLED]
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        rows, method = take_sample(conn, relation, sampled, options)
        scans = scan_sample(rows, sampled, options)
        if on_sampled:
            on_sampled(time.perf_counter() - clock)
        candidates = _candidates(columns, stats, scans, options.checks.max_in_count)
        plan = q.aggregate(
            name.schema, name.table, columns, candidates=candidates, exact_distinct=options.exact_distinct
        )
        values = conn.execute(plan.statement, plan.params).fetchone()
    assert values is not None
    total = int(values[0])
    measures: dict[str, dict[str, Any]] = {c.name: {} for c in columns}
    for (column, measure), value in zip(plan.layout, values[1:], strict=True):
        measures[column][measure] = value
    profiles = []
    by_name = {c.name: c for c in columns}
    for col_name, shown, category, readable in relation.columns:
        if not readable:
            profiles.append(ColumnProfile(col_name, shown, category, skipped="the tenant role may not SELECT it"))
            continue
        profiles.append(
            _column_profile(
                by_name[col_name],
                shown,
                total,
                measures[col_name],
                stats.get(col_name),
                scans.get(col_name),
                candidates.get(col_name),
            )
        )
    checks = suggest_checks([c for c in profiles if not c.skipped], total, options.checks)
    return TableProfile(
        table=str(name),
        rows=total,
        sampled_rows=len(rows),
        sample_method=method,
        statistics=statistics,
        columns=tuple(profiles),
        checks=tuple(checks),
        seconds=time.perf_counter() - clock,
    )


def _candidates(
    columns: Sequence[q.Col],
    stats: Mapping[str, tuple[float, float, list[str] | None]],
    scans: Mapping[str, ColumnScan],
    max_in_count: int,
) -> dict[str, list[str]]:
    """Columns with few distinct values and the list to verify in the aggregate pass: pg_stats' most common
    values when they cover every distinct value, else the sample's values."""
    out: dict[str, list[str]] = {}
    for col in columns:
        if col.category not in (q.TEXT, q.INTEGER):
            continue
        found = stats.get(col.name)
        if found is not None:
            _, n_distinct, common = found
            if common and 0 < n_distinct < max_in_count and len(common) == round(n_distinct):
                out[col.name] = list(common)
                continue
        scan = scans.get(col.name)
        if scan is not None and 0 < scan.distinct < max_in_count:
            out[col.name] = sorted(scan.frequencies)
    return out


def _column_profile(
    col: q.Col,
    shown: str,
    rows: int,
    measures: Mapping[str, Any],
    stats: tuple[float, float, list[str] | None] | None,
    scan: ColumnScan | None,
    candidates: list[str] | None,
) -> ColumnProfile:
    non_null = int(measures["non_null"])
    distinct, source = None, None
    if "distinct" in measures:
        distinct, source = int(measures["distinct"]), "exact"
    elif stats is not None and stats[1] is not None:
        n_distinct = float(stats[1])
        distinct = round(n_distinct if n_distinct >= 0 else -n_distinct * rows)
        distinct, source = min(distinct, non_null), "pg_stats"
    elif scan is not None:
        distinct, source = estimate_distinct(scan, non_null), "sample"
    allowed = None
    if candidates is not None and measures.get("outside_candidates") == 0 and non_null:
        allowed = tuple(candidates)
    length = None
    if col.category == q.TEXT:
        length = {
            "min": measures["min_length"],
            "max": measures["max_length"],
            "avg": round(measures["avg_length"], 2) if measures["avg_length"] is not None else None,
        }
    minimum, maximum = measures.get("min"), measures.get("max")
    if scan is not None or col.category == TEMPORAL:
        proposal = propose(col.name, scan, rows=rows, distinct_estimate=distinct, minimum=minimum, maximum=maximum)
    else:
        proposal = Proposal()
    return ColumnProfile(
        name=col.name,
        type=shown,
        category=col.category,
        nulls=rows - non_null,
        empties=measures.get("empties"),
        distinct_estimate=distinct,
        distinct_source=source,
        minimum=minimum,
        maximum=maximum,
        length=length,
        allowed=allowed,
        proposal=proposal,
    )


def _retryable(exc: psycopg.Error) -> bool:
    return isinstance(
        exc, pg_errors.LockNotAvailable | pg_errors.DeadlockDetected | psycopg.OperationalError
    ) and not isinstance(exc, pg_errors.QueryCanceled)


def describe_error(exc: psycopg.Error, tenant: str) -> str:
    """A database error in words a person can act on; only the primary message (DETAIL may quote values)."""
    diag = exc.diag
    primary = diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    if isinstance(exc, pg_errors.QueryCanceled):
        return f"tenant {tenant}: a profile statement was cancelled by statement_timeout; profile fewer tables"
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return f"tenant {tenant}: the tenant role lacks a privilege: {primary}"
    state = f" (SQLSTATE {diag.sqlstate})" if diag.sqlstate else ""
    return redact_text(f"tenant {tenant}: {primary}{state}")
