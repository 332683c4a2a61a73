"""The Databricks SQL executor: the same plan, tokens, counts, run records and events as the PostgreSQL one.

``engine.run`` records the run and logs its events; for a tenant of kind ``databricks`` it hands the plan to
``DatabricksExecutor.execute_plan``. How a run goes here:

1. The column limit is checked, then every table is described (``DESCRIBE TABLE EXTENDED``): it must be a Delta
   table (only Delta supports UPDATE in place) whose policy columns exist and are STRING (or VARCHAR wide enough
   for a token). Any problem fails the run before a single write.
2. In hmac mode one probe statement computes the token of a constant with the warehouse's key (read by
   ``secret(scope, key)``) and compares it with Python's: a secret that does not hold PROVISIONER_TOKENIZE_KEY
   would give tokens that differ from the PostgreSQL engine's, so the run stops there. The probe also picks the
   MAC: ``hmac()`` where the runtime has it, else ``sha2`` over the RFC 2104 pads.
3. Each table: a count of the rows and values to tokenize (the dry run stops here), one ``UPDATE … SET col =
   CASE … END WHERE <some value is not a token>`` (one Delta commit: all rows or none), then the same count
   again, which must be 0. The guard is the PostgreSQL engine's, so a rerun changes 0 rows.

Transactions: the connector defaults to ``ignore_transactions=True``, where ``commit()`` does nothing and
``rollback()`` raises NotSupportedError. Nothing here needs a transaction (one statement per table is atomic on
Delta), so the executor calls ``commit``/``rollback`` only on a connection that really has a transaction open
(autocommit off); a failed statement on an autocommit connection committed nothing, and there is nothing to
roll back.

Delta has no table lock: rows written by others between the count and the UPDATE are still covered by the
UPDATE's own guard, and rows written after it are caught by the count that follows, which fails the run
retryably (a rerun tokenizes them). The connector is imported only when a connection is opened, so the core
install works without the ``databricks`` extra.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from provisioner.errors import ProvisionerError, TemporaryError
from provisioner.logs import log_event, redact_text
from provisioner.tokenize import databricks_statements as sql
from provisioner.tokenize.errors import TargetError, TenantError, TenantUnavailable, TokenizeConfigError
from provisioner.tokenize.policy import TableTarget
from provisioner.tokenize.tokens import TokenFormat, Tokenizer

if TYPE_CHECKING:
    from provisioner.tokenize.engine import Progress, TableResult, TokenizePlan

log = logging.getLogger("provisioner.tokenize")

MacChoice = Literal["auto", "hmac", "sha2"]
MAC_CHOICES: tuple[MacChoice, ...] = ("auto", "hmac", "sha2")
_ERROR_CLASS = re.compile(r"\[([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)?)\]")
_SQLSTATE = re.compile(r"SQLSTATE:?\s*([0-9A-Z]{5})")
_VARCHAR = re.compile(r"(?:varchar|char)\((\d+)\)", re.IGNORECASE)
# Error classes worth a retry: concurrent Delta commits, a warehouse that is starting or overloaded.
_RETRYABLE_CLASSES = frozenset(
    {
        "DELTA_CONCURRENT_APPEND",
        "DELTA_CONCURRENT_DELETE_DELETE",
        "DELTA_CONCURRENT_DELETE_READ",
        "DELTA_CONCURRENT_TRANSACTION",
        "DELTA_CONCURRENT_WRITE",
        "DELTA_METADATA_CHANGED",
        "DELTA_PROTOCOL_CHANGED",
        "TEMPORARILY_UNAVAILABLE",
        "RESOURCE_EXHAUSTED",
        "TOO_MANY_REQUESTS",
        "WAREHOUSE_NOT_RUNNING",
    }
)
# Error classes whose message names only objects (tables, columns, privileges, secrets), never row values:
# their first line may be shown. Any other message (a failed CAST quotes the value) is reduced to its class.
_NAMES_ONLY = (
    "TABLE_OR_VIEW_NOT_FOUND",
    "SCHEMA_NOT_FOUND",
    "CATALOG_NOT_FOUND",
    "UNRESOLVED_COLUMN",
    "PERMISSION_DENIED",
    "INSUFFICIENT_PERMISSIONS",
    "INVALID_SECRET_LOOKUP",
    "UNRESOLVED_ROUTINE",
    "PARSE_SYNTAX_ERROR",
    "DELTA_",
)


class Connection(Protocol):
    """The PEP 249 connection the executor needs (databricks-sql-connector's, or a stand-in)."""

    def cursor(self) -> Any: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def close(self) -> None: ...


class WarehouseUnavailable(TenantUnavailable):
    """The SQL warehouse could not be reached, is starting, or throttled the request: retry later."""


class DatabricksTableTemporary(TemporaryError):
    """A table's statement failed in a way that may pass (a concurrent Delta commit, a warehouse restart)."""


class PlaintextAfterUpdate(TemporaryError):
    """After the committed UPDATE, values are still not tokens: rows written meanwhile. A rerun tokenizes them."""

    def __init__(self, table: str, changed: int, remaining: dict[str, int]) -> None:
        where = ", ".join(f"{column}: {count}" for column, count in remaining.items() if count)
        super().__init__(
            f"table {table}: the UPDATE tokenized {changed} rows (one Delta commit), but {sum(remaining.values())} "
            f"values are still not tokens ({where}): rows were written meanwhile. Rerun to tokenize them"
        )


@dataclass(frozen=True)
class DatabricksExecutor:
    """Runs plans on one Databricks tenant's SQL warehouse; ``connect`` opens a PEP 249 connection."""

    tenant: str
    connect: Callable[[], Connection]
    catalog: str | None = None
    key: sql.KeySource | None = None
    mac: MacChoice = "auto"
    where: str = ""  # the warehouse, for messages (host and HTTP path, never a credential)

    def __post_init__(self) -> None:
        if self.mac not in MAC_CHOICES:
            raise TokenizeConfigError(f"MAC function {self.mac!r} is unknown: use one of {', '.join(MAC_CHOICES)}")
        if self.catalog is not None:
            sql.check_catalog(self.catalog)

    def execute_plan(
        self, plan: TokenizePlan, dry_run: bool, done: list[TableResult], progress: Progress | None
    ) -> None:
        """Check, then tokenize (or count) every table of the plan; raise a ProvisionerError on failure."""
        from provisioner.tokenize.engine import TableProgress, TableResult

        if plan.column_count > plan.max_columns:
            raise TargetError(
                f"the policy names {plan.column_count} PII columns, more than max_columns={plan.max_columns}: "
                "split the policy or raise the limit (nothing was written)"
            )
        fmt = plan.tokenizer.format
        if fmt.mode == "hmac" and self.key is None:
            raise TokenizeConfigError(
                f"tenant {self.tenant}: hmac tokens on Databricks need the key in a secret scope: set "
                f"PROVISIONER_TENANT_{self.tenant.upper()}_SECRET_SCOPE and _SECRET_KEY (nothing was written)"
            )
        conn = self._open()
        try:
            self._set_timeout(conn, plan.statement_timeout_ms)
            for table in plan.tables:
                self._preflight(conn, table, fmt)
            mac = self._check_key(conn, plan.tokenizer) if not dry_run and fmt.mode == "hmac" else "hmac"
            count = len(plan.tables)
            for index, table in enumerate(plan.tables, start=1):
                if progress:
                    progress(TableProgress(index, count, table.name, "started"))
                clock = time.perf_counter()
                try:
                    rows, per_column = self._table(conn, plan, table, dry_run, mac)
                except ProvisionerError:
                    if progress:
                        progress(TableProgress(index, count, table.name, "failed", seconds=time.perf_counter() - clock))
                    raise
                seconds = time.perf_counter() - clock
                done.append(TableResult(table.name, rows, per_column, seconds))
                if progress:
                    progress(TableProgress(index, count, table.name, "finished", rows=rows, seconds=seconds))
        finally:
            _close(conn)

    def _open(self) -> Connection:
        try:
            return self.connect()
        except ProvisionerError:
            raise
        except Exception as exc:  # the connector's errors, or the SDK's while it authenticates
            raise _connect_error(exc, self.tenant, self.where) from None

    def _set_timeout(self, conn: Connection, statement_timeout_ms: int) -> None:
        if statement_timeout_ms > 0:
            # Databricks SQL's own limit, in seconds; the warehouse cancels a longer statement (no commit).
            seconds = max(1, -(-statement_timeout_ms // 1000))
            _execute(conn, f"SET STATEMENT_TIMEOUT = {seconds}", f"tenant {self.tenant}")

    def _ref(self, table: TableTarget) -> str:
        return sql.table_ref(self.catalog, table.schema, table.table)

    def _preflight(self, conn: Connection, table: TableTarget, fmt: TokenFormat) -> None:
        rows = _execute(conn, sql.describe_statement(self._ref(table)), f"table {table.name}")
        columns, details = _parse_describe(rows)
        kind = details.get("type", "").upper()
        if "VIEW" in kind or kind == "STREAMING_TABLE":
            raise TargetError(f"{table.name} is a {kind.lower()}; only Delta tables can be tokenized")
        provider = details.get("provider", "")
        if provider.lower() != "delta":
            raise TargetError(
                f"table {table.name} is stored as {provider or 'an unknown format'}; only Delta tables can be "
                "updated in place (nothing was written)"
            )
        for column in table.columns:
            where = f"{table.name}.{column}"
            if column.lower() not in columns:
                raise TargetError(f"column {column!r} does not exist in table {table.name}")
            shown = columns[column.lower()]
            width = _VARCHAR.fullmatch(shown)
            if shown.lower() != "string" and not (width and shown.lower().startswith("varchar")):
                raise TargetError(f"column {where} is of type {shown}; tokens need a STRING or VARCHAR column")
            if width and fmt.token_length and int(width.group(1)) < fmt.token_length:
                raise TargetError(f"column {where} is {shown}, too short for {fmt.token_length}-character tokens")

    def _check_key(self, conn: Connection, tokenizer: Tokenizer) -> sql.MacFunction:
        """The MAC function that gives Python's token of the probe with the warehouse's key; else fail."""
        assert self.key is not None
        expected = tokenizer.token(sql.PROBE_VALUE)
        choices: Sequence[sql.MacFunction] = ("hmac", "sha2") if self.mac == "auto" else (self.mac,)
        for mac in choices:
            try:
                rows = _run(conn, sql.probe_statement(tokenizer.format, self.key, mac))
            except Exception as exc:
                if mac == "hmac" and self.mac == "auto" and _is_missing_hmac(exc):
                    continue  # a runtime before hmac(): the sha2 form gives the same tokens
                raise _table_error(exc, f"tenant {self.tenant} (key check)") from None
            if not rows or rows[0][0] != expected:
                raise TokenizeConfigError(
                    f"tenant {self.tenant}: the key in {self.key.describe()} is not the configured tokenization "
                    "key (the warehouse's tokens would differ from the PostgreSQL engine's); nothing was written"
                )
            return mac
        raise AssertionError("unreachable: the sha2 form has no fallback")  # pragma: no cover

    def _table(
        self, conn: Connection, plan: TokenizePlan, table: TableTarget, dry_run: bool, mac: sql.MacFunction
    ) -> tuple[int, dict[str, int]]:
        fmt = plan.tokenizer.format
        ref, where = self._ref(table), f"table {table.name}"
        keys = [f"{table.name}.{c}" for c in table.columns]
        count = sql.count_statement(ref, table.columns, fmt)
        rows, per_column = _counts(_execute(conn, count, where), keys)
        if dry_run or rows == 0:
            return rows, per_column
        update = sql.update_statement(ref, table.columns, fmt, self.key, mac)
        changed = _changed_rows(conn, update, where)
        after_rows, after = _counts(_execute(conn, count, where), [str(c) for c in table.columns])
        if after_rows:
            raise PlaintextAfterUpdate(table.name, changed if changed is not None else rows, after)
        if changed is None:
            changed = rows
        elif changed != rows:
            # Rows written between the count and the UPDATE: the UPDATE's own guard covered them.
            log_event(
                log,
                "tokenize.rows_changed_meanwhile",
                level=logging.WARNING,
                tenant=self.tenant,
                table=table.name,
                counted=rows,
                changed=changed,
            )
        return changed, per_column


def _counts(rows: list[tuple[Any, ...]], keys: list[str]) -> tuple[int, dict[str, int]]:
    if not rows:
        raise TargetError("the count statement returned no row")
    row = rows[0]
    return int(row[0]), dict(zip(keys, (int(v) for v in row[1:]), strict=True))


def _run(conn: Connection, statement: str) -> list[tuple[Any, ...]]:
    """Execute one statement and fetch its rows (none for statements without a result set)."""
    cursor = conn.cursor()
    try:
        cursor.execute(statement)
        return [tuple(r) for r in cursor.fetchall()] if cursor.description else []
    finally:
        cursor.close()


def _execute(conn: Connection, statement: str, where: str) -> list[tuple[Any, ...]]:
    try:
        return _run(conn, statement)
    except Exception as exc:
        raise _table_error(exc, where) from None


def _changed_rows(conn: Connection, update: str, where: str) -> int | None:
    """Run the UPDATE (one Delta commit) and return ``num_affected_rows``; None if the server did not say."""
    in_transaction = not _autocommit(conn)
    try:
        cursor = conn.cursor()
        try:
            cursor.execute(update)
            names = [d[0].lower() for d in cursor.description or ()]
            row = cursor.fetchone() if names else None
            rowcount = getattr(cursor, "rowcount", -1)
        finally:
            cursor.close()
        if in_transaction:
            conn.commit()
    except Exception as exc:
        if in_transaction:
            _rollback(conn)
        raise _table_error(exc, where) from None
    if row is not None:
        index = names.index("num_affected_rows") if "num_affected_rows" in names else 0
        return int(row[index])
    return rowcount if isinstance(rowcount, int) and rowcount >= 0 else None


def _autocommit(conn: Connection) -> bool:
    """True unless the connection has a real transaction open (ignore_transactions=False and autocommit off)."""
    if getattr(conn, "ignore_transactions", True):
        return True
    return bool(getattr(conn, "autocommit", True))


def _rollback(conn: Connection) -> None:
    try:
        conn.rollback()
    except Exception as exc:  # the statement's own error is the one to report
        log_event(log, "tokenize.rollback_failed", level=logging.WARNING, error=type(exc).__name__)


def _close(conn: Connection) -> None:
    try:
        conn.close()
    except Exception as exc:  # closing a session the server already dropped
        log_event(log, "tokenize.close_failed", level=logging.WARNING, error=type(exc).__name__)


def _parse_describe(rows: list[tuple[Any, ...]]) -> tuple[dict[str, str], dict[str, str]]:
    """Columns (lower-case name → type) and table details (lower-case label → value) of DESCRIBE EXTENDED."""
    columns: dict[str, str] = {}
    details: dict[str, str] = {}
    section = "columns"
    for row in rows:
        name = str(row[0] or "").strip()
        value = str(row[1] or "").strip() if len(row) > 1 else ""
        if not name or name.startswith("#"):
            section = "details" if "detailed" in name.lower() else "other" if name else section
            continue
        if section == "columns":
            columns.setdefault(name.lower(), value)
        elif section == "details":
            details[name.lower()] = value
    return columns, details


def _error_class(exc: BaseException) -> str:
    match = _ERROR_CLASS.search(str(exc))
    return match.group(1) if match else ""


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    lines = str(text).strip().splitlines()
    return redact_text(lines[0]) if lines else type(exc).__name__


def _http_code(exc: BaseException) -> int | None:
    context = getattr(exc, "context", None) or {}
    code = context.get("http-code") if isinstance(context, dict) else None
    try:
        return int(code) if code is not None else None
    except (TypeError, ValueError):
        return None


def _is_missing_hmac(exc: BaseException) -> bool:
    return _error_class(exc).startswith("UNRESOLVED_ROUTINE") and "hmac" in str(exc).lower()


def _describe_error(exc: BaseException) -> str:
    """What may be said of an error: its first line when it names only objects, else its class and SQLSTATE."""
    error_class = _error_class(exc)
    if error_class.startswith(_NAMES_ONLY) or (not error_class and _is_transport(exc)):
        return _first_line(exc)
    if error_class:
        state = _SQLSTATE.search(str(exc))
        return f"[{error_class}]" + (f" (SQLSTATE {state.group(1)})" if state else "")
    return type(exc).__name__


def _retryable(exc: BaseException) -> bool:
    error_class = _error_class(exc)
    if error_class.split(".")[0] in _RETRYABLE_CLASSES or error_class.startswith("DELTA_CONCURRENT"):
        return True
    if re.search(r"Concurrent\w*Exception", str(exc)):  # older runtimes name the Java exception
        return True
    return _is_transport(exc) and _http_code(exc) not in (400, 401, 403, 404)


def _is_transport(exc: BaseException) -> bool:
    """The connector's network and HTTP errors (RequestError is an OperationalError)."""
    try:
        from databricks.sql import exc as dbx
    except ImportError:  # pragma: no cover - the extra is installed wherever a connection was opened
        return type(exc).__name__ in ("OperationalError", "RequestError")
    return isinstance(exc, dbx.OperationalError)


def _table_error(exc: BaseException, where: str) -> ProvisionerError:
    """A statement's failure as a typed error: retryable or not, never quoting row values."""
    if isinstance(exc, ProvisionerError):
        return exc
    code = _http_code(exc)
    if code == 429:
        return WarehouseUnavailable(f"{where}: the warehouse throttled the request (HTTP 429); retry later")
    if code in (502, 503, 504):
        return WarehouseUnavailable(f"{where}: the warehouse is starting or unavailable (HTTP {code}); retry later")
    message = f"{where}: {_describe_error(exc)}; the statement committed nothing"
    if _retryable(exc):
        return DatabricksTableTemporary(message + "; retry later")
    return TargetError(message)


def _connect_error(exc: BaseException, tenant: str, where: str) -> ProvisionerError:
    code = _http_code(exc)
    at = f"tenant {tenant} ({where})" if where else f"tenant {tenant}"
    if code in (401, 403):
        return TenantError(f"cannot connect to {at}: the credentials were refused (HTTP {code})")
    if code == 429:
        return WarehouseUnavailable(f"cannot connect to {at}: throttled (HTTP 429); retry later")
    if code in (502, 503, 504):
        return WarehouseUnavailable(f"cannot connect to {at}: the warehouse is starting or unavailable (HTTP {code})")
    if _is_transport(exc):
        return WarehouseUnavailable(f"cannot connect to {at}: {_first_line(exc)}; retry later")
    # Not the network: the SDK found no credentials, a setting is wrong. Retrying cannot help.
    return TenantError(f"cannot connect to {at}: {type(exc).__name__}: {_first_line(exc)}")
