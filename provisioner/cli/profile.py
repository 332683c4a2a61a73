"""CLI command: ``provisioner profile`` (statistics, PII proposals and DQX check suggestions for tenant tables)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from provisioner.profile import ProfileInputError, ProfileOptions, ProfileProgress, TableName, TableProfile, profile
from provisioner.profile.model import DEFAULT_SAMPLE_ROWS, MAX_SAMPLE_ROWS, ColumnProfile, parse_tenant
from provisioner.profile.policy_proposal import check_writable, policy_text, write_policy
from provisioner.settings import Settings
from provisioner.site import Site, tenants, tokenize_options


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add ``profile`` to the top-level parser."""
    prof = subparsers.add_parser(
        "profile",
        help="profile tenant tables in their database: statistics, PII column proposals, DQX quality checks",
        description=(
            "Profile tables as the tenant's role, inside PostgreSQL: one aggregate pass per table (rows, nulls, "
            "empties, min and max, text lengths), distinct counts estimated from pg_stats (after ANALYZE when the "
            "statistics are stale), and a TABLESAMPLE sample matched against validated PII patterns (email, phone, "
            "IBAN, card, IP, national ids; dates of birth and person names by column name). Proposes pii-* tags "
            "with a score and masked evidence, and quality checks in DQX's format. Nothing is applied. The tenant "
            "connection comes from PROVISIONER_TENANT_<ID>_*; the run is recorded like tokenization runs "
            "(`provisioner runs`). Exit code 0 on success, 1 otherwise."
        ),
    )
    prof.add_argument("--tenant", required=True, metavar="T", help="tenant id (PROVISIONER_TENANT_<T>_*)")
    prof.add_argument(
        "--table",
        required=True,
        action="append",
        metavar="SCHEMA.TABLE",
        help="a table (or view) to profile; repeat for more",
    )
    prof.add_argument("--json", action="store_true", help="print the profile as JSON instead of tables")
    prof.add_argument(
        "--propose-policy",
        type=Path,
        metavar="FILE",
        help="write the proposed PII columns as a tokenization policy (a new file, for review; never applied)",
    )
    prof.add_argument(
        "--sample",
        type=int,
        default=DEFAULT_SAMPLE_ROWS,
        metavar="N",
        help=f"rows to sample per table for pattern matching (default {DEFAULT_SAMPLE_ROWS:,})",
    )
    prof.add_argument(
        "--exact-distinct", action="store_true", help="count distinct values exactly (slower) instead of estimating"
    )
    prof.add_argument(
        "--analyze",
        choices=("auto", "always", "never"),
        default="auto",
        help="run ANALYZE first: when statistics are missing or stale (auto, default), always, or never",
    )
    prof.set_defaults(func=cmd_profile)


def parse_arguments(args: argparse.Namespace) -> tuple[str, list[TableName], ProfileOptions]:
    """Validate everything given on the command line, before anything connects or runs."""
    tenant = parse_tenant(args.tenant)
    tables = [TableName.parse(t) for t in args.table]
    seen = set()
    for table in tables:
        if (table.schema, table.table) in seen:
            raise ProfileInputError(f"table {table} is given twice")
        seen.add((table.schema, table.table))
    if not 1 <= args.sample <= MAX_SAMPLE_ROWS:
        raise ProfileInputError(f"--sample must be 1 to {MAX_SAMPLE_ROWS:,}, got {args.sample}")
    if args.propose_policy is not None:
        check_writable(args.propose_policy)
    options = ProfileOptions(sample_rows=args.sample, exact_distinct=args.exact_distinct, analyze=args.analyze)
    return tenant, tables, options


