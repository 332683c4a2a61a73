"""The PostgreSQL executor: ``plan(policy) -> TokenizePlan`` and ``run(plan) -> RunResult``.

How a run goes:

1. The column limit is checked, then every table and column is looked up as the tenant's role (exists, is a
   table, text or varchar wide enough for a token, not generated, SELECT and UPDATE granted). Any problem
   fails the run here, before a single write, with a message naming the table or column.
2. In hmac mode the padded key is loaded by ``COPY … FROM STDIN`` into a session temporary table: key bytes
   never appear in SQL text or bound parameters, so ``log_statement = 'all'`` cannot write them to the log.
3. Each table is rewritten in its own transaction: ``SET LOCAL lock_timeout/statement_timeout``, then
   ``LOCK TABLE … IN SHARE ROW EXCLUSIVE MODE``, then its name is resolved again: it must still be the relation
   the preflight checked (else TableReplaced, retryable: it was renamed or re-created while the run waited), and
   row-level security must still not apply. Every later statement names that locked relation, which cannot be
   renamed or dropped until commit. Then a count of the rows and values to tokenize, and one set-based
   ``UPDATE`` over all its PII columns, ``WHERE`` some value is not NULL, not empty and not already a token,
   which must rewrite exactly the rows counted (else RowCountMismatch: a value would stay untokenized).
   A table larger than ``batch_pages`` is rewritten in page batches within that same transaction, its tokens
   computed on a helper connection meanwhile (``batches`` module): an UPDATE never runs on more than one CPU.
4. Still under the lock, one scan counts the values that are still not tokens, with the same guard; any
   (a trigger that puts the old value back, a rule) fails the table with PlaintextRemains and rolls it back.
   SUCCESS thus means: no value the tenant role can see is left in plaintext, and row-level security (which
   would hide rows from that role) is refused with RowSecurityActive before anything is written.

Why a table lock rather than row locks: ``SELECT … FOR UPDATE`` of every row writes WAL for each row and
still lets new rows be inserted (untokenized) while the run works. SHARE ROW EXCLUSIVE lets readers go on
(they see the old values until commit), blocks writers until commit, and conflicts with itself so two runs on
one table take turns. ``lock_timeout`` keeps a run from queueing behind, and stalling, a long transaction.

Any error rolls the table's transaction back (0 rows changed in it) and ends the run as FAILURE; tables
before it stay committed, which is harmless because a rerun skips values that are already tokens. A statement
cancelled by an administrator (``pg_cancel_backend``) is reported as cancelled, not as a statement_timeout.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import psycopg
from psycopg import errors as pg_errors

from provisioner.errors import ProvisionerError, TemporaryError, classify
from provisioner.logs import log_event, redact_text
from provisioner.tokenize import batches, statements
from provisioner.tokenize.errors import (
    PlaintextRemains,
    RowCountMismatch,
    RowSecurityActive,
    RunCancelled,
    TableReplaced,
    TargetError,
    TenantUnavailable,
)
from provisioner.tokenize.policy import TableTarget, TokenizePolicy
from provisioner.tokenize.recording import INTERNAL_ERROR, recorded_run
from provisioner.tokenize.records import RunRecorder
from provisioner.tokenize.tenants import PlanExecutor, TenantConnector, Tenants
from provisioner.tokenize.tokens import DEFAULT_KEY_ENV, TokenFormat, Tokenizer

log = logging.getLogger("provisioner.tokenize")

Status = Literal["SUCCESS", "FAILURE"]
#: What opens PostgreSQL connections as a tenant's role: a ``Tenants`` set, a connector, a conninfo or a callable.
PostgresConnect = Callable[[str], psycopg.Connection] | Tenants | TenantConnector | str
#: What ``run`` takes: the above, or the executor of a tenant of another kind (a Databricks warehouse).
Connect = PostgresConnect | PlanExecutor
_TEXT_TYPES = frozenset({"text", "character varying"})


@dataclass(frozen=True)
class TokenizeOptions:
    """Token format, key and limits; the CLI builds it from Settings, callers may build it by hand."""

    format: TokenFormat = field(default_factory=TokenFormat)
    key: bytes | str | None = field(default=None, repr=False)
    key_env: str = DEFAULT_KEY_ENV
    max_columns: int = 50
    lock_timeout_ms: int = 5000
    statement_timeout_ms: int = 600_000
    batch_pages: int = 256


@dataclass(frozen=True)
class TokenizePlan:
    """A validated policy with its tokenizer and limits, ready to run (or dry-run)."""

    policy: TokenizePolicy
    tokenizer: Tokenizer = field(repr=False)
    max_columns: int
    lock_timeout_ms: int
    statement_timeout_ms: int
    batch_pages: int

    @property
    def tenant(self) -> str:
        """The tenant whose connection and role the run uses."""
        return self.policy.tenant

    @property
    def tables(self) -> tuple[TableTarget, ...]:
        """Tables with at least one PII column, in policy order."""
        return tuple(t for t in self.policy.tables if t.columns)

    @property
    def column_count(self) -> int:
        """PII columns over every table."""
        return sum(len(t.columns) for t in self.tables)


@dataclass(frozen=True)
class TableResult:
    """What one table's transaction did (or, in a dry run, would do)."""

    table: str
    rows: int
    rows_by_column: Mapping[str, int]
    seconds: float
    batches: int = 1


