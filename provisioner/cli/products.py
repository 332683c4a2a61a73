"""Product commands: provision, resync, status, rotate, grants."""

from __future__ import annotations

import argparse
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from provisioner.errors import InvalidInput, ProvisionerError
from provisioner.events import ReconcileAccess, ReconcileOutputPort, ReconcileProduct, ResyncAll, Trigger
from provisioner.names import Namespace
from provisioner.persistence.records import Parked, TargetState
from provisioner.reconcile.parking import ParkingLot
from provisioner.settings import Settings
from provisioner.site import Site, extra_targets, nothing_recorded_yet
from provisioner.storage.policy import ReadGrant
from provisioner.targets.base import TargetProduct


def register(subparsers: Any) -> None:
    """Add provision, resync, status, rotate and grants."""
    p = subparsers.add_parser(
        "provision",
        help="reconcile one data product now (by portal id or namespace)",
        description="Read the product from the portal and converge it now, in this process: prefix, user, key, "
        "project, .env, finalizer and status; or clean it up when the portal is deleting it. A parked product (one "
        "that failed permanently, see `provisioner status`) is tried again too.",
    )
    p.add_argument(
        "product", nargs="?", help="the product's portal id, or the namespace of a product provisioned or parked"
    )
    p.add_argument(
        "--parked", action="store_true", help="try every parked product again (after fixing what they failed on)"
    )
    p.set_defaults(func=_provision)

    p = subparsers.add_parser(
        "resync",
        help="compare every portal product with what was provisioned and repair differences",
        description="List the portal's products, find those whose state differs from what the provisioner "
        "converged (or whose grants differ), and reconcile them here with a progress bar, or hand them to the "
        "workers with --enqueue. A resync over unchanged products writes nothing.",
    )
    p.add_argument("--enqueue", action="store_true", help="enqueue the reconciles for the workers instead")
    p.set_defaults(func=_resync)

    p = subparsers.add_parser(
        "status",
        help="show provisioned products: prefix, key id, last run, state",
        description="A table of the products the provisioner manages (never a secret: key ids only).",
    )
    p.add_argument("namespace", nargs="?", help="show only this namespace, with its recent runs")
    p.set_defaults(func=_status)

    p = subparsers.add_parser(
        "rotate",
        help="issue a new key for a product, rewrite its .env, delete the old key",
        description="Use when a project's .env was lost or a key may have leaked: a new key is written into the "
        ".env atomically (mode 0600) before the old key is deleted.",
    )
    p.add_argument("namespace")
    p.set_defaults(func=_rotate)

    p = subparsers.add_parser(
        "grants",
        help="show who can read which output port, the last tokenization per port, and why a grant waits",
        description="Every read grant (the consumer reads s3://<bucket>/<producer>/published/<output port>/) with "
        "the tokenization decision that preceded it, then every approved output port not granted yet and why "
        "(no tokenization decision, a failed tokenization, a producer not provisioned yet, a full policy).",
    )
    p.add_argument("namespace", nargs="?", help="only grants where this namespace is consumer or producer")
    p.set_defaults(func=_grants)


def _provision(args: argparse.Namespace) -> int:
    console = Console()
    if bool(args.product) == bool(args.parked):
        console.print("[red]name one product (its id or namespace), or give --parked[/]")
        return 2
    with Site.open(Settings.from_env()) as site:
        parking = site.reconcilers.products.parking
        product_ids = sorted(parking.all()) if args.parked else [_product_id(site, args.product)]
        if not args.parked:
            _require_known(site, args.product, product_ids[0])
        if args.parked and not product_ids:
            console.print("no parked product")
        failures = 0
        for product_id in product_ids:
            try:
                # force: a parked product is tried again even though the portal shows it as when it failed.
                follow = site.reconcilers.reconcile_product(product_id, force=True)
                done = 1 + run_triggers(site, list(follow))
            except ProvisionerError as exc:
                if not args.parked:
                    raise
                failures += 1
                console.print(f"[red]{product_id}: {exc}[/]")
                continue
            runs = site.state.last_runs(product_id, limit=1)
            run = runs[0] if runs else {}
            console.print(
                f"[bold]{product_id}[/]: {run.get('status', '?')} (namespace {run.get('namespace') or '-'}, "
                f"steps: {names(run.get('steps') or [])}, {done} reconcile(s))"
            )
    return 1 if failures else 0


