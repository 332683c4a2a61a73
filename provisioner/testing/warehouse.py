"""A stand-in for a Databricks SQL warehouse behind a PEP 249 connection, shaped like databricks-sql-connector's.

``FakeWarehouse`` holds Delta tables in memory and understands the statements the Databricks executor sends: ``SET
STATEMENT_TIMEOUT``, ``DESCRIBE TABLE EXTENDED`` (rows shaped as Databricks returns them: columns, a blank row,
``# Detailed Table Information``, ``Provider``), the key probe, ``SELECT count_if(…)`` and ``UPDATE`` (one result
row ``num_affected_rows``). Values are tokenized with the Python reference and the warehouse's own secret (what
``secret(scope, key)`` would return), so a wrong secret gives other tokens, as it would on Databricks. It does not
parse SQL: the golden tests run the real statements on Spark; this checks the executor's dialogue with a server.

``FakeConnection`` records every statement and parameter set it receives, and behaves as the connector does:
``commit()`` is a no-op and ``rollback()`` raises ``NotSupportedError`` with ``ignore_transactions=True`` (the
default); with ``ignore_transactions=False`` both are recorded. Errors are the connector's own classes, with
messages in Databricks' ``[ERROR_CLASS] … SQLSTATE: …`` form; ``fail`` injects them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from databricks.sql import exc

from provisioner.tokenize import databricks_statements as dsql
from provisioner.tokenize.tokens import TokenFormat, Tokenizer

_TABLE = re.compile(r"`([^`]+)`\.`([^`]+)`(?:\.`([^`]+)`)?")
_SECRET = re.compile(r"secret\('([^']+)', '([^']+)'\)")


def server_error(error_class: str, message: str, sqlstate: str = "42000") -> exc.ServerOperationError:
    """A server-side failure as the connector raises it."""
    return exc.ServerOperationError(f"[{error_class}] {message} SQLSTATE: {sqlstate}", {"operation-id": "fake"})


def request_error(http_code: int, message: str = "request failed") -> exc.RequestError:
    """An HTTP-level failure (the warehouse starting: 503, throttling: 429) as the connector raises it."""
    return exc.RequestError(message, {"http-code": http_code, "method": "ExecuteStatement"})


@dataclass
class FakeTable:
    """A Delta table: column types, rows (dicts), its provider and a version bumped by every commit."""

    columns: dict[str, str]
    rows: list[dict[str, Any]]
    provider: str = "delta"
    kind: str = "MANAGED"
    version: int = 0


@dataclass
class FakeWarehouse:
    """The server side: tables by ``schema.table``, secrets by ``(scope, key)``, and a MAC capability."""

    tables: dict[str, FakeTable] = field(default_factory=dict)
    secrets: dict[tuple[str, str], str] = field(default_factory=dict, repr=False)
    fmt: TokenFormat = field(default_factory=TokenFormat)
    has_hmac: bool = True
    fail: Callable[[str], BaseException | None] | None = None  # inject an error for a statement
    before_update: Callable[[FakeTable], None] | None = None  # a concurrent writer, between count and UPDATE
    after_update: Callable[[FakeTable], None] | None = None  # a concurrent writer, after the UPDATE's commit
    connections: list[FakeConnection] = field(default_factory=list)

    def connect(self, *, ignore_transactions: bool = True, autocommit: bool = True) -> FakeConnection:
        """A new session."""
        conn = FakeConnection(self, ignore_transactions=ignore_transactions, autocommit=autocommit)
        self.connections.append(conn)
        return conn

    @property
    def statements(self) -> list[str]:
        """Every statement of every session, in order."""
        return [s for c in self.connections for s, _ in c.executed]

    def answer(self, statement: str) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and rows for a statement; raises the connector's errors as the server would."""
        if self.fail and (error := self.fail(statement)):
            raise error
        if statement.startswith("SET "):
            return ["key", "value"], [tuple(statement[4:].split(" = ", 1))]
        if statement.startswith("DESCRIBE TABLE EXTENDED "):
            return ["col_name", "data_type", "comment"], self._describe(self._table(statement))
        if statement.startswith("UPDATE "):
            return ["num_affected_rows"], [(self._update(statement),)]
        if statement.startswith("SELECT count_if("):
            return ["counts"], [self._count(statement)]
        if statement.startswith("SELECT concat("):  # the key probe
            return ["token"], [(self._tokenizer(statement).token(dsql.PROBE_VALUE),)]
        raise server_error("PARSE_SYNTAX_ERROR", f"the fake warehouse does not understand {statement[:40]!r}")

    def _table(self, statement: str) -> FakeTable:
        match = _TABLE.search(statement)
        assert match is not None, statement
        parts = [p for p in match.groups() if p]
        name = ".".join(parts[-2:])
        if name not in self.tables:
            raise server_error(
                "TABLE_OR_VIEW_NOT_FOUND", f"The table or view `{'`.`'.join(parts)}` cannot be found.", "42P01"
            )
        return self.tables[name]

    def _describe(self, table: FakeTable) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = [(name, kind, None) for name, kind in table.columns.items()]
        rows += [("", "", ""), ("# Detailed Table Information", "", ""), ("Catalog", "main", "")]
        rows += [("Type", table.kind, ""), ("Provider", table.provider, ""), ("Owner", "someone", "")]
        return rows

    def _tokenizer(self, statement: str) -> Tokenizer:
        if re.search(r"\bhmac\(", statement) and not self.has_hmac:
            raise server_error(
                "UNRESOLVED_ROUTINE", "Cannot resolve routine `hmac` on search path [`system`.`builtin`].", "42883"
            )
        match = _SECRET.search(statement)
        if match is None:
            return Tokenizer(self.fmt, b"unused" if self.fmt.mode == "hmac" else None)
        if match.groups() not in self.secrets:
            raise server_error(
                "INVALID_SECRET_LOOKUP.SECRET_FUNCTION_LOOKUP_FAILED",
                f"Failed to look up secret `{match[2]}` in scope `{match[1]}`.",
                "22531",
            )
        return Tokenizer(self.fmt, self.secrets[(match[1], match[2])])

    def _columns(self, statement: str, table: FakeTable) -> list[str]:
        return [c for c in table.columns if f"`{c}`" in statement]

    def _count(self, statement: str) -> tuple[int, ...]:
        table = self._table(statement)
        guard = Tokenizer(self.fmt, b"guard-only")
        columns = self._columns(statement, table)
        per = [sum(1 for r in table.rows if _needs(guard, r.get(c))) for c in columns]
        rows = sum(1 for r in table.rows if any(_needs(guard, r.get(c)) for c in columns))
        return (rows, *per)

    def _update(self, statement: str) -> int:
        table = self._table(statement)
        if self.before_update:
            self.before_update(table)
        tk = self._tokenizer(statement)
        columns = self._columns(statement.split(" WHERE ", 1)[0], table)
        new_rows, changed = [], 0
        for row in table.rows:
            new = {k: (tk.tokenize(v) if k in columns else v) for k, v in row.items()}
            changed += new != row
            new_rows.append(new)
        if changed:  # all rows or none: the new version replaces the old in one commit
            table.rows = new_rows
            table.version += 1
        if self.after_update:
            self.after_update(table)
        return changed