@dataclass(frozen=True)
class RunResult:
    """The outcome of one run; ``status`` is SUCCESS only when every table was committed (or counted)."""

    run_id: str
    status: Status
    dry_run: bool
    tenant: str
    policy: str
    rows_by_column: Mapping[str, int]
    total_rows: int
    tables: tuple[TableResult, ...]
    error: str | None
    retryable: bool
    started_at: datetime
    finished_at: datetime
    duration_s: float

    @property
    def ok(self) -> bool:
        """True on SUCCESS."""
        return self.status == "SUCCESS"


@dataclass(frozen=True)
class TableProgress:
    """A progress event for displays: a table started, finished or failed."""

    index: int
    count: int
    table: str
    phase: Literal["started", "finished", "failed"]
    rows: int = 0
    seconds: float = 0.0
    batches: int = 1


Progress = Callable[[TableProgress], None]


def plan(policy: TokenizePolicy | Mapping[str, Any], options: TokenizeOptions | None = None) -> TokenizePlan:
    """Validate the policy and options into a plan; TokenizeConfigError when hmac mode has no key."""
    options = options or TokenizeOptions()
    if not isinstance(policy, TokenizePolicy):
        policy = TokenizePolicy.from_dict(policy)
    tokenizer = Tokenizer(options.format, options.key, key_env=options.key_env)
    limit = options.max_columns if policy.max_columns is None else min(policy.max_columns, options.max_columns)
    return TokenizePlan(
        policy=policy,
        tokenizer=tokenizer,
        max_columns=limit,
        lock_timeout_ms=options.lock_timeout_ms,
        statement_timeout_ms=options.statement_timeout_ms,
        batch_pages=options.batch_pages,
    )


