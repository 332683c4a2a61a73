"""Every knob, read from ``PROVISIONER_*`` environment variables and validated once at start.

``Settings.from_env()`` raises ``SettingsError`` naming the variable at fault; the CLI turns that into
one line on stderr and exit code 1. Adapters never see this object: entry points pass plain values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from provisioner.errors import InvalidName, SettingsError
from provisioner.logs import REDACTED, redact_text
from provisioner.names import BucketName

PREFIX = "PROVISIONER_"
T = TypeVar("T")

STORE_KINDS = ("aws-iam", "minio")
TOKENIZE_MODES = ("hmac", "base64")
_TENANT_VAR = re.compile(r"PROVISIONER_TENANT_(?P<tenant>[A-Za-z0-9_]+?)_(?P<field>[A-Z_]+)$")
#: Variables whose whole value is a secret: an error shows ``****`` in its place.
_SECRET_VAR = re.compile(r"(SECRET|PASSWORD|TOKEN|_KEY|_DSN)$")
TENANT_FIELDS = frozenset(
    {"DSN", "HOST", "PORT", "DBNAME", "USER", "PASSWORD", "SSLMODE", "AUTH", "REGION", "COMMAND"}
    # Databricks SQL warehouses (KIND=databricks) and Lakebase OAuth (AUTH=databricks-oauth)
    | {"KIND", "HTTP_PATH", "CATALOG", "TOKEN", "CLIENT_ID", "CLIENT_SECRET", "SECRET_SCOPE", "SECRET_KEY", "HMAC"}
    | {"INSTANCE", "ENDPOINT", "WORKSPACE"}
)

#: name → (default shown in docs, meaning). README's configuration table is checked against this.
DOCUMENTED: dict[str, tuple[str, str]] = {
    "PROVISIONER_DATA_DIR": ("./.provisioner", "where embedded PostgreSQL and SeaweedFS keep data"),
    "PROVISIONER_DATABASE_URL": ("(embedded)", "PostgreSQL URL; unset starts embedded PostgreSQL"),
    "PROVISIONER_HOST": ("0.0.0.0", "address the web server binds"),
    "PROVISIONER_PORT": ("8090", "port the web server binds"),
    "PROVISIONER_LOG_LEVEL": ("INFO", "DEBUG, INFO, WARNING or ERROR"),
    "PROVISIONER_WEBHOOK_SECRET": ("(unset)", "turns webhook auth on (v1 Sign, v2 URL token, Standard Webhooks)"),
    "PROVISIONER_WEBHOOK_TOKEN_MAX_AGE": ("0", "max age in seconds of a v2 URL token; 0 = no limit"),
    "PROVISIONER_WEBHOOK_TOLERANCE_SECONDS": ("300", "Standard Webhooks timestamp tolerance"),
    "PROVISIONER_MAX_BODY_BYTES": ("1048576", "largest webhook body accepted (413 above)"),
    "PROVISIONER_BODY_TIMEOUT_SECONDS": ("10", "a webhook body not received in full within this time gets 408"),
    "PROVISIONER_STATUS_TOKEN": ("(unset)", "bearer token /status/*, /metrics (and the worker's metrics) require"),
    "PROVISIONER_PORTAL_URL": ("http://localhost:5050", "base URL of the Data Product Portal API"),
    "PROVISIONER_PORTAL_API_KEY": ("(unset)", "sent as x-key when the portal has OIDC on"),
    "PROVISIONER_PORTAL_TIMEOUT_SECONDS": ("10", "timeout of one portal API call"),
    "PROVISIONER_PORTAL_RETRIES": ("3", "retries of a portal call on 5xx or timeout"),
    "PROVISIONER_FINALIZER": ("provisioner", "finalizer registered on provisioned products"),
    "PROVISIONER_SCOPE_DOMAINS": ("(all)", "adopt only products of these domains (names or ids, comma list)"),
    "PROVISIONER_SCOPE_TYPES": ("(all)", "adopt only products of these data product types (names or ids, comma list)"),
    "PROVISIONER_SCOPE_TAGS": ("(all)", "adopt only products carrying at least one of these tags (comma list)"),
    "PROVISIONER_SCOPE_NAMESPACES": ("(all)", "adopt only products whose namespace matches one of these globs"),
    "PROVISIONER_STORE_KIND": ("aws-iam", "store admin API: aws-iam (AWS, SeaweedFS, moto) or minio (MinIO, RustFS)"),
    "PROVISIONER_S3_ENDPOINT": ("(embedded)", "S3 endpoint URL; unset starts embedded SeaweedFS"),
    "PROVISIONER_S3_PUBLIC_ENDPOINT": ("(= S3_ENDPOINT)", "endpoint written into project .env files"),
    "PROVISIONER_S3_REGION": ("us-east-1", "S3 region"),
    "PROVISIONER_S3_BUCKET": ("data-products", "bucket holding every product prefix"),
    "PROVISIONER_S3_ACCESS_KEY": ("(embedded admin)", "store admin access key id"),
    "PROVISIONER_S3_SECRET_KEY": ("(embedded admin)", "store admin secret key"),
    "PROVISIONER_S3_EMBEDDED_PORT": ("9000", "port of the embedded SeaweedFS S3 + IAM API"),
    "PROVISIONER_DELETE_DATA": ("false", "delete a product's objects when it is deleted"),
    "PROVISIONER_PRODUCTS_DIR": ("$DATA_DIR/products", "where scaffolded projects are written"),
    "PROVISIONER_TEMPLATE": ("templates/sqlmesh", "cookiecutter template of a product project"),
    "PROVISIONER_RESYNC_SECONDS": ("300", "period of the resync against the portal; 0 = off"),
    "PROVISIONER_VERIFY_SECONDS": ("3600", "resync re-checks a converged product against the store this often"),
    "PROVISIONER_ORPHAN_GRACE_SECONDS": (
        "86400",
        "resync removes store users named dp-* that belong to no product after this long; off = only report them",
    ),
    "PROVISIONER_WORKER_CONCURRENCY": ("4", "jobs one worker runs at once"),
    "PROVISIONER_WORKER_METRICS_PORT": ("(unset)", "port where `provisioner worker` serves /metrics (job outcomes)"),
    "PROVISIONER_WORKER_RECOVER_SECONDS": ("300", "a worker that lost PostgreSQL retries this long, then exits 1"),
    "PROVISIONER_JOB_MAX_ATTEMPTS": ("8", "attempts of a failing job before it is given up"),
    "PROVISIONER_RETENTION_DAYS": ("30", "inbox, finished jobs and runs older than this are deleted; 0 = keep all"),
    "PROVISIONER_RETENTION_KEEP_RUNS": ("20", "run records always kept per subject, however old"),
    "PROVISIONER_TOKENIZE_KEY": ("(unset)", "HMAC key of deterministic tokens (required in hmac mode)"),
    "PROVISIONER_TOKENIZE_MODE": ("hmac", "hmac (keyed, one-way) or base64 (reversible demo; no protection)"),
    "PROVISIONER_TOKENIZE_PREFIX": ("tok_", "token prefix"),
    "PROVISIONER_TOKENIZE_SUFFIX": ("_poc", "token suffix"),
    "PROVISIONER_TOKENIZE_POLICY": ("(unset)", "YAML tokenization policy per output port"),
    "PROVISIONER_TOKENIZE_MAX_COLUMNS": ("50", "most columns one run may rewrite"),
    "PROVISIONER_TOKENIZE_LOCK_TIMEOUT_MS": ("5000", "lock_timeout of a tokenization transaction"),
    "PROVISIONER_TOKENIZE_STATEMENT_TIMEOUT_MS": ("600000", "statement_timeout of a tokenization transaction"),
    "PROVISIONER_TOKENIZE_BATCH_PAGES": ("256", "pages per batch of a large table (helper connection); 0 = one UPDATE"),
    "PROVISIONER_TOKENIZE_REQUIRE_POLICY": (
        "true",
        "grant a restricted output port only when the tokenization policy has an entry for it",
    ),
    "PROVISIONER_TENANT_<ID>_DSN": ("(unset)", "tenant ID connection (or _HOST, _PORT, _DBNAME, _USER, _PASSWORD)"),
    "PROVISIONER_TENANT_<ID>_AUTH": (
        "password",
        "password, rds-iam (+ _REGION), command (+ _COMMAND), databricks-oauth (+ _INSTANCE or _ENDPOINT); "
        "databricks tenants: sdk, token (+ _TOKEN) or oauth-m2m (+ _CLIENT_ID, _CLIENT_SECRET)",
    ),
    "PROVISIONER_TENANT_<ID>_KIND": (
        "postgres",
        "postgres, or databricks: a SQL warehouse (_HOST, _HTTP_PATH, _CATALOG; key in _SECRET_SCOPE/_SECRET_KEY)",
    ),
}


@dataclass(frozen=True)
class Settings:
    """The validated configuration of one provisioner process."""

    data_dir: Path = Path(".provisioner")
    database_url: str | None = None
    host: str = "0.0.0.0"
    port: int = 8090
    log_level: str = "INFO"
    webhook_secret: str | None = field(default=None, repr=False)
    webhook_token_max_age: int = 0
    webhook_tolerance_seconds: int = 300
    max_body_bytes: int = 1024 * 1024
    body_timeout_seconds: float = 10.0
    status_token: str | None = field(default=None, repr=False)
    portal_url: str = "http://localhost:5050"
    portal_api_key: str | None = field(default=None, repr=False)
    portal_timeout_seconds: float = 10.0
    portal_retries: int = 3
    finalizer: str = "provisioner"
    #: The scope selector: empty means "every product"; dimensions combine with AND, values within one with OR.
    scope_domains: tuple[str, ...] = ()
    scope_types: tuple[str, ...] = ()
    scope_tags: tuple[str, ...] = ()
    scope_namespaces: tuple[str, ...] = ()
    store_kind: str = "aws-iam"
    s3_endpoint: str | None = None
    s3_public_endpoint: str | None = None
    s3_region: str = "us-east-1"
    s3_bucket: BucketName = BucketName("data-products")
    s3_access_key: str | None = None
    s3_secret_key: str | None = field(default=None, repr=False)
    s3_embedded_port: int = 9000
    delete_data: bool = False
    products_dir: Path = Path(".provisioner/products")
    template: Path = Path("templates/sqlmesh")
    resync_seconds: int = 300
    verify_seconds: int = 3600
    orphan_grace_seconds: int | None = 86400  # None: orphan store users are reported, never removed
    worker_concurrency: int = 4
    worker_metrics_port: int | None = None
    worker_recover_seconds: float = 300.0
    job_max_attempts: int = 8
    retention_days: int = 30
    retention_keep_runs: int = 20
    tokenize_key: str | None = field(default=None, repr=False)
    tokenize_mode: str = "hmac"
    tokenize_prefix: str = "tok_"
    tokenize_suffix: str = "_poc"
    tokenize_policy: Path | None = None
    tokenize_max_columns: int = 50
    tokenize_lock_timeout_ms: int = 5000
    tokenize_statement_timeout_ms: int = 600000
    tokenize_batch_pages: int = 256
    tokenize_require_policy: bool = True
    #: tenant id (lower case) → field name (DSN, HOST, ...) → value, from PROVISIONER_TENANT_<ID>_<FIELD>
    tenants: Mapping[str, Mapping[str, str]] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read and validate every ``PROVISIONER_*`` variable; raise SettingsError on the first bad one."""
        env = os.environ if environ is None else environ
        r = _Reader(env)
        data_dir = r.get("DATA_DIR", Path, Path(".provisioner"))
        settings = cls(
            data_dir=data_dir,
            database_url=r.get("DATABASE_URL", _url, None),
            host=r.get("HOST", str, cls.host),
            port=r.get("PORT", _port, cls.port),
            log_level=r.get("LOG_LEVEL", _choice("DEBUG", "INFO", "WARNING", "ERROR"), "INFO"),
            webhook_secret=r.get("WEBHOOK_SECRET", _nonempty, None),
            webhook_token_max_age=r.get("WEBHOOK_TOKEN_MAX_AGE", _non_negative, 0),
            webhook_tolerance_seconds=r.get("WEBHOOK_TOLERANCE_SECONDS", _positive, 300),
            max_body_bytes=r.get("MAX_BODY_BYTES", _positive, 1024 * 1024),
            body_timeout_seconds=r.get("BODY_TIMEOUT_SECONDS", _positive_float, 10.0),
            status_token=r.get("STATUS_TOKEN", _bearer_token, None),
            portal_url=r.get("PORTAL_URL", _url, cls.portal_url).rstrip("/"),
            portal_api_key=r.get("PORTAL_API_KEY", _nonempty, None),
            portal_timeout_seconds=r.get("PORTAL_TIMEOUT_SECONDS", _positive_float, 10.0),
            portal_retries=r.get("PORTAL_RETRIES", _non_negative, 3),
            finalizer=r.get("FINALIZER", _finalizer, "provisioner"),
            scope_domains=r.get("SCOPE_DOMAINS", _comma_list, ()),
            scope_types=r.get("SCOPE_TYPES", _comma_list, ()),
            scope_tags=r.get("SCOPE_TAGS", _comma_list, ()),
            scope_namespaces=r.get("SCOPE_NAMESPACES", _comma_list, ()),
            store_kind=r.get("STORE_KIND", _choice(*STORE_KINDS), "aws-iam"),
            s3_endpoint=r.get("S3_ENDPOINT", _url, None),
            s3_public_endpoint=r.get("S3_PUBLIC_ENDPOINT", _url, None),
            s3_region=r.get("S3_REGION", _nonempty, "us-east-1"),
            s3_bucket=r.get("S3_BUCKET", BucketName, BucketName("data-products")),
            s3_access_key=r.get("S3_ACCESS_KEY", _nonempty, None),
            s3_secret_key=r.get("S3_SECRET_KEY", _nonempty, None),
            s3_embedded_port=r.get("S3_EMBEDDED_PORT", _port, 9000),
            delete_data=r.get("DELETE_DATA", _bool, False),
            products_dir=r.get("PRODUCTS_DIR", Path, data_dir / "products"),
            template=r.get("TEMPLATE", Path, default_template()),
            resync_seconds=r.get("RESYNC_SECONDS", _non_negative, 300),
            verify_seconds=r.get("VERIFY_SECONDS", _positive, 3600),
            orphan_grace_seconds=r.get("ORPHAN_GRACE_SECONDS", _seconds_or_off, 86400),
            worker_concurrency=r.get("WORKER_CONCURRENCY", _positive, 4),
            worker_metrics_port=r.get("WORKER_METRICS_PORT", _port, None),
            worker_recover_seconds=r.get("WORKER_RECOVER_SECONDS", _positive_float, 300.0),
            job_max_attempts=r.get("JOB_MAX_ATTEMPTS", _positive, 8),
            retention_days=r.get("RETENTION_DAYS", _non_negative, 30),
            retention_keep_runs=r.get("RETENTION_KEEP_RUNS", _positive, 20),
            tokenize_key=r.get("TOKENIZE_KEY", _nonempty, None),
            tokenize_mode=r.get("TOKENIZE_MODE", _choice(*TOKENIZE_MODES), "hmac"),
            tokenize_prefix=r.get("TOKENIZE_PREFIX", _nonempty, "tok_"),
            tokenize_suffix=r.get("TOKENIZE_SUFFIX", str, "_poc"),
            tokenize_policy=r.get("TOKENIZE_POLICY", Path, None),
            tokenize_max_columns=r.get("TOKENIZE_MAX_COLUMNS", _positive, 50),
            tokenize_lock_timeout_ms=r.get("TOKENIZE_LOCK_TIMEOUT_MS", _non_negative, 5000),
            tokenize_statement_timeout_ms=r.get("TOKENIZE_STATEMENT_TIMEOUT_MS", _non_negative, 600000),
            tokenize_batch_pages=r.get("TOKENIZE_BATCH_PAGES", _non_negative, 256),
            tokenize_require_policy=r.get("TOKENIZE_REQUIRE_POLICY", _bool, True),
            tenants=_tenants(env),
        )
        if (settings.s3_access_key is None) != (settings.s3_secret_key is None):
            raise SettingsError("PROVISIONER_S3_ACCESS_KEY and PROVISIONER_S3_SECRET_KEY must be set together")
        if settings.s3_endpoint and settings.s3_access_key is None:
            raise SettingsError(
                "PROVISIONER_S3_ACCESS_KEY is required when PROVISIONER_S3_ENDPOINT is set (the store admin's key)"
            )
        if settings.tokenize_policy is not None and not settings.tokenize_policy.is_file():
            raise SettingsError(f"PROVISIONER_TOKENIZE_POLICY={settings.tokenize_policy} is not a readable file")
        return settings

    @property
    def embedded_database(self) -> bool:
        """True when no database URL is set and the embedded PostgreSQL must be started."""
        return self.database_url is None

    @property
    def embedded_store(self) -> bool:
        """True when no S3 endpoint is set and the embedded SeaweedFS must be started."""
        return self.s3_endpoint is None


