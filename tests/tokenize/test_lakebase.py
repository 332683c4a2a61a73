"""Lakebase OAuth credentials: the real databricks-sdk against a loopback stand-in rotating a real role's password."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from provisioner.testing.lakebase import LakebaseStandIn
from provisioner.tokenize.errors import TenantError
from provisioner.tokenize.lakebase import DatabricksOAuth, Passfile
from provisioner.tokenize.tenants import TenantConnector

pytestmark = pytest.mark.databricks

ROLE = "provisioner_lakebase_login"


class Clock:
    """The provider's notion of now (the stand-in's tokens carry real expiry times)."""

    def __init__(self) -> None:
        import time

        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def login_role(pg_server_url: str) -> str:
    """A role whose logins need a password (the test server trusts everyone else)."""
    params = conninfo_to_dict(pg_server_url)
    with psycopg.connect(pg_server_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (ROLE,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(ROLE)))
        hba = Path(str(conn.execute("SHOW hba_file").fetchone()[0]))  # type: ignore[index]
        rule = f"local all {ROLE} scram-sha-256\nhost all {ROLE} 127.0.0.1/32 scram-sha-256\n"
        if rule not in hba.read_text():
            hba.write_text(rule + hba.read_text())
        conn.execute("SELECT pg_reload_conf()")
    # The postmaster reloads pg_hba.conf when it gets the signal: wait until a wrong password is refused.
    for _ in range(200):
        try:
            psycopg.connect(_login_url(pg_server_url, "wrong"), connect_timeout=5).close()
        except psycopg.OperationalError:
            break
    else:
        pytest.fail("pg_hba.conf was not reloaded")
    assert params  # the server URL parsed
    return ROLE


def _login_url(server_url: str, password: str) -> str:
    params = {**conninfo_to_dict(server_url), "user": ROLE, "password": password}
    return psycopg.conninfo.make_conninfo(**params)


@pytest.fixture
def standin(pg_server_url: str, login_role: str) -> Iterator[LakebaseStandIn]:
    with LakebaseStandIn(pg_server_url, login_role, instance=f"inst-{uuid.uuid4().hex[:6]}") as s:
        yield s


def connector(pg_server_url: str, provider: DatabricksOAuth) -> TenantConnector:
    params = {**conninfo_to_dict(pg_server_url), "user": ROLE, "sslmode": "disable"}
    params.pop("password", None)
    return TenantConnector("lakebase", params, provider)


def provider(standin: LakebaseStandIn, clock: Clock, *, endpoint: bool = False) -> DatabricksOAuth:
    target = {"endpoint": standin.endpoint} if endpoint else {"instance": standin.instance}
    return DatabricksOAuth(**target, host=standin.url, token=standin.pat, clock=clock)  # type: ignore[arg-type]


def whoami(conn: psycopg.Connection) -> Any:
    row = conn.execute("SELECT current_user").fetchone()
    return row[0] if row else None


@pytest.mark.parametrize("endpoint", [False, True], ids=["instance-api", "endpoint-api"])
def test_open_connection_survives_rotation_and_a_new_login_uses_the_new_token(
    pg_server_url: str, standin: LakebaseStandIn, endpoint: bool
) -> None:
    clock = Clock()
    oauth = provider(standin, clock, endpoint=endpoint)
    tenant = connector(pg_server_url, oauth)
    first = tenant.connect()
    assert whoami(first) == ROLE and standin.issued == 1
    first_token = oauth(first.info.get_parameters())  # cached: no new credential
    assert standin.issued == 1

    # Close to the token's expiry, the next connection gets a new token: the role's password rotates.
    expiry = oauth.expires_at()
    assert expiry is not None and expiry > clock.now + 3000
    clock.now = expiry - oauth.refresh_margin_s + 1
    second = tenant.connect()
    assert standin.issued == 2 and whoami(second) == ROLE
    assert whoami(first) == ROLE  # the open connection outlives its token
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(_login_url(pg_server_url, first_token), connect_timeout=5)  # the old token is gone
    first.close()
    second.close()


def test_an_expired_token_triggers_a_refresh(pg_server_url: str, standin: LakebaseStandIn) -> None:
    oauth = provider(standin, Clock())
    tenant = connector(pg_server_url, oauth)
    tenant.connect().close()
    standin.expire()  # the server no longer accepts it, although the provider believes it valid
    with tenant.connect() as conn:  # refused once, then a new token
        assert whoami(conn) == ROLE
    assert standin.issued == 2


def test_tokens_are_never_logged_nor_in_errors(
    pg_server_url: str, standin: LakebaseStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    oauth = provider(standin, Clock())
    with caplog.at_level(logging.DEBUG):
        tenant = connector(pg_server_url, oauth)
        tenant.connect().close()
        token = oauth({})
        assert token not in caplog.text and token not in tenant.redacted and token not in repr(oauth)
        bad = DatabricksOAuth(instance=standin.instance, host=standin.url, token="dapi-wrong")
        with pytest.raises(TenantError, match="HTTP 401") as refused:
            bad({})
        assert "dapi-wrong" not in str(refused.value) and standin.pat not in caplog.text
        missing = DatabricksOAuth(instance="nope", host=standin.url, token=standin.pat)
        with pytest.raises(TenantError, match="instance nope"):
            missing({})


def test_databricks_oauth_fields() -> None:
    fields = {
        "HOST": "instance-1.database.cloud.databricks.com",
        "USER": "me@example.com",
        "DBNAME": "databricks_postgres",
        "AUTH": "databricks-oauth",
        "INSTANCE": "inst",
        "WORKSPACE": "https://adb-1.azuredatabricks.net",
    }
    tenant = TenantConnector.from_fields("lb", fields)
    assert tenant.params["sslmode"] == "require"
    assert isinstance(tenant.credentials, DatabricksOAuth) and tenant.credentials.instance == "inst"
    assert TenantConnector.from_fields("lb", {**fields, "SSLMODE": "verify-full"}).params["sslmode"] == "verify-full"
    with pytest.raises(TenantError, match="_INSTANCE or"):
        TenantConnector.from_fields("lb", {**fields, "INSTANCE": ""})
    with pytest.raises(TenantError, match="exactly one"):
        TenantConnector.from_fields("lb", {**fields, "ENDPOINT": "projects/p/branches/b/endpoints/e"})


def test_a_passfile_serves_connections_opened_elsewhere(
    pg_server_url: str, standin: LakebaseStandIn, tmp_path: Path
) -> None:
    # PROVISIONER_DATABASE_URL's connections (pool, jobs, web) carry no password: libpq reads it from the file.
    clock = Clock()
    oauth = provider(standin, clock)
    url = psycopg.conninfo.make_conninfo(pg_server_url, user=ROLE, password="")
    url = psycopg.conninfo.make_conninfo(**{k: v for k, v in conninfo_to_dict(url).items() if k != "password"})
    passfile = Passfile(url, oauth, tmp_path / "pgpass")
    passfile.refresh()
    assert (tmp_path / "pgpass").stat().st_mode & 0o777 == 0o600
    with psycopg.connect(url, passfile=str(tmp_path / "pgpass")) as first:
        assert whoami(first) == ROLE
        expiry = oauth.expires_at()
        assert expiry is not None
        clock.now = expiry - oauth.refresh_margin_s + 1
        passfile.refresh()  # what the refresher thread does before expiry: the password rotates
        assert standin.issued == 2
        with psycopg.connect(url, passfile=str(tmp_path / "pgpass")) as second:
            assert whoami(second) == ROLE and whoami(first) == ROLE


@pytest.fixture
def lakebase_database(pg_server_url: str, login_role: str) -> Iterator[str]:
    """A fresh database the login role owns (the provisioner migrates it as that role); its URL has no password."""
    name = f"lakebase_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(ROLE)))
    params = conninfo_to_dict(pg_server_url)
    query = urlencode({"host": params.get("host") or "localhost", "port": params.get("port") or 5432})
    yield f"postgresql://{ROLE}@/{name}?{query}&sslmode=disable"
    with psycopg.connect(pg_server_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_the_provisioners_own_database_on_lakebase(
    pg_server_url: str, lakebase_database: str, login_role: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tokens live 302 s and are replaced 300 s before expiry: the site's refresher rotates one within seconds.
    from provisioner.settings import Settings
    from provisioner.site import Site

    monkeypatch.setattr("provisioner.tokenize.lakebase.PROBE_SECONDS", 1.0)  # check the login every second
    with LakebaseStandIn(pg_server_url, login_role, instance=f"inst-{uuid.uuid4().hex[:6]}", lifetime_s=302) as s:
        monkeypatch.setenv("DATABRICKS_HOST", s.url)  # databricks-sdk's own authentication
        monkeypatch.setenv("DATABRICKS_TOKEN", s.pat)
        settings = Settings.from_env(
            {
                "PROVISIONER_DATABASE_URL": lakebase_database,
                "PROVISIONER_DATABASE_AUTH": "databricks-oauth",
                "PROVISIONER_DATABASE_LAKEBASE": s.instance,
            }
        )
        with Site.open(settings, reconcile=False) as site:
            assert "password" not in conninfo_to_dict(site.database_url)
            with site.pool.connection() as conn:  # migrated and reached as the role, with the instance's token
                assert whoami(conn) == ROLE
                row = conn.execute("SELECT count(*) FROM provisioner_migrations").fetchone()
                assert row is not None and row[0] > 0
                issued = s.issued
                assert issued >= 1
                # The refresher fetches a new token before the old one expires: the role's password rotates.
                deadline = time.monotonic() + 30
                while s.issued == issued:
                    assert time.monotonic() < deadline, "the token was not refreshed before its expiry"
                    time.sleep(0.05)
                assert whoami(conn) == ROLE  # the open connection outlives its token
                with psycopg.connect(site.database_url) as fresh:  # a new login uses the new token
                    assert whoami(fresh) == ROLE
                # A token refused before its time (here: expired now) is replaced by the refresher's next check.
                s.expire()
                deadline = time.monotonic() + 30
                while True:
                    try:
                        psycopg.connect(site.database_url, connect_timeout=5).close()
                        break
                    except psycopg.OperationalError:
                        assert time.monotonic() < deadline, "the refused token was not replaced"
                        time.sleep(0.1)
                assert whoami(conn) == ROLE
            # `provisioner check` probes the database with the same login.
            from provisioner.cli.check import _database

            assert _database(settings)
        with pytest.raises(psycopg.OperationalError):  # without the file, the URL alone cannot log in
            psycopg.connect(lakebase_database, connect_timeout=5, passfile="/nonexistent").close()


def test_a_passfile_replaces_a_token_refused_before_its_time(
    pg_server_url: str, standin: LakebaseStandIn, tmp_path: Path
) -> None:
    oauth = provider(standin, Clock())
    url = psycopg.conninfo.make_conninfo(pg_server_url, user=ROLE, passfile=str(tmp_path / "pgpass"))
    url = psycopg.conninfo.make_conninfo(**{k: v for k, v in conninfo_to_dict(url).items() if k != "password"})
    passfile = Passfile(url, oauth, tmp_path / "pgpass")
    passfile.refresh()
    assert passfile.check() is False and standin.issued == 1  # the token logs in: nothing to do
    standin.expire()  # the server refuses it now, although it announced an hour
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(url, connect_timeout=5).close()
    assert passfile.check() is True and standin.issued == 2
    with psycopg.connect(url, connect_timeout=5) as conn:
        assert whoami(conn) == ROLE


def test_database_auth_settings_are_checked() -> None:
    from provisioner.errors import SettingsError
    from provisioner.settings import Settings

    url = "postgresql://me@lakebase.example.com/databricks_postgres"
    with pytest.raises(SettingsError, match="PROVISIONER_DATABASE_LAKEBASE"):
        Settings.from_env({"PROVISIONER_DATABASE_URL": url, "PROVISIONER_DATABASE_AUTH": "databricks-oauth"})
    with pytest.raises(SettingsError, match="carries a password") as refused:
        Settings.from_env(
            {
                "PROVISIONER_DATABASE_URL": "postgresql://me:s3cret@lakebase.example.com/db",
                "PROVISIONER_DATABASE_AUTH": "databricks-oauth",
                "PROVISIONER_DATABASE_LAKEBASE": "inst",
            }
        )
    assert "s3cret" not in str(refused.value)
    with pytest.raises(SettingsError, match="PROVISIONER_DATABASE_AUTH=databricks-oauth"):
        Settings.from_env({"PROVISIONER_DATABASE_URL": url, "PROVISIONER_DATABASE_LAKEBASE": "inst"})