def run(
    plan: TokenizePlan,
    dry_run: bool = False,
    *,
    connect: Connect,
    recorder: RunRecorder | None = None,
    progress: Progress | None = None,
) -> RunResult:
    """Execute (or dry-run) a plan against its tenant's database and record it; never raises for a failed run.

    ``connect`` opens a connection for a tenant id: a ``Tenants`` set, one ``TenantConnector``, a conninfo
    string, or a callable. Errors of the recorder itself (RecorderError) do propagate.
    """
    tables = [t.name for t in plan.tables]
    policy = plan.policy.name
    with recorded_run(recorder, tenant=plan.tenant, policy=policy, dry_run=dry_run, tables=tables) as opened:
        log_event(
            log,
            "run.started",
            run_id=opened.run_id,
            tenant=plan.tenant,
            policy=policy,
            dry_run=dry_run,
            tables=tables,
            columns=plan.column_count,
            tokenize_mode=plan.tokenizer.format.mode,
        )
        done: list[TableResult] = []
        error: str | None = None
        retryable = False
        try:
            # A tenant of another kind (Databricks) runs the plan itself: same records and events.
            if isinstance(connect, PlanExecutor):
                connect.execute_plan(plan, dry_run, done, progress)
            elif isinstance(connect, Tenants) and (executor := connect.executor(plan.tenant)) is not None:
                executor.execute_plan(plan, dry_run, done, progress)
            else:
                _execute(plan, dry_run, _opener(connect), done, progress)
        except ProvisionerError as exc:
            error, retryable = str(exc), classify(exc).temporary  # the error policy: declared to pass
        except psycopg.Error as exc:  # outside a table (e.g. connection lost while loading the key)
            error, retryable = _describe(exc, plan, None), _retryable(exc)
        except Exception as exc:  # a defect: still close the run record rather than leave it RUNNING
            log.exception("tokenize.internal_error")
            error = INTERNAL_ERROR.format(type(exc).__name__)
        rows_by_column = {k: v for t in done for k, v in t.rows_by_column.items()}
        status: Literal["SUCCESS", "FAILURE"] = "FAILURE" if error else "SUCCESS"
        total_rows = sum(t.rows for t in done)
        finished_at, duration = opened.close(status, error=error, total_rows=total_rows, rows_by_column=rows_by_column)
    result = RunResult(
        run_id=opened.run_id,
        status=status,
        dry_run=dry_run,
        tenant=plan.tenant,
        policy=policy,
        rows_by_column=rows_by_column,
        total_rows=total_rows,
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
            "tokenize.error",
            level=logging.ERROR,
            run_id=result.run_id,
            tenant=plan.tenant,
            dry_run=dry_run,
            error=error,
            retryable=retryable,
            rows_committed=result.total_rows,
            duration_s=round(duration, 3),
        )
    else:
        log_event(
            log,
            "tokenize.success",
            run_id=result.run_id,
            tenant=plan.tenant,
            dry_run=dry_run,
            total_rows=result.total_rows,
            rows_by_column=rows_by_column,
            duration_s=round(duration, 3),
        )
    return result


def _opener(connect: PostgresConnect) -> Callable[[str], psycopg.Connection]:
    if isinstance(connect, Tenants):
        return connect.connect
    if isinstance(connect, TenantConnector):
        return lambda _tenant: connect.connect()
    if isinstance(connect, str):
        return lambda _tenant: psycopg.connect(connect, application_name="provisioner-tokenize")
    return connect


def _execute(
    plan: TokenizePlan,
    dry_run: bool,
    connect: Callable[[str], psycopg.Connection],
    done: list[TableResult],
    progress: Progress | None,
) -> None:
    if plan.column_count > plan.max_columns:
        raise TargetError(
            f"the policy names {plan.column_count} PII columns, more than max_columns={plan.max_columns}: "
            "split the policy or raise the limit (nothing was written)"
        )
    conn = connect(plan.tenant)
    try:
        conn.autocommit = True
        # The SQL tokens hash textsend() bytes, which are in the client encoding: UTF-8, as Python hashes.
        conn.execute("SET client_encoding TO 'UTF8'")
        found = {table.name: _preflight(conn, table, plan.tokenizer.format) for table in plan.tables}
        fmt = plan.tokenizer.format
        if not dry_run and fmt.mode == "hmac":
            _load_key(conn, plan.tokenizer)
        count = len(plan.tables)
        for index, table in enumerate(plan.tables, start=1):
            if progress:
                progress(TableProgress(index, count, table.name, "started"))
            clock = time.perf_counter()
            try:
                target = found[table.name]
                big = not dry_run and _worth_batching(conn, plan, target)
                batching = _Batching(connect) if big else None
                rows, per_column, batch_count = _table(conn, plan, table, dry_run, target, batching=batching)
            except (psycopg.Error, TargetError, TableReplaced) as exc:
                if progress:
                    progress(TableProgress(index, count, table.name, "failed", seconds=time.perf_counter() - clock))
                if not isinstance(exc, psycopg.Error):
                    raise
                raise _typed(exc, plan, table) from None
            seconds = time.perf_counter() - clock
            done.append(TableResult(table.name, rows, per_column, seconds, batch_count))
            if progress:
                progress(
                    TableProgress(index, count, table.name, "finished", rows=rows, seconds=seconds, batches=batch_count)
                )
        if not dry_run and fmt.mode == "hmac":
            conn.execute(statements.drop_key_table())
    finally:
        conn.close()