def cmd_profile(args: argparse.Namespace) -> int:
    """Profile the tables; print them (or JSON); write the proposed policy when asked."""
    tenant, tables, options = parse_arguments(args)
    settings = Settings.from_env()
    connect = tenants(settings)
    connect[tenant]  # an unknown tenant stops here, naming the variables to set
    # Tokens of the configured format never count as PII.
    options = replace(options, token_format=tokenize_options(settings, key=None).format)
    err = Console(stderr=True, highlight=False, soft_wrap=True)  # messages stay one line in logs and pipes
    with Site.open(settings, reconcile=False) as site, _progress(err, len(tables)) as show:
        result = profile(tenant, tables, connect=connect, options=options, recorder=site.run_recorder(), progress=show)
    if args.json:
        print(json.dumps(result.to_json(), indent=2, default=str))
    else:
        out = Console(highlight=False, width=None if sys.stdout.isatty() else 160)
        for table in result.tables:
            print_table(out, table)
    if not result.ok:
        err.print(f"[red]FAILURE[/red] run {result.run_id}: {result.error}")
        return 1
    if args.propose_policy is not None:
        text = policy_text(tenant, result.tables, result.run_id)
        if text is None:
            err.print(f"no PII column proposed: {args.propose_policy} was not written")
        else:
            write_policy(args.propose_policy, text)
            err.print(f"proposed policy written to {args.propose_policy} (review it; nothing was applied)")
    if not args.json:
        err.print(f"run {result.run_id}: {len(result.tables)} table(s) in {result.duration_s:.2f}s")
    return 0


@contextmanager
def _progress(console: Console, count: int) -> Iterator[Callable[[ProfileProgress], None] | None]:
    """A rich progress display on stderr when it is a terminal; nothing otherwise (logs and pipes stay clean)."""
    if not console.is_terminal:
        yield None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} steps"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    steps = {"started": 0, "sampled": 1, "finished": 3, "failed": 3}
    with bar:
        task = bar.add_task("profiling", total=3 * count)

        def show(event: ProfileProgress) -> None:
            label = {"started": "sampling", "sampled": "aggregating", "finished": "done", "failed": "failed"}
            bar.update(
                task,
                completed=3 * (event.index - 1) + steps[event.phase],
                description=f"{event.table} ({label[event.phase]})",
            )

        yield show


def print_table(console: Console, table: TableProfile) -> None:
    """One table's profile for a person: a row per column, then the suggested checks."""
    console.print(
        f"[bold]{table.table}[/bold]: {table.rows:,} rows; sample {table.sampled_rows:,} rows ({table.sample_method}); "
        f"statistics {table.statistics}"
    )
    grid = Table(show_lines=False, pad_edge=False)
    for title, justify in (
        ("column", "left"),
        ("type", "left"),
        ("nulls", "right"),
        ("distinct ≈", "right"),
        ("proposed", "left"),
        ("score", "right"),
        ("evidence", "left"),
    ):
        grid.add_column(title, justify=justify)  # type: ignore[arg-type]
    for column in table.columns:
        grid.add_row(
            column.name,
            column.type,
            f"{column.nulls:,}" if not column.skipped else "-",
            f"{column.distinct_estimate:,}" if column.distinct_estimate is not None else "-",
            ", ".join(column.proposal.tags) or "-",
            f"{column.proposal.score:.2f}" if column.proposal.kinds else "-",
            column.skipped or evidence_text(column),
        )
    console.print(grid)
    if table.checks:
        console.print(f"DQX checks suggested ({len(table.checks)}): " + "; ".join(check_text(c) for c in table.checks))
    console.print()


def evidence_text(column: ColumnProfile) -> str:
    """The evidence in a few words: matches, name, tokens, masked examples."""
    ev = column.proposal.evidence
    parts = []
    sampled = ev.get("sampled")
    for kind, count in ev.get("matches", {}).items():
        parts.append(f"{count}/{sampled} are {kind}")
    for kind, count in ev.get("in_text", {}).items():
        parts.append(f"{count}/{sampled} hold {kind}")
    if ev.get("column_name"):
        parts.append(f"name: {ev['column_name']}")
    if ev.get("tokens"):
        parts.append(f"{ev['tokens']} tokens")
    if ev.get("examples"):
        parts.append("e.g. " + ", ".join(ev["examples"]))
    return "; ".join(parts)


def check_text(check: dict[str, Any]) -> str:
    """``column: function`` (with the list size or the range)."""
    args = check["check"]["arguments"]
    text = f"{args['column']}: {check['check']['function']}"
    if "allowed" in args:
        text += f" ({len(args['allowed'])} values)"
    if "min_limit" in args:
        text += f" [{args['min_limit']}, {args['max_limit']}]"
    return text