def _product_id(site: Site, given: str) -> str:
    """The portal id ``given`` names: a provisioned namespace, a parked product's namespace, or an id."""
    try:
        record = site.state.live_by_namespace(Namespace(given))
    except ProvisionerError:
        record = None
    if record is not None:
        return record.product_id
    parked = site.reconcilers.products.parking.by_namespace(given)
    return parked[0].product_id if len(parked) == 1 else given


def _require_known(site: Site, given: str, product_id: str) -> None:
    """Refuse (InvalidInput, before any side effect) a product that is neither recorded here nor in the portal.

    A typo must not reconcile: for a product the portal does not know, a reconcile is a clean-up, recorded
    as a run, and would leave a status row for a product that never was.
    """
    if site.state.product(product_id) is not None or site.reconcilers.products.parking.get(product_id) is not None:
        return
    if site.reconciling is not None and site.reconciling.portal.get_product(product_id) is not None:
        return
    raise InvalidInput(
        f"no data product {given!r}: the portal at {site.settings.portal_url} has no product with this id, and no "
        "product with this namespace is provisioned or parked here (`provisioner status` lists them)"
    )


def run_triggers(site: Site, triggers: list[Trigger], progress: Progress | None = None) -> int:
    """Run ``triggers`` and their follow-ups in this process; return how many reconciles ran."""
    queue: deque[Trigger] = deque(triggers)
    seen: set[Trigger] = set()
    handlers = site.reconcilers
    task = progress.add_task("reconciling", total=len(queue)) if progress else None
    count = 0
    while queue:
        trigger = queue.popleft()
        if trigger in seen:
            continue
        seen.add(trigger)
        follow: list[Trigger] = []
        match trigger:
            case ReconcileProduct(product_id):
                follow = list(handlers.reconcile_product(product_id))
            case ReconcileAccess(consumer_id):
                follow = list(handlers.reconcile_access(consumer_id))
            case ReconcileOutputPort(producer_id, port_id):
                follow = list(handlers.reconcile_output_port(producer_id, port_id))
            case ResyncAll():
                follow = list(handlers.resync())
        count += 1
        queue.extend(follow)
        if progress is not None and task is not None:
            progress.update(task, total=count + len(queue), completed=count)
    return count