class _TableTemporary(TemporaryError):
    """A table's transaction failed in a way that may pass (lock timeout, deadlock, lost connection)."""


def _typed(exc: psycopg.Error, plan: TokenizePlan, table: TableTarget) -> ProvisionerError:
    """The error a failed table's transaction ends the run with: retryable, cancelled, or permanent."""
    message = _describe(exc, plan, table)
    if _retryable(exc):
        return _TableTemporary(message)
    if _cancelled_by_user(exc):
        return RunCancelled(message)
    return TargetError(message)


def _find(conn: psycopg.Connection, table: TableTarget) -> _Found | None:
    """The relation the table's name points to now (under the lock: the one locked)."""
    row = conn.execute(statements.FIND_TABLE, (table.schema, table.table)).fetchone()
    if row is None:
        return None
    oid, relkind, has_children, row_security, forced, role = row
    return _Found(int(oid), str(relkind), bool(has_children), bool(row_security), bool(forced), str(role))


def preflight(conn: psycopg.Connection, tables: tuple[TableTarget, ...], fmt: TokenFormat) -> None:
    """Check, without writing, what a run checks before its first write, for every table (``provisioner check``).

    Raises the run's own error for the first problem: a missing table or column, a column of the wrong type or
    too short, a missing SELECT or UPDATE privilege, row-level security in force.
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        for table in tables:
            _preflight(conn, table, fmt)


def _preflight(conn: psycopg.Connection, table: TableTarget, fmt: TokenFormat) -> _Found:
    found = _find(conn, table)
    if found is None:
        raise TargetError(f"table {table.name} does not exist (or the tenant role cannot see it)")
    oid, relkind = found.oid, found.relkind
    if relkind not in ("r", "p"):
        raise TargetError(f"{table.name} is not a table (relkind {relkind!r}); only tables can be tokenized")
    _refuse_row_security(found, table)
    role, can_update_table = conn.execute(statements.TABLE_PRIVILEGES, (oid,)).fetchone() or ("?", False)
    described = {r[0]: r[1:] for r in conn.execute(statements.DESCRIBE_COLUMNS, (oid, list(table.columns))).fetchall()}
    for column in table.columns:
        if column not in described:
            raise TargetError(f"column {column!r} does not exist in table {table.name}")
        shown, base, max_len, generated, can_select, can_update = described[column]
        where = f"{table.name}.{column}"
        if base not in _TEXT_TYPES:
            raise TargetError(f"column {where} is of type {shown}; tokens need a text or varchar column")
        if generated:
            raise TargetError(f"column {where} is a generated column and cannot be rewritten")
        if fmt.token_length and max_len is not None and max_len < fmt.token_length:
            raise TargetError(f"column {where} is {shown}, too short for {fmt.token_length}-character tokens")
        if not (can_select and can_update):
            raise TargetError(f"role {role} lacks SELECT and UPDATE on column {where}; grant them to tokenize it")
    if not can_update_table:
        raise TargetError(
            f"role {role} lacks UPDATE on table {table.name} (needed to lock it against concurrent writes); grant it"
        )
    return found


def _refuse_row_security(found: _Found, table: TableTarget) -> None:
    # Rows a policy hides from the tenant role are neither counted nor rewritten nor seen by the check after the
    # rewrite: the run would say SUCCESS over plaintext. Only a role that bypasses row-level security may run.
    if found.row_security:
        raise RowSecurityActive(table.name, found.role, forced=found.forced_row_security)


@dataclass(frozen=True)
class _Found:
    oid: int
    relkind: str
    has_children: bool  # partitions or inheritance children, which the UPDATE rewrites too
    row_security: bool  # row-level security applies to the session's role (row_security_active)
    forced_row_security: bool
    role: str


def _lock(conn: psycopg.Connection, table: TableTarget, expected: _Found, *, batched: bool) -> _Found:
    """Lock the table, then check that its name still points to the relation the preflight checked.

    ``LOCK TABLE`` resolves the name again once it has waited, so a table renamed and replaced meanwhile gets the
    new relation locked: its pages were never counted, its columns never checked. That fails retryably. While the
    lock is held the relation can be neither renamed nor dropped, so the name means this relation until commit.
    """
    conn.execute(statements.lock_statement(table.schema, table.table))
    now = _find(conn, table)
    if now is None or (now.oid, now.relkind) != (expected.oid, expected.relkind):
        raise TableReplaced(table.name)
    if batched and now.has_children:  # a ctid no longer names one row: the batches would be wrong
        raise TableReplaced(table.name, "given partitions or inheritance children")
    _refuse_row_security(now, table)  # enabled between the preflight and the lock
    return now


def _worth_batching(conn: psycopg.Connection, plan: TokenizePlan, found: _Found) -> bool:
    """Tables larger than one batch are rewritten in batches with a helper connection (``batches`` module).

    Only plain tables without children (the same ctid names a row in each partition or inheritance child),
    only in hmac mode (base64 costs little to compute), and only from PostgreSQL 14, whose TID Range Scan
    reads just a batch's pages.
    """
    return (
        plan.batch_pages > 0
        and plan.tokenizer.format.mode == "hmac"
        and found.relkind == "r"
        and not found.has_children
        and conn.info.server_version >= 140000
        and batches.page_count(conn, found.oid) > plan.batch_pages
    )


@dataclass(frozen=True)
class _Batching:
    """What a batched rewrite needs besides the writer: how to open a tenant connection."""

    connect: Callable[[str], psycopg.Connection]

    def source(self, plan: TokenizePlan, table: TableTarget) -> batches.TokenSource | None:
        """A helper connection with the key loaded; None (one UPDATE will do, more slowly) if none can be had.

        A tenant at its connection limit, or one that refuses a second session, still gets its tables tokenized.
        """
        try:
            conn = self.connect(plan.tenant)
        except (psycopg.OperationalError, TenantUnavailable) as exc:
            log_event(
                log,
                "tokenize.helper_unavailable",
                level=logging.WARNING,
                tenant=plan.tenant,
                table=table.name,
                error=redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__),
                fallback="one UPDATE",
            )
            return None
        try:
            return batches.TokenSource(conn, plan.tokenizer.pads)
        except BaseException:
            conn.close()
            raise


def _load_key(conn: psycopg.Connection, tokenizer: Tokenizer) -> None:
    pads = tokenizer.pads
    conn.execute(statements.create_key_table())
    with conn.cursor() as cur, cur.copy(statements.copy_key()) as copy:
        copy.write_row((pads.ipad, pads.opad))


def _table(
    conn: psycopg.Connection,
    plan: TokenizePlan,
    table: TableTarget,
    dry_run: bool,
    found: _Found,
    *,
    batching: _Batching | None = None,
) -> tuple[int, dict[str, int], int]:
    """One table's transaction: rows changed (or to change), values per column, and the batches it took."""
    # Opened before the writer's transaction, so the key it loads is committed before the snapshot is taken.
    source = batching.source(plan, table) if batching else None
    if source is None:
        rows, per_column = _one_statement(conn, plan, table, dry_run, found)
        return rows, per_column, 1
    try:
        with conn.transaction():
            _timeouts(conn, plan)
            locked = _lock(conn, table, found, batched=True)
            rows, counts, done = batches.rewrite_in_batches(
                conn,
                source,
                table,
                plan.tokenizer.format,
                pages=batches.page_count(conn, locked.oid),  # again, under the lock: it may have grown
                batch_pages=plan.batch_pages,
                statement_timeout_ms=plan.statement_timeout_ms,
            )
            if rows:
                _check_no_plaintext(conn, plan, table)
    finally:
        source.close()
    return rows, dict(zip([f"{table.name}.{c}" for c in table.columns], counts, strict=True)), done


