"""Benchmark issue 3: products/s through the real worker, and a no-op resync over 10,000 products.

Run by hand:  .venv/bin/python -m bench.provision [--products 60] [--resync-products 10000]

Parts: embedded PostgreSQL (queue + state), moto's S3+IAM server with IAM enforcement, real cookiecutter, the portal
stand-in over HTTP. Baselines measured in the same run:
- provisioning: the same reconciles called one after another in this process, without the queue;
- resync: the bare portal reads a resync cannot avoid (one list + one input-port read per product);
- lock hand-off (issue 12 §6): the gap between the end of a product's job and the start of the job queued behind
  its lock, with the notify-on-finish trigger of migration 005 and, in the same run, with that trigger disabled.
Targets: >= 20 products/s through the worker; a no-op resync of 10,000 products in <= 30 s.

Two provisioning targets (issue 18): products/s through the worker with S3 alone and with S3 + BigQuery (bqemulator,
a real BigQuery REST server, provisioner/testing/bqemulator.py), in alternating rounds of the same run; S3 alone is
the baseline. ``--only-targets`` runs just that part.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from uuid import uuid4

import psycopg

from provisioner import db, jobs
from provisioner.events import ReconcileAccess, ReconcileProduct
from provisioner.names import BucketName
from provisioner.persistence.state import StateStore
from provisioner.portal import PortalClient
from provisioner.reconcile import ReconcileConfig, Reconcilers, ScopedTarget
from provisioner.reconcile.products import fingerprint
from provisioner.settings import default_template
from provisioner.storage import build_store
from provisioner.storage.embedded import start_moto_store
from provisioner.testing.portal import PortalState, serve_standin


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def provision_through_worker(reconcilers: Reconcilers, state: PortalState, url: str, n: int, concurrency: int) -> float:
    """Seconds for ``n`` new products from enqueue to converged, via procrastinate workers."""
    ids = [state.create_product(f"Worker {i}", f"wrk-{i:05d}", notify=False).id for i in range(n)]
    app = jobs.build_app(url, reconcilers, max_attempts=3, resync_seconds=0)
    started = time.perf_counter()
    with psycopg.connect(url) as conn, conn.transaction():
        jobs.enqueue(conn, [ReconcileProduct(i) for i in ids])
    asyncio.run(jobs.run_worker(app, concurrency=concurrency, wait=False, install_signal_handlers=False))
    elapsed = time.perf_counter() - started
    with psycopg.connect(url) as conn:
        done = conn.execute(
            "SELECT count(*) FROM provisioner_products WHERE state = 'provisioned' AND namespace LIKE 'wrk-%'"
        ).fetchone()
    assert done and done[0] == n, f"only {done} of {n} products converged"
    return elapsed


def provision_through_worker_processes(
    state: PortalState, url: str, env: dict[str, str], n: int, processes: int, concurrency: int
) -> float:
    """Seconds for ``n`` new products with ``processes`` real `provisioner worker` processes (started beforehand)."""
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "provisioner", "worker", "--concurrency", str(concurrency)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]
    try:
        time.sleep(4)  # let them start (imports, pool, LISTEN) before the clock starts
        ids = [state.create_product(f"Proc {i}", f"proc-{i:05d}", notify=False).id for i in range(n)]
        started = time.perf_counter()
        with psycopg.connect(url) as conn, conn.transaction():
            jobs.enqueue(conn, [ReconcileProduct(i) for i in ids])
        while True:
            with psycopg.connect(url) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM provisioner_products WHERE state = 'provisioned' AND namespace LIKE 'proc-%'"
                ).fetchone()
            if row and row[0] == n:
                return time.perf_counter() - started
            if time.perf_counter() - started > 300:
                raise RuntimeError(f"only {row} of {n} products converged in 300 s")
            time.sleep(0.02)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        for w in workers:
            w.wait(timeout=30)


async def lock_handoff(reconcilers: Reconcilers, state: PortalState, url: str, n: int, concurrency: int) -> list[float]:
    """Seconds from the end of a product job to the start of the access job of the same product queued behind it.

    One product at a time, on an otherwise idle worker with procrastinate's default 5 s poll: the case where the
    job behind the lock has nothing to wake it but a notification.
    """
    ids = [state.create_product(f"Handoff {i}", f"hnd-{i:05d}-{uuid4().hex[:6]}", notify=False).id for i in range(n)]
    for pid in ids:
        reconcilers.reconcile_product(pid)  # converged: the timed jobs are cheap re-checks
    app = jobs.build_app(url, reconcilers, max_attempts=3, resync_seconds=0)
    worker = asyncio.create_task(jobs.run_worker(app, concurrency=concurrency, install_signal_handlers=False))
    gaps: list[float] = []
    try:
        for pid in ids:
            with psycopg.connect(url) as conn, conn.transaction():
                jobs.enqueue(conn, [ReconcileProduct(pid), ReconcileAccess(pid)])
            gap = None
            while gap is None:
                await asyncio.sleep(0.01)
                with psycopg.connect(url) as conn:
                    row = conn.execute(
                        "SELECT extract(epoch FROM a.started_at - p.finished_at) FROM provisioner_runs a"
                        " JOIN provisioner_runs p ON p.subject = a.subject AND p.kind = 'product'"
                        " WHERE a.subject = %s AND a.kind = 'access' AND a.status <> 'running'"
                        " ORDER BY p.id DESC LIMIT 1",
                        (pid,),
                    ).fetchone()
                gap = float(row[0]) if row else None
            gaps.append(gap)
    finally:
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    return gaps


def set_lock_notify(url: str, enabled: bool) -> None:
    """Turn migration 005's notify-on-finish trigger on or off (the A/B of the hand-off measurement)."""
    with psycopg.connect(url, autocommit=True) as conn:
        action = "ENABLE" if enabled else "DISABLE"
        conn.execute(f"ALTER TABLE procrastinate_jobs {action} TRIGGER provisioner_notify_lock_freed")  # fixed text


