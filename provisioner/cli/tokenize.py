"""CLI commands: ``provisioner tokenize`` (run a policy file) and ``provisioner runs`` (list run records)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import UTC
from typing import Any

from rich.console import Console

from provisioner.cli.products import say_nothing_recorded
from provisioner.errors import SettingsError
from provisioner.settings import Settings, check_hmac_key
from provisioner.site import Site, nothing_recorded_yet, tenants, tokenize_options
from provisioner.tokenize import TableProgress, TokenizeOptions, load_policy_file, plan, run


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add ``tokenize`` and ``runs`` to the top-level parser."""
    tok = subparsers.add_parser(
        "tokenize",
        help="tokenize the PII columns a policy file names, in each tenant's PostgreSQL",
        description=(
            "Rewrite the PII columns named by a policy file into deterministic tokens, one transaction per "
            "table. Values that are already tokens, NULLs and empty strings are left alone, so a rerun changes "
            "nothing. Tenant connections come from PROVISIONER_TENANT_<ID>_DSN (or _HOST/_USER/_PASSWORD), the "
            "HMAC key from PROVISIONER_TOKENIZE_KEY (or the file's key_env). Values are rewritten in place and "
            "cannot be turned back: on a terminal, a run without --dry-run shows what it will rewrite and asks "
            "first (--yes does not ask). Without a terminal (a script, CI, cron) it does not ask: the command "
            "line is the decision. Exit code 0 when every run succeeded, 1 otherwise (also when the answer was no)."
        ),
    )
    tok.add_argument("--policy", required=True, metavar="FILE", help="YAML policy file (see docs/tokenization.md)")
    tok.add_argument(
        "--dry-run", action="store_true", help="count the rows and values that would change; write nothing"
    )
    tok.add_argument("--tenant", metavar="T", help="run only the policies of this tenant")
    tok.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation on a terminal")
    tok.set_defaults(func=cmd_tokenize)

    runs = subparsers.add_parser(
        "runs",
        help="list tokenization run records",
        description="List the most recent tokenization runs recorded in the provisioner's database, newest first.",
    )
    runs.add_argument("--last", type=int, default=20, metavar="N", help="how many runs to show (default 20)")
    runs.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    runs.set_defaults(func=cmd_runs)


def options_from(settings: Settings, key_env: str) -> TokenizeOptions:
    """Token options from the settings; the key comes from ``key_env`` when the policy file names another one."""
    key = settings.tokenize_key if key_env == "PROVISIONER_TOKENIZE_KEY" else os.environ.get(key_env) or None
    if key is not None and settings.tokenize_mode == "hmac":
        check_hmac_key(key, key_env, settings.tokenize_allow_short_key)
    return tokenize_options(settings, key, key_env)


def cmd_tokenize(args: argparse.Namespace) -> int:
    """Run every policy of the file (or of one tenant); print progress per table and a summary per run."""
    settings = Settings.from_env()
    policy_file = load_policy_file(args.policy)
    policies = policy_file.policies(args.tenant)
    if not policies:
        raise SettingsError(f"{args.policy} has no policy for tenant {args.tenant!r}")
    options = options_from(settings, policy_file.key_env)
    plans = [plan(p, options) for p in policies]  # a missing key fails here, before anything runs
    connect = tenants(settings)
    if not args.dry_run and not args.yes and sys.stdin.isatty():
        summary = "; ".join(f"tenant {p.tenant}: {p.column_count} column(s) of {p.policy.name}" for p in plans)
        print(f"tokenize rewrites values in place, and tokens cannot be turned back into values ({summary}).")
        try:
            answer = input("Tokenize now? [y/N] ")
        except EOFError:
            answer = ""
        if answer.strip().lower() not in ("y", "yes"):
            print("provisioner: nothing tokenized (not confirmed; --dry-run shows what would change)", file=sys.stderr)
            return 1
    # The run records carry this process's heartbeat id: if it is killed, its RUNNING records become FAILURE.
    with Site.open(settings, reconcile=False, heartbeat=True) as site:
        recorder = site.run_recorder()
        console = Console(stderr=False, highlight=False)
        mode = "dry run" if args.dry_run else "run"
        all_ok = True
        for p in plans:
            console.print(f"[bold]{p.policy.name}[/bold] (tenant {p.tenant}, {p.column_count} columns): {mode}")

            def show(event: TableProgress) -> None:
                step = f"  [{event.index}/{event.count}] {event.table}"
                if event.phase == "started":
                    console.print(f"{step} ...")
                elif event.phase == "finished":
                    verb = "would change" if args.dry_run else "changed"
                    batches = f" ({event.batches} batches)" if event.batches > 1 else ""
                    console.print(f"{step} {verb} {event.rows:,} rows in {event.seconds:.2f}s{batches}")
                else:
                    console.print(f"{step} [red]failed[/red] after {event.seconds:.2f}s")

            result = run(p, dry_run=args.dry_run, connect=connect, recorder=recorder, progress=show)
            for column, count in result.rows_by_column.items():
                console.print(f"    {column}: {count:,} values")
            if result.ok:
                console.print(f"  [green]SUCCESS[/green] {result.total_rows:,} rows, run {result.run_id}")
            else:
                all_ok = False
                console.print(f"  [red]FAILURE[/red] run {result.run_id}: {result.error}")
    return 0 if all_ok else 1


def cmd_runs(args: argparse.Namespace) -> int:
    """Print the last N run records."""
    if args.last < 1:
        raise SettingsError("--last must be 1 or more")
    settings = Settings.from_env()
    if nothing_recorded_yet(settings):
        return 0 if args.json else say_nothing_recorded(settings)
    with Site.open(settings, reconcile=False) as site:
        records = site.run_recorder().last(args.last)
    if args.json:
        for r in records:
            print(json.dumps(vars(r), default=str))
        return 0
    if not records:
        print("no tokenization runs recorded yet")
        return 0
    print(f"{'started (UTC)':<20} {'tenant':<12} {'state':<9} {'result':<8} {'dry':<4} {'rows':>10}  policy / error")
    for r in records:
        outcome = r.error or r.policy
        if r.kind != "tokenize":  # profile and residual-PII gate runs share the table
            findings = r.detail.get("findings")
            outcome = f"[{r.kind}] {outcome}" + (f" ({len(findings)} residual-PII finding(s))" if findings else "")
        print(
            f"{r.started_at.astimezone(UTC):%Y-%m-%d %H:%M:%S}  {r.tenant:<12} {r.state:<9} {r.result or '-':<8} "
            f"{'yes' if r.dry_run else 'no':<4} {r.total_rows:>10,}  {outcome}  ({r.run_id})",
            file=sys.stdout,
        )
    return 0
