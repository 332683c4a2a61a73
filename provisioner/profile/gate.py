"""The residual-PII gate: after tokenization and before a grant, look for PII the policy left in other columns.

For each table of the output port's policy, a sample (``TABLESAMPLE``, 2,000 rows by default) of every column the
policy did **not** tokenize is matched against the validated patterns (email, phone, IBAN, card, IP, national id),
as profiling does; a column is a finding when it would be proposed as ``pii-*`` (score 0.5 or more: for instance
most values are phone numbers, or at least two sampled values of a free-text column hold an email address).
Tokens never count. Names and dates of birth are not looked for here (they are recognised by column name, which a
policy author has already seen).

The policy's ``residual_pii`` decides what a finding does:

* ``warn`` (default): the grant goes ahead; the finding is recorded (run record of kind ``gate``) and logged
  (``gate.residual_pii`` at warning level);
* ``fail``: no grant; the outcome is a FAILURE naming the columns and kinds. A scan that cannot run (tenant
  unreachable, a table gone) also blocks in this mode: fail closed.

The scan reads PostgreSQL tenants. A tenant of another kind (a Databricks warehouse) is not scanned: in ``warn``
mode that is logged (``gate.skipped``), in ``fail`` mode it blocks with a message saying so.

Records and logs hold table and column names, kinds and counts: never a value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import psycopg

from provisioner.errors import PermanentError, ProvisionerError, classify
from provisioner.logs import log_event
from provisioner.profile import patterns as p
from provisioner.profile import queries as q
from provisioner.profile.connect import opener
from provisioner.profile.model import ProfileOptions, TableName
from provisioner.profile.profiler import (
    describe,
    describe_error,
    prepare_session,
    scan_sample,
    take_sample,
)
from provisioner.profile.proposals import propose
from provisioner.tokenize import RunRecorder, Tenants, TokenFormat, TokenizePolicy
from provisioner.tokenize.engine import Connect
from provisioner.tokenize.recording import INTERNAL_ERROR, recorded_run

log = logging.getLogger("provisioner.profile.gate")

GATE_SAMPLE_ROWS = 2000


@dataclass(frozen=True)
class Finding:
    """PII found in a column the policy does not tokenize: kinds and counts, never values."""

    table: str
    column: str
    kinds: tuple[str, ...]
    score: float
    matched: int
    sampled: int

    def __str__(self) -> str:
        return f"{self.table}.{self.column} ({', '.join(self.kinds)})"

    def record(self) -> dict[str, Any]:
        """The finding for a run record or a log line."""
        return {
            "table": self.table,
            "column": self.column,
            "kinds": list(self.kinds),
            "score": self.score,
            "matched": self.matched,
            "sampled": self.sampled,
        }


@dataclass(frozen=True)
class GateResult:
    """What the gate found and whether it blocks the grant."""

    mode: str
    findings: tuple[Finding, ...]
    error: str | None = None
    retryable: bool = False
    run_id: str | None = None

    @property
    def blocked(self) -> bool:
        """True when the grant must not go ahead: ``fail`` mode and a finding, or a scan that could not run."""
        return self.mode == "fail" and bool(self.findings or self.error)

    @property
    def message(self) -> str:
        """One line a person can act on."""
        if self.error and not self.findings:
            return f"residual-PII scan failed ({self.error}); residual_pii: {self.mode}"
        listed = "; ".join(str(f) for f in self.findings)
        verdict = "grant blocked" if self.blocked else "granted anyway"
        return (
            f"residual PII in columns the policy does not tokenize: {listed} ({verdict}, residual_pii: {self.mode}); "
            "tokenize those columns or remove the data"
        )


def residual_pii_gate(
    policy: TokenizePolicy,
    *,
    connect: Connect,
    token_format: TokenFormat,
    recorder: RunRecorder | None = None,
    sample_rows: int = GATE_SAMPLE_ROWS,
) -> GateResult:
    """Scan the policy's tables for PII in columns it does not tokenize; never raises for a failed scan.

    Errors of the recorder itself (RecorderError) do propagate, as for tokenization runs.
    """
    mode = policy.residual_pii
    unsupported = _unsupported(connect, policy.tenant)
    if unsupported and mode == "warn":
        log_event(log, "gate.skipped", tenant=policy.tenant, policy=policy.name, mode=mode, reason=unsupported)
        return GateResult(mode, ())
    tables = [t.name for t in policy.tables]
    with recorded_run(
        recorder, tenant=policy.tenant, policy=policy.name, dry_run=False, tables=tables, kind="gate"
    ) as opened:
        findings: list[Finding] = []
        scanned: dict[str, dict[str, int]] = {}
        error: str | None = None
        retryable = False
        try:
            if unsupported:
                raise GateUnsupported(unsupported + "; set residual_pii: warn for it")
            options = ProfileOptions(sample_rows=sample_rows, token_format=token_format)
            _scan(policy, opener(connect), options, findings, scanned)
        except ProvisionerError as exc:
            error, retryable = str(exc), classify(exc).temporary  # the error policy: declared to pass
        except psycopg.Error as exc:
            error, retryable = describe_error(exc, policy.tenant), isinstance(exc, psycopg.OperationalError)
        except Exception as exc:  # a defect: still decide (fail closed in fail mode) and close the record
            log.exception("gate.internal_error")
            error = INTERNAL_ERROR.format(type(exc).__name__)
        run_id = opened.run_id
        result = GateResult(mode, tuple(findings), error, retryable, run_id if recorder else None)
        failed = result.blocked or bool(error)
        _, duration = opened.close(
            "FAILURE" if failed else "SUCCESS",
            error=result.message if failed else None,
            total_rows=sum(t["sampled_rows"] for t in scanned.values()),
            detail={
                "mode": mode,
                "blocked": result.blocked,
                "findings": [f.record() for f in findings],
                "tables": scanned,
            },
        )
    fields: dict[str, Any] = {
        "run_id": run_id,
        "tenant": policy.tenant,
        "policy": policy.name,
        "mode": mode,
        "blocked": result.blocked,
        "duration_s": round(duration, 3),
    }
    if error:
        log_event(log, "gate.error", level=logging.ERROR if result.blocked else logging.WARNING, error=error, **fields)
    elif findings:
        log_event(log, "gate.residual_pii", level=logging.WARNING, findings=[f.record() for f in findings], **fields)
    else:
        log_event(log, "gate.clear", tables=len(tables), **fields)
    return result


class GateUnsupported(PermanentError):
    """The tenant is not a PostgreSQL database, so its tables cannot be scanned."""


def _unsupported(connect: Connect, tenant: str) -> str | None:
    executor = getattr(connect, "executor", None)
    if isinstance(connect, Tenants) and callable(executor) and executor(tenant) is not None:
        return f"tenant {tenant} is not a PostgreSQL database: the residual-PII gate scans PostgreSQL tenants only"
    return None


def _scan(
    policy: TokenizePolicy,
    connect: Any,
    options: ProfileOptions,
    findings: list[Finding],
    scanned: dict[str, dict[str, int]],
) -> None:
    conn = connect(policy.tenant)
    try:
        prepare_session(conn, options)
        for target in policy.tables:
            relation = describe(conn, TableName(target.schema, target.table))
            tokenized = set(target.columns)
            columns = [c for c in relation.readable if c.category in q.SAMPLED and c.name not in tokenized]
            with conn.transaction():
                conn.execute("SET TRANSACTION READ ONLY")
                rows, _ = take_sample(conn, relation, columns, options)
            scans = scan_sample(rows, columns, options, names_and_dates=False)
            scanned[target.name] = {"sampled_rows": len(rows), "columns_scanned": len(columns)}
            for column in columns:
                scan = scans[column.name]
                proposal = propose(
                    column.name,
                    scan,
                    rows=scan.values,
                    distinct_estimate=scan.distinct,
                    kinds=p.PATTERN_KINDS,
                )
                if proposal.tags:
                    kinds = proposal.proposed_kinds
                    findings.append(
                        Finding(
                            table=target.name,
                            column=column.name,
                            kinds=kinds,
                            score=proposal.score,
                            matched=sum(scan.full[k] + scan.in_text[k] for k in kinds),
                            sampled=scan.examined,
                        )
                    )
    finally:
        conn.close()
