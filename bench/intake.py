"""Intake benchmark: sustained signed deliveries over loopback.

Compares `provisioner serve --no-worker` (uvicorn, one process, durable PostgreSQL commit per delivery) with a
bare Starlette handler that answers 200 without a database, in the same run, with the same client.

    python bench/intake.py [--seconds 10] [--clients 32] [--kind mix|v1|v2] [--database-url URL]

Without --database-url an embedded PostgreSQL is started in a temporary directory with its default (durable)
settings: fsync and synchronous_commit on. Every delivery is distinct (new CloudEvents id, new product id),
so each one is accepted and enqueues one job: the heaviest path, no duplicates, no coalescing.
The client is a minimal asyncio HTTP/1.1 keep-alive client, so that it costs little CPU on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from pathlib import Path

SECRET = "bench-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bare_server(port: int) -> None:
    """A bare Starlette handler on uvicorn: reads the body, answers 200, touches no database."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def handler(request: Request) -> JSONResponse:
        await request.body()
        return JSONResponse({"ok": True})

    app = Starlette(
        routes=[
            Route("/webhooks/portal", handler, methods=["POST"]),
            Route("/webhooks/portal/v2", handler, methods=["POST"]),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=port, access_log=False, log_level="warning")


def build_requests(n: int, kind: str, token: str) -> list[bytes]:
    """``n`` distinct, authenticated HTTP requests (v1 signed like the portal, v2 with the URL token)."""
    out = []
    for i in range(n):
        product = str(uuid.uuid4())
        use_v1 = kind == "v1" or (kind == "mix" and i % 2 == 0)
        if use_v1:
            content = {
                "method": "PUT",
                "url": f"/api/v2/data_products/{product}",
                "query": "",
                "response": "",
                "status_code": 200,
            }
            body = json.dumps(content, separators=(",", ":")).encode()
            # The portal signs json.dumps() with default separators and sends compact JSON.
            sign = hmac.new(SECRET.encode(), json.dumps(content).encode(), hashlib.sha512).hexdigest()
            head = f"POST /webhooks/portal HTTP/1.1\r\nSign: {sign}\r\n"
        else:
            body = json.dumps(
                {
                    "specversion": "1.0",
                    "id": str(uuid.uuid4()),
                    "source": "data-product-portal",
                    "type": "data_product.event",
                    "time": "2026-11-22T10:00:00+00:00",
                    "data": {"id": product},
                },
                separators=(",", ":"),
            ).encode()
            head = f"POST /webhooks/portal/v2?token={token} HTTP/1.1\r\n"
        head += (
            f"Host: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "User-Agent: bench\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far; 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


@dataclass
class CpuSnapshot:
    """CPU seconds used so far by the server, by PostgreSQL (every postgres process) and by this client."""

    server: float
    postgres: float
    client: float

    @classmethod
    def take(cls, server_pid: int) -> CpuSnapshot:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(_cpu_of(server_pid), sum(map(_cpu_of, _postgres_pids())), usage.ru_utime + usage.ru_stime)


@dataclass
class Result:
    accepted: int
    other: int
    seconds: float
    latencies: list[float]
    cpu: dict[str, float] | None = None  # CPU seconds per part during the measured window

    def cpu_us_per_request(self) -> dict[str, float]:
        done = self.accepted + self.other
        return {k: v * 1e6 / done for k, v in (self.cpu or {}).items()} if done else {}

    @property
    def rate(self) -> float:
        return self.accepted / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def _client(
    port: int,
    requests: list[bytes],
    next_index: list[int],
    stop_at: float,
    measure_from: float,
    result: Result,
    ok_status: tuple[bytes, ...],
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while True:
            now = time.perf_counter()
            if now >= stop_at:
                return
            i = next_index[0]
            next_index[0] += 1
            writer.write(requests[i % len(requests)])
            started = time.perf_counter()
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            done = time.perf_counter()
            if started >= measure_from:
                result.latencies.append(done - started)
                if status_line[9:12] in ok_status:
                    result.accepted += 1
                else:
                    result.other += 1
    finally:
        writer.close()


async def _account_cpu(server_pid: int, measure_from: float, stop_at: float, result: Result) -> None:
    await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
    before = CpuSnapshot.take(server_pid)
    await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
    after = CpuSnapshot.take(server_pid)
    result.cpu = {k: getattr(after, k) - getattr(before, k) for k in ("server", "postgres", "client")}


async def load(
    port: int,
    requests: list[bytes],
    clients: int,
    seconds: float,
    warmup: float,
    ok: tuple[bytes, ...],
    *,
    server_pid: int,
    repeat: bool = False,
) -> Result:
    start = time.perf_counter()
    measure_from = start + warmup
    stop_at = measure_from + seconds
    result = Result(0, 0, seconds, [])
    index = [0]
    await asyncio.gather(
        _account_cpu(server_pid, measure_from, stop_at, result),
        *(_client(port, requests, index, stop_at, measure_from, result, ok) for _ in range(clients)),
    )
    if index[0] > len(requests) and not repeat:
        raise SystemExit("ran out of distinct requests: raise --pool")
    return result


def wait_http(port: int, path: str, timeout: float = 60) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered on port {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--kind", choices=["mix", "v1", "v2"], default="mix")
    parser.add_argument("--pool", type=int, default=150000, help="distinct requests prepared")
    parser.add_argument("--database-url", help="use this PostgreSQL instead of an embedded one")
    parser.add_argument(
        "--pg-dir",
        help="keep the embedded PostgreSQL here across runs (a fresh database per run); default: a new cluster",
    )
    parser.add_argument("--log-level", default="WARNING", help="PROVISIONER_LOG_LEVEL of the server")
    parser.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_server:
        bare_server(args.bare_server)
        return

    from provisioner import db
    from provisioner.web.auth import url_token

    tmp = tempfile.TemporaryDirectory(prefix="bench-intake-")
    embedded_pid_file = None
    url = args.database_url
    if url is None:
        pg_dir = Path(args.pg_dir) if args.pg_dir else Path(tmp.name) / "postgres"
        server = db.start_embedded(pg_dir)
        url = server.url
        if not args.pg_dir:
            embedded_pid_file = pg_dir / "postmaster.pid"  # a throwaway cluster: stop it before deleting it
        else:
            import psycopg

            name = f"bench_{uuid.uuid4().hex[:8]}"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            url = urllib.parse.urlsplit(url)._replace(path=f"/{name}").geturl()
    db.migrate(url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATABASE_URL=url,
        PROVISIONER_WEBHOOK_SECRET=SECRET,
        PROVISIONER_LOG_LEVEL=args.log_level,
        PROVISIONER_RESYNC_SECONDS="0",
    )
    token = url_token(SECRET)
    requests = build_requests(args.pool, args.kind, token)  # distinct; the bare run stores none of them
    results: dict[str, Result] = {}
    try:
        port = free_port()
        bare = subprocess.Popen([sys.executable, __file__, "--bare-server", str(port)], env=env)
        try:
            wait_http(port, "/")
            results["bare Starlette handler (no database)"] = asyncio.run(
                load(
                    port, requests, args.clients, args.seconds, args.warmup, (b"200",), server_pid=bare.pid, repeat=True
                )
            )
        finally:
            stop(bare)
        port = free_port()
        serve_log = open(Path(tmp.name) / "serve.log", "wb")  # noqa: SIM115 - closed with the temporary folder
        serve = subprocess.Popen(
            [sys.executable, "-m", "provisioner", "serve", "--no-worker", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stderr=serve_log,
        )
        try:
            wait_http(port, "/healthz")
            # v2 deliveries are answered 202, v1 ones 200 (the portal's v1 sender wants exactly that).
            results["provisioner serve --no-worker"] = asyncio.run(
                load(port, requests, args.clients, args.seconds, args.warmup, (b"202", b"200"), server_pid=serve.pid)
            )
        finally:
            stop(serve)
        import psycopg

        with psycopg.connect(url) as conn:
            inbox = conn.execute("SELECT count(*) FROM provisioner_inbox").fetchone()
            queued = conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone()
            settings = conn.execute(
                "SELECT string_agg(name || '=' || setting, ', ') FROM pg_settings "
                "WHERE name IN ('fsync', 'synchronous_commit', 'server_version')"
            ).fetchone()
    finally:
        if embedded_pid_file and embedded_pid_file.exists():
            os.kill(int(embedded_pid_file.read_text().split()[0]), signal.SIGTERM)
            time.sleep(1)
        tmp.cleanup()

    print(
        f"\nclients={args.clients} seconds={args.seconds} kind={args.kind} log_level={args.log_level} "
        f"cores={os.cpu_count()}"
    )
    print(
        f"database: {settings[0] if settings else '?'}; inbox rows {inbox[0] if inbox else '?'}, "
        f"jobs {queued[0] if queued else '?'}"
    )
    print("| target | accepted/s | p50 ms | p99 ms | non-2xx |\n|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r.rate:,.0f} | {r.pct(0.5):.1f} | {r.pct(0.99):.1f} | {r.other} |")
    bare_rate = results["bare Starlette handler (no database)"].rate
    ours = results["provisioner serve --no-worker"]
    print(f"\nratio serve/bare: {ours.rate / bare_rate:.2f}")
    # Where the CPU goes: with every part on the same cores, the sum per request bounds the rate they allow.
    cores = os.cpu_count() or 1
    print(f"\n| target | server µs/req | PostgreSQL µs/req | client µs/req | total µs/req | bound, {cores} cores |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        per = r.cpu_us_per_request()
        if per:
            total = sum(per.values())
            print(
                f"| {name} | {per['server']:.0f} | {per['postgres']:.0f} | {per['client']:.0f} | {total:.0f} "
                f"| {cores * 1e6 / total:,.0f}/s |"
            )


if __name__ == "__main__":
    main()