def _resync(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    with Site.open(Settings.from_env()) as site:
        # Listing and comparing every portal product can take long against a slow portal: say so first.
        console.print(f"resync: reading the products of the portal at {site.settings.portal_url} ...")
        with console.status("reading the portal's products and comparing them with what was provisioned"):
            triggers = list(site.reconcilers.resync())
        console.print(f"resync: {len(triggers)} product(s) or grant(s) to reconcile")
        if args.enqueue:
            from provisioner.jobs import enqueue

            with site.pool.connection() as conn, conn.transaction():
                enqueue(conn, triggers)
            console.print(f"enqueued {len(triggers)} reconcile(s)")
            return 0
        failures = 0
        with Progress(console=console, transient=False) as progress:
            task = progress.add_task("reconciling", total=len(triggers))
            for trigger in triggers:
                try:
                    run_triggers(site, [trigger])
                except ProvisionerError as exc:
                    failures += 1
                    console.print(f"[red]{trigger}: {exc}[/]")
                progress.advance(task)
                done = int(progress.tasks[0].completed)
                if not console.is_terminal and done % max(1, len(triggers) // 10) == 0:
                    console.print(f"resync: {done}/{len(triggers)} reconciled")  # no live bar without a terminal
        console.print(f"resync: {len(triggers)} reconcile(s), {failures} failed")
    return 1 if failures else 0


def _status(args: argparse.Namespace) -> int:
    console = Console()
    _check_namespace(args.namespace)
    settings = Settings.from_env()
    if nothing_recorded_yet(settings):
        return say_nothing_recorded(settings, args.namespace)
    # Reads only: no store, no portal client (and nothing started beside a running service).
    with Site.open(settings, reconcile=False) as site:
        records = site.state.all_products()
        last = site.state.last_run_per_subject()
        bucket = site.settings.s3_bucket
        # What a product reads is its grant decisions (the one source of it), as its .env's S3_READ_PREFIXES names them.
        reads: dict[str, set[str]] = {}
        for g in site.state.all_grants():
            reads.setdefault(g.consumer_id, set()).add(
                f"{bucket}/{_grant_prefix(g.producer_namespace, g.output_port_namespace)}"
            )
        table = Table("product", "namespace", "prefix", "key id", "reads", "last run", "state")
        for r in records:
            if args.namespace and r.namespace != args.namespace:
                continue
            run = last.get(r.product_id, {})
            when = run.get("finished_at") or run.get("started_at")
            table.add_row(
                r.name or r.product_id,
                r.namespace,
                f"s3://{bucket}/{Namespace(r.namespace).prefix}",
                r.access_key_id or "-",
                names(sorted(reads.get(r.product_id, ()))),
                f"{run.get('kind', '-')} {run.get('status', '-')} {when:%Y-%m-%d %H:%M:%S}" if when else "-",
                r.state,
            )
        console.print(table)
        parked = [p for p in ParkingLot(site.state).all().values() if _shows(args.namespace, p)]
        if parked:
            console.print(_parked_table(parked))
        shown_ids = {r.product_id: r.namespace for r in records if not args.namespace or r.namespace == args.namespace}
        states = [s for s in site.state.target_states() if s.product_id in shown_ids]
        if states:  # only with targets beside S3 (PROVISIONER_TARGETS)
            console.print(_targets_table(states, shown_ids))
        if args.namespace:
            record = next((r for r in records if r.namespace == args.namespace), None)
            if record is None:
                if parked:
                    return 0
                print(f"provisioner: namespace {args.namespace!r} is not provisioned here", file=sys.stderr)
                return 1
            runs = Table("run", "kind", "status", "steps", "error", "started")
            for run in site.state.last_runs(record.product_id, limit=10):
                runs.add_row(
                    str(run["id"]),
                    run["kind"],
                    run["status"],
                    names(run["steps"]),
                    run["error"] or "",
                    f"{run['started_at']:%Y-%m-%d %H:%M:%S}",
                )
            console.print(runs)
            _print_reports(console, site, record.product_id, Namespace(record.namespace))
    return 0


def _targets_table(states: list[TargetState], namespaces: dict[str, str]) -> Table:
    """Each target's last outcome per product (reconcile/targets.py): converged, waiting (and why), failed, deleted."""
    table = Table("namespace", "target", "aspect", "state", "steps", "why", "updated")
    for s in states:
        detail = s.detail
        why = detail.get("error") or "; ".join(detail.get("waiting", []))
        when = f"{s.updated_at:%Y-%m-%d %H:%M:%S}" if s.updated_at else "-"
        table.add_row(
            namespaces.get(s.product_id, s.product_id),
            s.target,
            s.aspect,
            s.state,
            names(detail.get("steps", [])),
            why,
            when,
        )
    return table


def _print_reports(console: Console, site: Site, product_id: str, namespace: Namespace) -> None:
    """What exists now in each target beside S3, asked of the target itself (for drift).

    Built from settings, not from the site's reconcilers: ``status`` opens no store (it may run beside ``serve``).
    """
    for scoped in extra_targets(site.settings):
        target = scoped.target
        try:
            report = dict(target.report(TargetProduct(product_id, namespace)))
        except ProvisionerError as exc:
            console.print(f"{target.name}: {exc}")
            continue
        console.print(f"{target.name}: " + ", ".join(f"{k}={v}" for k, v in report.items()))


def _shows(namespace: str | None, parked: Parked) -> bool:
    return namespace is None or parked.namespace == namespace


def _parked_table(parked: list[Parked]) -> Table:
    """Products that failed permanently and wait for a change (reconcile/parking.py)."""
    table = Table(
        "parked product",
        "namespace",
        "why",
        "since",
        title="Parked: retried when the portal shows them differently, or by `provisioner provision <id>`",
    )
    for p in parked:
        since = f"{p.parked_at:%Y-%m-%d %H:%M:%S}" if p.parked_at else "-"
        table.add_row(p.product_id, p.namespace or "-", f"{p.reason}: {p.error}", since)
    return table


def _rotate(args: argparse.Namespace) -> int:
    with Site.open(Settings.from_env()) as site:
        key_id = site.reconcilers.rotate(args.namespace)
    Console().print(f"{args.namespace}: new key {key_id} written to .env; old key deleted")
    return 0


def _grants(args: argparse.Namespace) -> int:
    console = Console()
    _check_namespace(args.namespace)
    settings = Settings.from_env()
    if nothing_recorded_yet(settings):
        return say_nothing_recorded(settings, args.namespace)
    with Site.open(settings, reconcile=False) as site:
        products = {r.product_id: r for r in site.state.all_products()}
        grants = site.state.all_grants()
        known = {r.namespace for r in products.values()} | {g.producer_namespace for g in grants}
        if args.namespace and args.namespace not in known:
            # As `status NOPE` does: a typo is not an empty table.
            print(f"provisioner: namespace {args.namespace!r} is not provisioned here", file=sys.stderr)
            return 1
        outcomes = site.state.tokenize_outcomes()
        bucket = site.settings.s3_bucket

        def consumer_namespace(consumer_id: str) -> str:
            consumer = products.get(consumer_id)
            return consumer.namespace if consumer else consumer_id

        def wanted(consumer_ns: str, producer_ns: str) -> bool:
            return not args.namespace or args.namespace in (consumer_ns, producer_ns)

        table = Table("consumer", "reads", "output port", "last tokenization", "granted because")
        for g in grants:
            consumer_ns = consumer_namespace(g.consumer_id)
            if not wanted(consumer_ns, g.producer_namespace):
                continue
            outcome = outcomes.get(g.output_port_id)
            last = (
                f"{outcome['status']} {outcome['rows_changed']} rows (run {outcome['run_id']})" if outcome else "none"
            )
            table.add_row(
                consumer_ns,
                f"s3://{bucket}/{_grant_prefix(g.producer_namespace, g.output_port_namespace)}",
                g.output_port_namespace or g.output_port_id,
                last,
                g.tokenize_note,
            )
        console.print(table)
        # Approved ports without a grant, each with its reason on its own line (reasons are long; tables wrap them).
        waits = [
            w
            for w in site.state.all_waits()
            if (c := products.get(w.consumer_id)) is not None
            and c.state == "provisioned"
            and wanted(c.namespace, w.producer_namespace)
        ]
        if waits:
            console.print(f"[bold]{len(waits)} approved output port(s) not granted yet:[/]")
        for w in waits:
            port = f"{w.producer_namespace or w.producer_id}/{w.output_port_namespace or w.output_port_id}"
            since = f" (since {w.since:%Y-%m-%d %H:%M:%S})" if w.since else ""
            console.print(f"  {consumer_namespace(w.consumer_id)} waits for {port}{since}: {w.reason}", soft_wrap=True)
    return 0


def say_nothing_recorded(settings: Settings, namespace: str | None = None) -> int:
    """What a read-only command says on a data dir where nothing ran yet; exit code 1 when it asked for a name."""
    where = settings.data_dir / "postgres"
    if namespace is not None:
        print(
            f"provisioner: namespace {namespace!r} is not provisioned here (no database in {where} yet)",
            file=sys.stderr,
        )
        return 1
    print(
        f"nothing recorded yet: no database in {where} (`provisioner serve` creates it; "
        "or set PROVISIONER_DATABASE_URL)"
    )
    return 0


def _check_namespace(given: str | None) -> None:
    """A namespace argument as the portal would accept it (InvalidName, one line, exit 1, otherwise)."""
    if given is not None:
        Namespace(given)


def names(items: Sequence[str]) -> str:
    """A comma-separated list, or a dash when empty (for tables)."""
    return ", ".join(items) if items else "-"


def _grant_prefix(producer: str, output_port: str) -> str:
    """The folder a grant opens, or the producer's prefix for a row whose names are not (or no longer) valid."""
    try:
        return ReadGrant(Namespace(producer), Namespace(output_port)).prefix
    except ProvisionerError:
        return f"{producer}/published/{output_port}/"
