import psycopg

from provisioner import db


def test_migrations_apply_once_and_leave_nothing_pending(pg_empty_url: str) -> None:
    first = db.migrate(pg_empty_url)
    assert first[0] == db.PROCRASTINATE_MIGRATION
    assert "001_runs" in first
    assert db.migrate(pg_empty_url) == []
    with psycopg.connect(pg_empty_url) as conn:
        assert db.pending_migrations(conn) == []
        assert conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL").fetchone() == (True,)


def test_fresh_database_reports_pending(pg_empty_url: str) -> None:
    with psycopg.connect(pg_empty_url) as conn:
        assert db.PROCRASTINATE_MIGRATION in db.pending_migrations(conn)


def test_pg_url_fixture_is_migrated(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        assert db.pending_migrations(conn) == []
