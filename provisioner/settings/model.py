"""``Settings``: every ``PROVISIONER_*`` setting, each declared once (name, type, default, unit, area, meaning).

``Settings.from_env()`` reads and validates them all at start, raising ``SettingsError`` naming the variable at
fault; the CLI turns that into one line on stderr and exit code 1. Adapters never see this object: entry points
pass plain values.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict

from provisioner.errors import InvalidName, SettingsError
from provisioner.logs import REDACTED, redact_text
from provisioner.names import BucketName
from provisioner.settings import kinds
from provisioner.settings.declare import PREFIX, setting, variables
from provisioner.settings.tenants import FAMILY, read_tenants

STORE_KINDS = ("aws-iam", "minio")
TOKENIZE_MODES = ("hmac", "base64")
LOG_FORMATS = ("auto", "human", "json")
#: The shortest HMAC key accepted unless PROVISIONER_TOKENIZE_ALLOW_SHORT_KEY: tokens of a short key can be
#: found by trying keys (and for an email column, values), which undoes the tokenization.
MIN_HMAC_KEY_BYTES = 32
#: Variables whose whole value is a secret: an error shows ``****`` in its place.
_SECRET_VAR = re.compile(r"(SECRET|PASSWORD|TOKEN|_KEY|_DSN)$")


def default_template() -> Path:
    """The template shipped inside the package (``provisioner/templates/sqlmesh``, package data of the wheel)."""
    return Path(__file__).resolve().parents[1] / "templates" / "sqlmesh"


def _products_dir(read: Mapping[str, Any]) -> Path:
    data_dir: Path = read["data_dir"]
    return data_dir / "products"


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one provisioner process (each field declares one ``PROVISIONER_*``)."""

    # ---------------------------------------------------------------------------------- process and database
    data_dir: Path = setting(
        Path(".provisioner"), kinds.PATH, "where embedded PostgreSQL and SeaweedFS keep data", area="process"
    )
    database_url: str | None = setting(
        None,
        kinds.POSTGRES_URL,
        "PostgreSQL URL; unset starts embedded PostgreSQL",
        area="process",
        shown="(embedded)",
    )
    # Production pods set it to false: a web pod that silently ran its own PostgreSQL would answer 202 for work that
    # no worker ever sees.
    allow_embedded: bool = setting(
        True,
        kinds.BOOL,
        "false: refuse to start without PROVISIONER_DATABASE_URL and PROVISIONER_S3_ENDPOINT (no embedded servers)",
        area="process",
    )
    database_auth: str = setting(
        "password",
        kinds.choice("password", "databricks-oauth"),
        "how the database URL logs in: its own password, or a fresh Lakebase OAuth token per new connection "
        "(databricks-sdk; workspace auth from DATABRICKS_*)",
        area="process",
    )
    database_lakebase: str | None = setting(
        None,
        kinds.NONBLANK,
        "with databricks-oauth: the Lakebase instance name, or its endpoint (projects/…/branches/…/endpoints/…)",
        area="process",
    )

    # ---------------------------------------------------------------------------------- web server and webhooks
    host: str = setting("0.0.0.0", kinds.TEXT, "address the web server binds", area="web")
    port: int = setting(8090, kinds.PORT, "port the web server binds", area="web")
    # Declared here, not with its area: from_env reads in declaration order and reports the first bad variable.
    log_level: str = setting(
        "INFO", kinds.choice("DEBUG", "INFO", "WARNING", "ERROR"), "lowest level of the logs", area="process"
    )
    log_format: str = setting(
        "auto",
        kinds.choice(*LOG_FORMATS),
        "logs as JSON lines or human-readable lines; auto = human on a terminal, JSON otherwise",
        area="process",
    )
    webhook_secret: str | None = setting(
        None,
        kinds.NONBLANK,
        "turns webhook auth on (v1 Sign, v2 URL token, Standard Webhooks)",
        area="web",
        secret=True,
    )
    webhook_token_max_age: int = setting(
        0, kinds.NON_NEGATIVE, "max age of a v2 URL token; 0 = no limit", area="web", unit="s"
    )
    webhook_tolerance_seconds: int = setting(
        300, kinds.POSITIVE, "Standard Webhooks timestamp tolerance", area="web", unit="s"
    )
    max_body_bytes: int = setting(
        1024 * 1024, kinds.POSITIVE, "largest webhook body accepted (413 above)", area="web", unit="bytes"
    )
    body_timeout_seconds: float = setting(
        10.0,
        kinds.POSITIVE_FLOAT,
        "a webhook body not received in full within this time gets 408",
        area="web",
        unit="s",
    )
    status_token: str | None = setting(
        None,
        kinds.BEARER_TOKEN,
        "bearer token /status/*, /metrics (and the worker's metrics) require",
        area="web",
        secret=True,
    )

    # ---------------------------------------------------------------------------------- portal
    portal_url: str = setting(
        "http://localhost:5050", kinds.BASE_URL, "base URL of the Data Product Portal API", area="portal"
    )
    portal_api_key: str | None = setting(
        None, kinds.NONBLANK, "sent as x-key when the portal has OIDC on", area="portal", secret=True
    )
    portal_timeout_seconds: float = setting(
        10.0, kinds.POSITIVE_FLOAT, "timeout of one portal API call", area="portal", unit="s"
    )
    portal_retries: int = setting(3, kinds.NON_NEGATIVE, "retries of a portal call on 5xx or timeout", area="portal")
    finalizer: str = setting(
        "provisioner", kinds.FINALIZER, "finalizer registered on provisioned products", area="portal"
    )

    # ---------------------------------------------------------------------------------- scope
    # Empty means "every product"; dimensions combine with AND, values within one with OR.
    scope_domains: tuple[str, ...] = setting(
        (), kinds.COMMA_LIST, "adopt only products of these domains (names or ids)", area="scope", shown="(all)"
    )
    scope_types: tuple[str, ...] = setting(
        (),
        kinds.COMMA_LIST,
        "adopt only products of these data product types (names or ids)",
        area="scope",
        shown="(all)",
    )
    scope_tags: tuple[str, ...] = setting(
        (), kinds.COMMA_LIST, "adopt only products carrying at least one of these tags", area="scope", shown="(all)"
    )
    scope_namespaces: tuple[str, ...] = setting(
        (),
        kinds.COMMA_LIST,
        "adopt only products whose namespace matches one of these globs",
        area="scope",
        shown="(all)",
    )

    # ---------------------------------------------------------------------------------- store
    store_kind: str = setting(
        "aws-iam",
        kinds.choice(*STORE_KINDS),
        "store admin API: aws-iam (AWS, SeaweedFS, moto) or minio (MinIO, RustFS)",
        area="store",
    )
    s3_endpoint: str | None = setting(
        None, kinds.URL, "S3 endpoint URL; unset starts embedded SeaweedFS", area="store", shown="(embedded)"
    )
    s3_public_endpoint: str | None = setting(
        None, kinds.URL, "endpoint written into project .env files", area="store", shown="(= S3_ENDPOINT)"
    )
    s3_region: str = setting("us-east-1", kinds.NONBLANK, "S3 region", area="store")
    s3_bucket: BucketName = setting(
        BucketName("data-products"), kinds.BUCKET, "bucket holding every product prefix", area="store"
    )
    s3_access_key: str | None = setting(
        None, kinds.NONBLANK, "store admin access key id", area="store", shown="(embedded admin)"
    )
    s3_secret_key: str | None = setting(
        None, kinds.NONBLANK, "store admin secret key", area="store", shown="(embedded admin)", secret=True
    )
    s3_embedded_port: int = setting(9000, kinds.PORT, "port of the embedded SeaweedFS S3 + IAM API", area="store")
    store_in_memory: bool = setting(
        False,
        kinds.BOOL,
        "without an endpoint, run moto's in-memory store instead of SeaweedFS: keys and data are LOST at exit "
        "(to try things out only)",
        area="store",
    )
    delete_data: bool = setting(False, kinds.BOOL, "delete a product's objects when it is deleted", area="store")

    # ---------------------------------------------------------------------------------- targets
    targets: tuple[str, ...] = setting(
        ("s3",),
        kinds.TARGETS,
        "where products are provisioned: s3, optionally with bigquery (docs/bigquery.md)",
        area="targets",
        shown="s3",
    )
    bigquery_project: str | None = setting(
        None, kinds.NONBLANK, "Google Cloud project holding the products' BigQuery datasets", area="targets"
    )
    bigquery_location: str = setting("US", kinds.NONBLANK, "location of new BigQuery datasets", area="targets")
    bigquery_dataset_prefix: str = setting(
        "dp", kinds.BIGQUERY_PREFIX, "dataset ids are <prefix>_<namespace as a SQL name>", area="targets"
    )
    bigquery_endpoint: str | None = setting(
        None,
        kinds.URL,
        "BigQuery API endpoint with anonymous credentials (an emulator); unset: Google's, with ADC",
        area="targets",
        shown="(Google, ADC)",
    )
    bigquery_principals: tuple[tuple[str, str], ...] = setting(
        (),
        kinds.PRINCIPALS,
        "the BigQuery principal of each product's team, by namespace (docs/bigquery.md)",
        area="targets",
        shown="(none)",
    )
    bigquery_scope_domains: tuple[str, ...] = setting(
        (), kinds.COMMA_LIST, "BigQuery only for products of these domains", area="targets", shown="(all)"
    )
    bigquery_scope_types: tuple[str, ...] = setting(
        (), kinds.COMMA_LIST, "BigQuery only for products of these types", area="targets", shown="(all)"
    )
    bigquery_scope_tags: tuple[str, ...] = setting(
        (), kinds.COMMA_LIST, "BigQuery only for products with one of these tags", area="targets", shown="(all)"
    )

    # ---------------------------------------------------------------------------------- projects
    products_dir: Path = setting(
        Path(".provisioner/products"),
        kinds.PATH,
        "where scaffolded projects are written",
        area="projects",
        shown="$DATA_DIR/products",
        derive=_products_dir,
    )
    template: Path = setting(
        default_template(),
        kinds.PATH,
        "cookiecutter template of a product project",
        area="projects",
        shown="(templates/sqlmesh shipped with the provisioner)",
    )

    # ---------------------------------------------------------------------------------- resync
    resync_seconds: int = setting(
        300, kinds.NON_NEGATIVE, "period of the resync against the portal; 0 = off", area="resync", unit="s"
    )
    verify_seconds: int = setting(
        3600,
        kinds.POSITIVE,
        "resync re-checks a converged product against the store this often",
        area="resync",
        unit="s",
    )
    orphan_grace_seconds: int | None = setting(
        86400,
        kinds.SECONDS_OR_OFF,
        "resync removes store users named dp-* that belong to no product after this long; off = only report them",
        area="resync",
        unit="s",
    )

    # ---------------------------------------------------------------------------------- jobs and workers
    worker_concurrency: int = setting(4, kinds.POSITIVE, "jobs one worker runs at once", area="jobs")
    worker_metrics_port: int | None = setting(
        None, kinds.PORT, "port where `provisioner worker` serves /metrics (job outcomes)", area="jobs"
    )
    worker_recover_seconds: float = setting(
        300.0,
        kinds.POSITIVE_FLOAT,
        "a worker that lost PostgreSQL retries this long, then exits 1",
        area="jobs",
        unit="s",
    )
    job_max_attempts: int = setting(8, kinds.POSITIVE, "attempts of a failing job before it is given up", area="jobs")

    # ---------------------------------------------------------------------------------- retention
    retention_days: int = setting(
        30,
        kinds.NON_NEGATIVE,
        "inbox rows, finished jobs and run records older than this are deleted; 0 = keep all",
        area="retention",
        unit="days",
    )
    retention_keep_runs: int = setting(
        20, kinds.POSITIVE, "run records always kept per subject, however old", area="retention"
    )

    # ---------------------------------------------------------------------------------- tokenization
    tokenize_key: str | None = setting(
        None,
        kinds.NONBLANK,
        "HMAC key of deterministic tokens (required in hmac mode)",
        area="tokenize",
        secret=True,
    )
    tokenize_allow_short_key: bool = setting(
        False,
        kinds.BOOL,
        f"accept an HMAC key shorter than {MIN_HMAC_KEY_BYTES} bytes (guessable tokens; tests and demos only)",
        area="tokenize",
    )
    tokenize_mode: str = setting(
        "hmac",
        kinds.choice(*TOKENIZE_MODES),
        "hmac (keyed, one-way) or base64 (reversible demo; no protection)",
        area="tokenize",
    )
    tokenize_prefix: str = setting("tok_", kinds.NONBLANK, "token prefix", area="tokenize")
    tokenize_suffix: str = setting("_poc", kinds.TEXT, "token suffix", area="tokenize")
    tokenize_policy: Path | None = setting(
        None, kinds.PATH, "YAML tokenization policy per output port (a readable file)", area="tokenize"
    )
    tokenize_max_columns: int = setting(50, kinds.POSITIVE, "most columns one run may rewrite", area="tokenize")
    tokenize_lock_timeout_ms: int = setting(
        5000, kinds.NON_NEGATIVE, "lock_timeout of a tokenization transaction", area="tokenize", unit="ms"
    )
    tokenize_statement_timeout_ms: int = setting(
        600000, kinds.NON_NEGATIVE, "statement_timeout of a tokenization transaction", area="tokenize", unit="ms"
    )
    tokenize_batch_pages: int = setting(
        256,
        kinds.NON_NEGATIVE,
        "pages per batch of a large table (helper connection); 0 = one UPDATE",
        area="tokenize",
        unit="pages",
    )
    tokenize_require_policy: bool = setting(
        True,
        kinds.BOOL,
        "grant a restricted output port only when the tokenization policy has an entry for it",
        area="tokenize",
    )

    # ---------------------------------------------------------------------------------- tenants
    #: tenant id (lower case) → field name (DSN, HOST, ...) → value, from PROVISIONER_TENANT_<ID>_<FIELD>
    #: (the fields are declared in ``provisioner.settings.tenants``).
    tenants: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``PROVISIONER_*`` variable; raise SettingsError on the first bad one."""
        env = os.environ if environ is None else environ
        read: dict[str, Any] = {}
        for var in variables(cls):
            raw = env.get(var.name)
            if raw is None or raw == "":
                derive = var.declared.derive
                read[var.attribute] = var.default if derive is None else derive(read)
                continue
            try:
                read[var.attribute] = var.declared.kind.parse(raw)
            except (ValueError, InvalidName) as exc:
                # The message goes to stderr and logs: never echo a secret (a DSN's password=, a key, a token).
                raise SettingsError(
                    f"{var.name}={shown_value(var.name, raw)} is invalid: {redact_text(str(exc))}"
                ) from None
        settings = cls(**read, tenants=read_tenants(env))
        if not settings.allow_embedded:
            embedded = {
                "PROVISIONER_DATABASE_URL": settings.embedded_database,
                "PROVISIONER_S3_ENDPOINT": settings.embedded_store,
            }
            missing = [name for name, unset in embedded.items() if unset]
            if missing:
                raise SettingsError(
                    f"{' and '.join(missing)} must be set: PROVISIONER_ALLOW_EMBEDDED=false refuses embedded servers "
                    "(a pod with its own PostgreSQL would accept webhooks that no worker ever sees)"
                )
        if (settings.s3_access_key is None) != (settings.s3_secret_key is None):
            raise SettingsError("PROVISIONER_S3_ACCESS_KEY and PROVISIONER_S3_SECRET_KEY must be set together")
        if settings.s3_endpoint and settings.s3_access_key is None:
            raise SettingsError(
                "PROVISIONER_S3_ACCESS_KEY is required when PROVISIONER_S3_ENDPOINT is set (the store admin's key)"
            )
        if settings.database_auth == "databricks-oauth":
            if settings.database_url is None or settings.database_lakebase is None:
                raise SettingsError(
                    "PROVISIONER_DATABASE_AUTH=databricks-oauth needs PROVISIONER_DATABASE_URL (the Lakebase host, "
                    "database and role, no password) and PROVISIONER_DATABASE_LAKEBASE (instance name or endpoint)"
                )
            if _has_password(settings.database_url):
                raise SettingsError(
                    "PROVISIONER_DATABASE_URL carries a password while PROVISIONER_DATABASE_AUTH=databricks-oauth: "
                    "remove it (each login gets a Lakebase token)"
                )
        elif settings.database_lakebase is not None:
            raise SettingsError("PROVISIONER_DATABASE_LAKEBASE is set: set PROVISIONER_DATABASE_AUTH=databricks-oauth")
        if "bigquery" in settings.targets and settings.bigquery_project is None:
            raise SettingsError("PROVISIONER_BIGQUERY_PROJECT is required when PROVISIONER_TARGETS includes bigquery")
        if settings.tokenize_policy is not None and not settings.tokenize_policy.is_file():
            raise SettingsError(f"PROVISIONER_TOKENIZE_POLICY={settings.tokenize_policy} is not a readable file")
        if not (settings.template / "cookiecutter.json").is_file():
            raise SettingsError(
                f"PROVISIONER_TEMPLATE={settings.template} is not a cookiecutter template (no cookiecutter.json in it)"
            )
        if settings.tokenize_key is not None and settings.tokenize_mode == "hmac":
            check_hmac_key(settings.tokenize_key, "PROVISIONER_TOKENIZE_KEY", settings.tokenize_allow_short_key)
        return settings

    @property
    def embedded_database(self) -> bool:
        """True when no database URL is set and the embedded PostgreSQL must be started."""
        return self.database_url is None

    @property
    def embedded_store(self) -> bool:
        """True when no S3 endpoint is set and the embedded SeaweedFS must be started."""
        return self.s3_endpoint is None


def _has_password(url: str) -> bool:
    try:
        return bool(conninfo_to_dict(url).get("password"))
    except psycopg.Error:  # not parseable: libpq says why at the first connection
        return False


def check_hmac_key(key: str, source: str, allow_short: bool) -> None:
    """Refuse an HMAC key shorter than MIN_HMAC_KEY_BYTES unless ``allow_short``; ``source`` names its origin."""
    if not allow_short and len(key.encode()) < MIN_HMAC_KEY_BYTES:
        raise SettingsError(
            f"{source} is {len(key.encode())} bytes: an HMAC key must be at least {MIN_HMAC_KEY_BYTES} bytes "
            "(make one with `openssl rand -base64 48`; PROVISIONER_TOKENIZE_ALLOW_SHORT_KEY=true accepts a short "
            "one for tests)"
        )


def unknown_variables(environ: Mapping[str, str] | None = None) -> list[str]:
    """One warning per ``PROVISIONER_*`` variable that no setting reads, naming the closest known one (a typo)."""
    env = os.environ if environ is None else environ
    known = [var.name for var in variables(Settings)]
    warnings = []
    for name in sorted(env):
        if not name.startswith(PREFIX) or name in known or name.startswith(FAMILY):
            continue
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"; did you mean {close[0]}?" if close else ""
        warnings.append(f"{name} is not a provisioner setting and is ignored{hint}")
    return warnings


def shown_value(var: str, raw: str) -> str:
    """``raw`` as an error message may show it: ``'****'`` for a secret variable, else with secrets masked."""
    if _SECRET_VAR.search(var):
        return repr(REDACTED)
    return repr(redact_text(raw))