def default_template() -> Path:
    """The template shipped in this repository (``templates/sqlmesh`` beside the package)."""
    return Path(__file__).resolve().parent.parent / "templates" / "sqlmesh"


class _Reader:
    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str, parse: Callable[[str], T], default: T) -> T:
        var = PREFIX + name
        raw = self.env.get(var)
        if raw is None or raw == "":
            return default
        try:
            return parse(raw)
        except (ValueError, InvalidName) as exc:
            # The message goes to stderr and logs: never echo a secret (a DSN's password=, a key, a token).
            raise SettingsError(f"{var}={shown_value(var, raw)} is invalid: {redact_text(str(exc))}") from None


def shown_value(var: str, raw: str) -> str:
    """``raw`` as an error message may show it: ``'****'`` for a secret variable, else with secrets masked."""
    if _SECRET_VAR.search(var):
        return repr(REDACTED)
    return repr(redact_text(raw))


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be blank")
    return raw


def _url(raw: str) -> str:
    if "://" not in raw:
        raise ValueError("expected a URL such as http://host:port")
    return raw


def _port(raw: str) -> int:
    value = int(raw)
    if not 0 < value < 65536:
        raise ValueError("expected a port between 1 and 65535")
    return value


def _positive(raw: str) -> int:
    value = int(raw)
    if value <= 0:
        raise ValueError("expected a whole number above 0")
    return value