def _needs(tk: Tokenizer, value: object) -> bool:
    return isinstance(value, str) and value != "" and not tk.is_token(value)


class FakeCursor:
    """A PEP 249 cursor over the fake warehouse."""

    def __init__(self, conn: FakeConnection) -> None:
        self._conn = conn
        self.description: list[tuple[Any, ...]] | None = None
        self.rowcount = -1
        self._rows: list[tuple[Any, ...]] = []

    def execute(self, operation: str, parameters: Any = None) -> FakeCursor:
        """Record the statement and its parameters, then answer it."""
        if self._conn.closed:
            raise exc.InterfaceError("Cannot create cursor from closed connection")
        self._conn.executed.append((operation, parameters))
        names, self._rows = self._conn.warehouse.answer(operation)
        self.description = [(n, "string", None, None, None, None, None) for n in names]
        return self

    def fetchall(self) -> list[tuple[Any, ...]]:
        """Every remaining row."""
        rows, self._rows = self._rows, []
        return rows

    def fetchone(self) -> tuple[Any, ...] | None:
        """The next row or None."""
        return self._rows.pop(0) if self._rows else None

    def close(self) -> None:
        """Nothing to release."""


class FakeConnection:
    """A PEP 249 connection recording statements, parameters, commits and rollbacks."""

    def __init__(self, warehouse: FakeWarehouse, *, ignore_transactions: bool, autocommit: bool) -> None:
        self.warehouse = warehouse
        self.ignore_transactions = ignore_transactions
        self.autocommit = autocommit
        self.executed: list[tuple[str, Any]] = []
        self.commits = 0
        self.rollbacks = 0
        self.closed = False

    def cursor(self) -> FakeCursor:
        """A new cursor."""
        return FakeCursor(self)

    def commit(self) -> None:
        """A no-op with ignore_transactions (as the connector); else counted."""
        if not self.ignore_transactions:
            self.commits += 1

    def rollback(self) -> None:
        """NotSupportedError with ignore_transactions (as the connector); else counted."""
        if self.ignore_transactions:
            raise exc.NotSupportedError("Transactions are not supported on Databricks")
        self.rollbacks += 1

    def close(self) -> None:
        """End the session."""
        self.closed = True