def provision_inline(reconcilers: Reconcilers, state: PortalState, n: int) -> float:
    """Baseline: the same work called directly, one product after another."""
    ids = [state.create_product(f"Inline {i}", f"inl-{i:05d}", notify=False).id for i in range(n)]
    started = time.perf_counter()
    for pid in ids:
        reconcilers.reconcile_product(pid)
    return time.perf_counter() - started


def seed_converged(state: PortalState, pool_url: str, n: int) -> None:
    """``n`` products the portal shows as active with our finalizer, recorded as converged (no store calls)."""
    ids = state.bulk_create_products(n, prefix="rs", finalizers=["provisioner"])
    rows = []
    for pid in ids:
        p = state.products[pid]
        p.status = "active"
        rows.append((pid, p.namespace, p.name, fingerprint(p.namespace, "active", True, p.name)))
    with psycopg.connect(pool_url) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY provisioner_products (product_id, namespace, name, state, fingerprint, seeded, verified_at)"
            " FROM STDIN"
        ) as copy:
            for pid, ns, name, fp in rows:
                copy.write_row((pid, ns, name, "provisioned", fp, True, "now"))
        conn.commit()


def bare_reads(client: PortalClient, parallelism: int) -> float:
    """Baseline: the portal reads alone (list, then every product's input ports in parallel)."""
    started = time.perf_counter()
    products = client.list_products()
    with ThreadPoolExecutor(parallelism) as pool:
        list(pool.map(lambda p: client.input_ports(p.id), products))
    return time.perf_counter() - started