def _timeouts(conn: psycopg.Connection, plan: TokenizePlan) -> None:
    conn.execute(
        "SELECT set_config('lock_timeout', %s, true), set_config('statement_timeout', %s, true)",
        (f"{plan.lock_timeout_ms}ms", f"{plan.statement_timeout_ms}ms"),
    )


def _one_statement(
    conn: psycopg.Connection, plan: TokenizePlan, table: TableTarget, dry_run: bool, found: _Found
) -> tuple[int, dict[str, int]]:
    """Count under the lock, then one UPDATE, which must change exactly the rows counted, then check what is left.

    The count is cheap where there is work (a value that is not a token fails the length or LIKE test at once)
    and saves the UPDATE where there is none; it is also what the dry run reports.
    """
    fmt = plan.tokenizer.format
    keys = [f"{table.name}.{c}" for c in table.columns]
    with conn.transaction():
        if dry_run:
            conn.execute("SET TRANSACTION READ ONLY")
        _timeouts(conn, plan)
        if not dry_run:
            _lock(conn, table, found, batched=False)
        counted = conn.execute(statements.count_statement(table.schema, table.table, table.columns, fmt)).fetchone()
        assert counted is not None
        rows, per_column = int(counted[0]), dict(zip(keys, map(int, counted[1:]), strict=True))
        if dry_run or rows == 0:
            return rows, per_column
        changed = conn.execute(statements.update_statement(table.schema, table.table, table.columns, fmt)).rowcount
        if changed != rows:
            raise RowCountMismatch(table.name, rows, changed)
        _check_no_plaintext(conn, plan, table)
        return rows, per_column


