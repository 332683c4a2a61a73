"""`provisioner demo`: the whole flow on this machine in a few seconds, with no external service.

Embedded PostgreSQL (queue, state, and a tenant database with PII), the embedded S3 store (SeaweedFS; moto's
in-memory store only with PROVISIONER_STORE_IN_MEMORY=true), a portal stand-in serving the portal's API shapes and
sending its webhooks, and the real web intake and worker. The portal stand-in creates three products and approves
one access request; the demo then shows what the provisioner did and checks it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import secrets
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from prometheus_client import CollectorRegistry
from psycopg import sql
from rich.console import Console
from rich.table import Table

from provisioner import jobs
from provisioner.logs import configure_logging
from provisioner.names import Namespace
from provisioner.persistence import queue as job_queue
from provisioner.persistence import runs as run_records
from provisioner.persistence.state import StateStore
from provisioner.settings import Settings
from provisioner.site import Site, resolve_database
from provisioner.testing.portal import PortalState, serve_standin
from provisioner.web.auth import url_token

PRODUCER, CONSUMER, THIRD = "customer-360", "marketing-insights", "finance-ledger"
TENANT_DB, TENANT_ROLE = "demo_tenant", "demo_tokenizer"
PORT_FILE = "published/customers/customers.csv"  # the folder of the producer's output port "customers"
LEDGER_FILE = "published/ledger/ledger.csv"
CUSTOMERS = [
    ("Ada Lovelace", "ada@example.com", "+44 20 7946 0001"),
    ("Grace Hopper", "grace@example.org", "+1 202 555 0102"),
    ("Linus Torvalds", "linus@example.net", "+358 9 555 0103"),
    ("Margaret Hamilton", "margaret@example.com", "+1 617 555 0104"),
    ("Katherine Johnson", "katherine@example.org", "+1 757 555 0105"),
]


def register(subparsers: Any) -> None:
    """Add `demo`."""
    p = subparsers.add_parser(
        "demo",
        help="run the whole flow locally: create products, approve access, tokenize, grant (no external service)",
        description="Start embedded PostgreSQL and S3, a stand-in portal and the real provisioner (web + worker); "
        "create a producer (with a customers table of emails and phone numbers), a consumer and a third product; "
        "approve the consumer's access; then show the scaffolded projects, the tokenized rows, the consumer "
        "reading the producer's data with its own key, and that key denied on the third product. Exit code 0 "
        "when every check passes.",
    )
    p.add_argument("--dir", type=Path, help="work directory (default: a new temporary one, removed afterwards)")
    p.add_argument("--keep", action="store_true", help="keep everything running for exploring until Ctrl+C")
    p.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the provisioner (default 90)")
    p.set_defaults(func=_demo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _demo(args: argparse.Namespace) -> int:
    console = Console()
    temporary = args.dir is None
    work = Path(args.dir or tempfile.mkdtemp(prefix="provisioner-demo-")).resolve()
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o755)  # the embedded PostgreSQL runs as its own system user when we are root
    try:
        return _run(console, work, args)
    finally:
        if temporary and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def _run(console: Console, work: Path, args: argparse.Namespace) -> int:
    base = Settings.from_env()
    configure_logging("WARNING", fmt=base.log_format)
    settings = dataclasses.replace(
        base,
        data_dir=work,
        database_url=None,
        s3_endpoint=None,
        s3_public_endpoint=None,
        s3_access_key=None,
        s3_secret_key=None,
        s3_embedded_port=_free_port(),
        products_dir=work / "products",
        port=_free_port(),
        webhook_secret=secrets.token_urlsafe(24),
        webhook_token_max_age=0,
        status_token=None,
        tokenize_key=secrets.token_urlsafe(32),
        tokenize_mode="hmac",
        resync_seconds=0,
        retention_days=0,  # a demo of seconds has nothing to prune
        worker_concurrency=2,
        log_level="WARNING",
    )
    console.rule("[bold]provisioner demo")
    console.print(f"work directory: {work}")
    url = resolve_database(settings)
    tenant_dsn = _tenant_database(url)
    policy = work / "tokenize-policy.yaml"
    policy.write_text(
        f"policies:\n  - producer: {PRODUCER}\n    output_port: '*'\n    tenant: demo\n    max_columns: 4\n"
        "    tables:\n      - {schema: public, table: customers, columns: [email, phone]}\n"
    )
    webhook = f"http://127.0.0.1:{settings.port}/webhooks/portal/v2?token={url_token(settings.webhook_secret or '')}"
    portal_state = PortalState(webhook_v2_url=webhook, echo_writes=True)
    with serve_standin(portal_state) as standin:
        settings = dataclasses.replace(
            settings, portal_url=standin.url, tokenize_policy=policy, tenants={"demo": {"DSN": tenant_dsn}}
        )
        with Site.open(settings, database_url=url, own_store=True) as site:
            console.print(f"PostgreSQL: embedded; S3 store: {site.s3_endpoint}; portal stand-in: {standin.url}")
            console.print(f"provisioner: http://127.0.0.1:{settings.port} (web intake + worker)")
            return asyncio.run(_serve_and_play(console, site, portal_state, args))


def _tenant_database(url: str) -> str:
    """A tenant database with a customers table of PII and a role that may only read and update it."""
    with psycopg.connect(url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (TENANT_DB,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TENANT_DB)))
        role = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (TENANT_ROLE,)).fetchone()
        if not role:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(TENANT_ROLE)))
    tenant_admin = psycopg.conninfo.make_conninfo(url, dbname=TENANT_DB)
    with psycopg.connect(tenant_admin, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS customers (id int PRIMARY KEY, name text, email text, phone text)")
        for i, (name, email, phone) in enumerate(CUSTOMERS, start=1):
            conn.execute(
                "INSERT INTO customers VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING", (i, name, email, phone)
            )
        conn.execute(sql.SQL("GRANT SELECT, UPDATE ON customers TO {}").format(sql.Identifier(TENANT_ROLE)))
    return psycopg.conninfo.make_conninfo(url, dbname=TENANT_DB, user=TENANT_ROLE)


async def _serve_and_play(console: Console, site: Site, portal: PortalState, args: argparse.Namespace) -> int:
    registry = CollectorRegistry()
    async with site.open_web(registry) as app:
        return await _play_beside(console, site, portal, args, app, registry)


async def _play_beside(
    console: Console, site: Site, portal: PortalState, args: argparse.Namespace, app: Any, registry: CollectorRegistry
) -> int:
    """Serve the web app and run a worker while the portal's users act (in a thread)."""
    s = site.settings
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=s.port, access_log=False, log_config=None, lifespan="off")
    )
    server_task = asyncio.create_task(server.serve())
    job_app = site.job_app(jobs.JobMetrics(registry), backoff_seconds=0.5)
    worker_task = asyncio.create_task(
        jobs.run_worker(job_app, concurrency=s.worker_concurrency, install_signal_handlers=False)
    )
    try:
        while not server.started:
            if server_task.done():
                await server_task
                return 1
            await asyncio.sleep(0.02)
        ok = await asyncio.to_thread(_play, console, site, portal, args.timeout)
        if args.keep:
            _print_attach(console, site, write_cli_env(site))
            with contextlib.suppress(asyncio.CancelledError):
                await server_task
        return 0 if ok else 1
    finally:
        server.should_exit = True
        worker_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await worker_task
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await server_task