def two_targets(
    client: PortalClient,
    store: object,
    pool_state: StateStore,
    config: ReconcileConfig,
    portal_state: PortalState,
    url: str,
    work: Path,
    n: int,
    concurrency: int,
    rounds: int,
) -> None:
    """Products/s through the worker with S3 alone and with S3 + BigQuery (emulator), alternating rounds."""
    from provisioner.targets.bigquery import BigQueryConfig, BigQueryTarget, build_client
    from provisioner.testing.bqemulator import start_emulator

    emulator = start_emulator(work / "bq", "bench-project")
    try:
        names = [f"tt{r}{kind}-{i:04d}" for r in range(rounds) for kind in "sb" for i in range(n)]
        bq_config = BigQueryConfig(
            project="bench-project",
            endpoint=emulator.endpoint,
            principals={ns: f"group:{ns}@example.com" for ns in names},
        )
        bigquery = ScopedTarget(BigQueryTarget(bq_config, build_client(bq_config)))
        s3_only = Reconcilers(portal=client, store=store, state=pool_state, config=config)  # type: ignore[arg-type]
        both = Reconcilers(
            portal=client,
            store=store,  # type: ignore[arg-type]
            state=pool_state,
            config=config,
            targets=[bigquery],
        )
        both.reconcile_product(portal_state.create_product("Warm BQ", "warm-bq", notify=False).id)
        times: dict[str, list[float]] = {"s": [], "b": []}
        for r in range(rounds):
            for kind, reconcilers in (("s", s3_only), ("b", both)):
                ids = [
                    portal_state.create_product(f"T {r}{kind}{i}", f"tt{r}{kind}-{i:04d}", notify=False).id
                    for i in range(n)
                ]
                app = jobs.build_app(url, reconcilers, max_attempts=3, resync_seconds=0)
                started = time.perf_counter()
                with psycopg.connect(url) as conn, conn.transaction():
                    jobs.enqueue(conn, [ReconcileProduct(i) for i in ids])
                asyncio.run(jobs.run_worker(app, concurrency=concurrency, wait=False, install_signal_handlers=False))
                times[kind].append(time.perf_counter() - started)
                failed = [s for s in pool_state.target_states() if s.product_id in set(ids) and s.state != "converged"]
                assert not failed, f"{len(failed)} BigQuery targets did not converge: {failed[:3]}"
        datasets = sum(1 for _ in bigquery.target.client.list_datasets())  # type: ignore[attr-defined]
        s3, bq = statistics.median(times["s"]), statistics.median(times["b"])
        print(
            f"two targets, {n} products per round, {rounds} rounds each, concurrency {concurrency}: "
            f"S3 alone median {n / s3:.1f} products/s ({s3:.2f} s); S3 + BigQuery (emulator) median {n / bq:.1f} "
            f"products/s ({bq:.2f} s); ratio {bq / s3:.2f}x the time of S3 alone; {datasets} datasets in the emulator"
        )
        print(f"  rounds S3 alone: {', '.join(f'{t:.2f}' for t in times['s'])} s")
        print(f"  rounds S3 + BQ : {', '.join(f'{t:.2f}' for t in times['b'])} s")
    finally:
        emulator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--products", type=int, default=60)
    parser.add_argument("--resync-products", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--handoffs", type=int, default=10)
    parser.add_argument("--only-targets", action="store_true", help="run only S3 alone vs S3 + BigQuery")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="provisioner-bench-"))
    work.chmod(0o755)
    url = db.start_embedded(work / "pg").url
    db.migrate(url)
    moto = start_moto_store(work, _free_port())
    store = build_store(
        "aws-iam", endpoint=moto.endpoint, access_key=moto.access_key, secret_key=moto.secret_key, region="us-east-1"
    )
    portal_state = PortalState(echo_writes=False)
    standin = serve_standin(portal_state)
    try:
        with db.open_pool(url, max_size=2 * args.concurrency + 4) as pool, PortalClient(standin.url) as client:
            config = ReconcileConfig(
                bucket=BucketName("bench-products"),
                products_dir=work / "products",
                template=default_template(),
                s3_endpoint=moto.endpoint,
                s3_region="us-east-1",
            )
            reconcilers = Reconcilers(portal=client, store=store, state=StateStore(pool), config=config)
            reconcilers.reconcile_product(portal_state.create_product("Warm", "warm-up", notify=False).id)
            two_targets(
                client,
                store,
                StateStore(pool),
                config,
                portal_state,
                url,
                work,
                args.products,
                args.concurrency,
                args.repeat,
            )
            if args.only_targets:
                return

            inline = provision_inline(reconcilers, portal_state, args.products)
            worker = provision_through_worker(reconcilers, portal_state, url, args.products, args.concurrency)
            env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
            env.update(
                PROVISIONER_DATABASE_URL=url,
                PROVISIONER_PORTAL_URL=standin.url,
                PROVISIONER_S3_ENDPOINT=moto.endpoint,
                PROVISIONER_S3_ACCESS_KEY=moto.access_key,
                PROVISIONER_S3_SECRET_KEY=moto.secret_key,
                PROVISIONER_S3_BUCKET="bench-products",
                PROVISIONER_PRODUCTS_DIR=str(work / "products"),
                PROVISIONER_RESYNC_SECONDS="0",
                PROVISIONER_LOG_LEVEL="WARNING",
            )
            procs = provision_through_worker_processes(
                portal_state, url, env, args.products, args.worker_processes, args.concurrency
            )
            print(f"provision inline : {args.products / inline:7.1f} products/s ({inline:.2f} s)")
            print(
                f"provision worker : {args.products / worker:7.1f} products/s ({worker:.2f} s, "
                f"concurrency {args.concurrency}); ratio to inline {inline / worker:.2f}x"
            )
            print(
                f"provision {args.worker_processes} worker processes: {args.products / procs:7.1f} products/s "
                f"({procs:.2f} s, concurrency {args.concurrency} each); ratio to inline {inline / procs:.2f}x"
            )

            results = {}
            for enabled in (False, True):
                set_lock_notify(url, enabled)
                results[enabled] = asyncio.run(
                    lock_handoff(reconcilers, portal_state, url, args.handoffs, args.concurrency)
                )
            for enabled, label in ((False, "without (baseline)"), (True, "with")):
                gaps = results[enabled]
                print(
                    f"lock hand-off {label} the notify on finish: median {statistics.median(gaps) * 1000:.0f} ms, "
                    f"max {max(gaps) * 1000:.0f} ms over {len(gaps)} products"
                )

            seed_converged(portal_state, url, args.resync_products)
            portal_state.reset_counters()
            total = len(portal_state.products)
            bare, plan = [], []
            for _ in range(args.repeat):
                bare.append(bare_reads(client, reconcilers.resyncer.parallelism))
                started = time.perf_counter()
                triggers = reconcilers.resync()
                plan.append(time.perf_counter() - started)
                assert triggers == [], f"a no-op resync planned {len(triggers)} reconciles"
            median_plan, median_bare = statistics.median(plan), statistics.median(bare)
            print(
                f"no-op resync over {total} products: median {median_plan:.2f} s (bare portal reads "
                f"{median_bare:.2f} s; ratio {median_plan / median_bare:.2f}x); 0 reconciles, 0 store calls"
            )
            digest = hashlib.sha256(str(sorted(portal_state.writes.items())).encode()).hexdigest()[:8]
            print(f"portal writes during resyncs: {sum(portal_state.writes.values())} (counter digest {digest})")
    finally:
        standin.stop()
        moto.stop()


if __name__ == "__main__":
    main()