def _check_no_plaintext(conn: psycopg.Connection, plan: TokenizePlan, table: TableTarget) -> None:
    """Under the lock, after the rewrite: every non-empty value in the policy's columns must now be a token.

    Row counts cannot see a trigger that puts the old value back (the row still counts as updated) nor a rule
    or AFTER trigger that writes it again; counting what is left can. Only called when something was rewritten:
    with nothing to do, the count under the same lock before it already was this check.
    """
    query = statements.remaining_statement(table.schema, table.table, table.columns, plan.tokenizer.format)
    left = conn.execute(query).fetchone()
    assert left is not None  # an aggregate always returns a row
    if any(left):
        raise PlaintextRemains(table.name, {str(c): int(n) for c, n in zip(table.columns, left, strict=True)})


def _retryable(exc: psycopg.Error) -> bool:
    return isinstance(
        exc,
        pg_errors.LockNotAvailable
        | pg_errors.DeadlockDetected
        | pg_errors.SerializationFailure
        | psycopg.OperationalError,
    ) and not isinstance(exc, pg_errors.QueryCanceled)


def _cancelled_by_user(exc: psycopg.Error) -> bool:
    # Same SQLSTATE (57014) for both: PostgreSQL tells pg_cancel_backend and statement_timeout apart only in words.
    return isinstance(exc, pg_errors.QueryCanceled) and "user request" in (exc.diag.message_primary or str(exc))


def _describe(exc: psycopg.Error, plan: TokenizePlan, table: TableTarget | None) -> str:
    # Only the primary message: DETAIL lines can quote row values (e.g. a unique violation's key).
    diag = exc.diag
    primary = diag.message_primary or (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    where = f"table {table.name}" if table else f"tenant {plan.tenant}"
    if isinstance(exc, pg_errors.LockNotAvailable):
        return (
            f"{where}: could not lock it within lock_timeout={plan.lock_timeout_ms}ms (another transaction holds it); "
            "retry later. Nothing in it was changed"
        )
    if isinstance(exc, pg_errors.QueryCanceled):
        if _cancelled_by_user(exc):
            return (
                f"{where}: cancelled by an administrator (pg_cancel_backend: {primary}); nothing in it was changed. "
                "Rerun when it should go on"
            )
        if "statement timeout" in primary:
            timeout = plan.statement_timeout_ms
            return f"{where}: cancelled after statement_timeout={timeout}ms; nothing in it was changed"
        # The server's messages are translated (lc_messages): say both causes rather than guess one.
        return (
            f"{where}: cancelled ({primary}): statement_timeout={plan.statement_timeout_ms}ms or an administrator; "
            "nothing in it was changed"
        )
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return f"{where}: the tenant role lacks a privilege: {primary}; nothing in it was changed"
    state = f" (SQLSTATE {diag.sqlstate})" if diag.sqlstate else ""
    return redact_text(f"{where}: {primary}{state}; the transaction was rolled back, nothing in it was changed")