def write_cli_env(site: Site) -> Path:
    """The settings a CLI in another shell needs to work beside this demo, as ``demo.env`` (mode 0600: it holds
    the demo's HMAC key and webhook secret). The data dir is enough to attach to the database and the store."""
    s = site.settings
    values = {
        "PROVISIONER_DATA_DIR": str(s.data_dir),
        "PROVISIONER_PORTAL_URL": s.portal_url,
        "PROVISIONER_WEBHOOK_SECRET": s.webhook_secret or "",
        "PROVISIONER_TOKENIZE_KEY": s.tokenize_key or "",
        "PROVISIONER_TOKENIZE_POLICY": str(s.tokenize_policy or ""),
        "PROVISIONER_TENANT_DEMO_DSN": s.tenants["demo"]["DSN"],
    }
    from provisioner.scaffold import write_env

    path = s.data_dir / "demo.env"
    write_env(path, values)
    return path


def _print_attach(console: Console, site: Site, env_file: Path) -> None:
    """How to use this running demo from another shell: the CLI, the projects, the web endpoints."""
    s = site.settings
    console.rule("[bold]--keep: everything keeps running until Ctrl+C")
    console.print(f"projects (one folder per product, each with its .env): {s.products_dir}")
    console.print(f"provisioner: http://127.0.0.1:{s.port}/status/products, /readyz, /metrics")
    console.print(f"portal stand-in: {s.portal_url}")
    console.print("attach the CLI from another shell (it uses this demo's database and store):")
    console.print(f"  set -a; . {env_file}; set +a", soft_wrap=True, highlight=False)
    console.print("  provisioner status; provisioner grants; provisioner runs", highlight=False)
    console.print("Ctrl+C stops everything.")