def _non_negative(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("expected a whole number of 0 or more")
    return value


def _positive_float(raw: str) -> float:
    value = float(raw)
    if value <= 0:
        raise ValueError("expected a number above 0")
    return value


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ValueError("expected true or false")


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip()
        folded = {o.lower(): o for o in options}
        if value.lower() not in folded:
            raise ValueError(f"expected one of {', '.join(options)}")
        return folded[value.lower()]

    return parse


def _seconds_or_off(raw: str) -> int | None:
    if raw.strip().lower() == "off":
        return None
    value = int(raw)
    if value < 0:
        raise ValueError("expected a whole number of seconds (0 or more) or off")
    return value


def _comma_list(raw: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in raw.split(",") if v.strip())
    if not values:
        raise ValueError("expected a comma-separated list with at least one value (unset it to mean all)")
    return values


def _bearer_token(raw: str) -> str:
    if len(raw) < 16 or not raw.isascii() or not raw.isprintable() or " " in raw:
        raise ValueError("expected at least 16 printable ASCII characters without spaces (e.g. `openssl rand -hex 32`)")
    return raw


def _finalizer(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}", raw):
        raise ValueError("expected 1 to 63 characters from letters, digits, '.', '_', '-', '/'")
    return raw


def _tenants(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    tenants: dict[str, dict[str, str]] = {}
    for var, value in env.items():
        match = _TENANT_VAR.fullmatch(var)
        if not match:
            continue
        tenant, fld = match["tenant"], match["field"]
        # Ids may contain '_' (PROVISIONER_TENANT_SALES_EU_DSN): take the longest known field suffix.
        for known in sorted(TENANT_FIELDS, key=len, reverse=True):
            if var.endswith("_" + known):
                tenant = var[len("PROVISIONER_TENANT_") : -len(known) - 1]
                fld = known
                break
        else:
            raise SettingsError(
                f"{var} is not a known tenant setting: use one of "
                + ", ".join(f"PROVISIONER_TENANT_<ID>_{f}" for f in sorted(TENANT_FIELDS))
            )
        tenants.setdefault(tenant.lower(), {})[fld] = value
    return tenants