def _granted(state: StateStore, consumer_id: str) -> bool:
    """The consumer holds a grant and its access run is over (the decision is recorded before the key rotates)."""
    runs = state.last_runs(consumer_id, limit=1)
    finished = bool(runs) and runs[0]["kind"] == "access" and runs[0]["status"] != "running"
    return finished and bool(state.grants_of(consumer_id))


def _wait(check: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def _play(console: Console, site: Site, portal: PortalState, timeout: float) -> bool:
    """Act as the portal's users, then show and check what the provisioner did."""
    state = site.state
    checks: list[tuple[str, bool]] = []
    console.rule("1. three data products are created in the portal (webhooks: data_product.event)")
    products = {
        ns: portal.create_product(title, ns, description=f"demo product {title}")
        for ns, title in ((PRODUCER, "Customer 360"), (CONSUMER, "Marketing Insights"), (THIRD, "Finance Ledger"))
    }
    provisioned = _wait(
        lambda: all((r := state.product(p.id)) is not None and r.state == "provisioned" for p in products.values()),
        timeout,
    )
    checks.append(("three products provisioned through webhook → queue → worker", provisioned))
    if not provisioned:
        return _report(console, checks)
    projects = Table(
        "namespace",
        "files",
        ".env",
        "portal status",
        "finalizers",
        title=f"projects in {site.settings.products_dir}",
    )
    for ns, product in products.items():
        project = site.settings.products_dir / Namespace(ns).folder
        env_file = project / ".env"
        projects.add_row(
            ns,
            str(sum(1 for p in project.rglob("*") if p.is_file())),
            f"mode {env_file.stat().st_mode & 0o777:o}, {len(_env(env_file))} settings",
            product.status,
            ", ".join(product.finalizers),
        )
    console.print(projects)
    checks.append(("status active and finalizer set", all(p.status == "active" for p in products.values())))

    bucket = site.settings.s3_bucket
    producer_s3 = _s3_client(site, PRODUCER)
    producer_s3.put_object(Bucket=bucket, Key=f"{PRODUCER}/{PORT_FILE}", Body=b"segment,customers\nvip,2\nregular,3\n")
    _s3_client(site, THIRD).put_object(Bucket=bucket, Key=f"{THIRD}/{LEDGER_FILE}", Body=b"total\n42\n")
    console.print(
        "each producer published a file into an output port folder of its own prefix with its own key "
        f"(s3://{bucket}/<ns>/published/<output port>/)"
    )

    console.rule("2. the consumer requests access; the producer approves (webhook: input_port.event)")
    port = portal.create_output_port(products[PRODUCER].id, "Customers", namespace="customers", tags=["pii-email"])
    old_key = _env(site.settings.products_dir / CONSUMER / ".env").get("S3_ACCESS_KEY")
    portal.request_access(products[CONSUMER].id, port.id)
    portal.approve(port.id, products[CONSUMER].id)
    granted = _wait(lambda: _granted(state, products[CONSUMER].id), timeout)
    checks.append(("grant added after approval", granted))
    if not granted:
        return _report(console, checks)

    rows = _tenant_rows(site)
    table = Table("id", "name", "email", "phone", title="producer's customers table after tokenization")
    for row in rows:
        table.add_row(*(str(v) for v in row))
    console.print(table)
    plaintext = {email for _, email, _ in CUSTOMERS}
    checks.append(("0 plaintext emails left", not plaintext & {r[2] for r in rows}))
    checks.append(
        ("tokens look like tok_…_poc", all(str(r[2]).startswith("tok_") and str(r[2]).endswith("_poc") for r in rows))
    )

    console.rule("3. the consumer reads with its own, new key")
    env = _env(site.settings.products_dir / CONSUMER / ".env")
    consumer_s3 = _s3_client(site, CONSUMER)
    checks.append(("consumer key was rotated into its .env", env.get("S3_ACCESS_KEY") != old_key))
    folder = f"{bucket}/{PRODUCER}/published/customers/"
    checks.append(("S3_READ_PREFIXES lists the approved output port", env.get("S3_READ_PREFIXES") == folder))
    body = consumer_s3.get_object(Bucket=bucket, Key=f"{PRODUCER}/{PORT_FILE}")["Body"].read()
    console.print(f"consumer reads s3://{bucket}/{PRODUCER}/{PORT_FILE}:\n{body.decode()}")
    checks.append(("consumer reads the approved output port", body.startswith(b"segment")))
    raw_denied = _denied(lambda: consumer_s3.get_object(Bucket=bucket, Key=f"{PRODUCER}/raw/orders.csv"))
    console.print(
        f"the same key on s3://{bucket}/{PRODUCER}/raw/orders.csv: {'AccessDenied' if raw_denied else 'ALLOWED'}"
    )
    checks.append(("consumer key denied on the producer's raw data", raw_denied))
    checks.append(
        (
            "consumer cannot write the producer's prefix",
            _denied(lambda: consumer_s3.put_object(Bucket=bucket, Key=f"{PRODUCER}/x", Body=b"x")),
        )
    )
    third_denied = _denied(lambda: consumer_s3.get_object(Bucket=bucket, Key=f"{THIRD}/{LEDGER_FILE}"))
    console.print(
        f"the same key on s3://{bucket}/{THIRD}/{LEDGER_FILE}: {'AccessDenied' if third_denied else 'ALLOWED'}"
    )
    checks.append(("consumer key denied on a third product's prefix", third_denied))
    old_gone = old_key is not None and old_key not in {
        k.access_key_id for k in site.store.list_keys(Namespace(CONSUMER))
    }
    checks.append(("consumer's old key deleted", old_gone))

    console.rule("4. the portal echoes every provisioner write back as an event; it settles")
    settled = _wait(lambda: _quiet(site, portal), timeout)
    sent = len(portal.sent)
    console.print(f"webhooks the portal sent in all: {sent}; provisioner runs: {_count_runs(site)}")
    checks.append(("no reconcile loop: queue empty and no new webhooks", settled and sent < 40))
    return _report(console, checks)


def _quiet(site: Site, portal: PortalState) -> bool:
    """True when the job queue is empty and the portal sent nothing new for a second."""
    before = len(portal.sent)
    time.sleep(1.0)
    with site.pool.connection() as conn:
        left = job_queue.jobs_left(conn)
    return left == 0 and len(portal.sent) == before


def _count_runs(site: Site) -> int:
    with site.pool.connection() as conn:
        return run_records.count_runs(conn)


def _report(console: Console, checks: list[tuple[str, bool]]) -> bool:
    console.rule("checks")
    for name, ok in checks:
        console.print(f"{'[green]PASS[/]' if ok else '[red]FAIL[/]'} {name}")
    passed = sum(ok for _, ok in checks)
    console.print(f"{passed} passed, {len(checks) - passed} failed")
    return passed == len(checks)


def _env(path: Path) -> dict[str, str]:
    from provisioner.scaffold import read_env

    return read_env(path) if path.exists() else {}


def _s3_client(site: Site, namespace: str) -> Any:
    """An S3 client with the key from the product's own .env, as the data team would use it."""
    from provisioner.storage.botocall import make_client

    env = _env(site.settings.products_dir / Namespace(namespace).folder / ".env")
    return make_client(
        "s3",
        endpoint=env["S3_ENDPOINT"],
        access_key=env["S3_ACCESS_KEY"],
        secret_key=env["S3_SECRET_KEY"],
        region=env["S3_REGION"],
        max_attempts=1,
    )


def _denied(call: Callable[[], object]) -> bool:
    import botocore.exceptions

    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return exc.response.get("Error", {}).get("Code") in {"AccessDenied", "403", "Forbidden"}
    return False


def _tenant_rows(site: Site) -> list[tuple[Any, ...]]:
    dsn = site.settings.tenants["demo"]["DSN"]
    with psycopg.connect(dsn) as conn:
        return list(conn.execute("SELECT id, name, email, phone FROM customers ORDER BY id"))
