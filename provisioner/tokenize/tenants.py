"""Tenant connections: each tenant has its own database, role and credential provider.

A run connects as its tenant's role only, so it holds exactly that tenant's privileges. Fields come from
``PROVISIONER_TENANT_<ID>_<FIELD>`` (parsed by the settings into a mapping; this module takes the mapping):

* ``DSN`` (a URL or ``key=value`` string), or ``HOST``, ``PORT``, ``DBNAME``, ``USER``, ``PASSWORD``, ``SSLMODE``;
* ``AUTH``: ``password`` (static, the default), ``rds-iam`` (a 15-minute AWS RDS IAM token from boto3's
  ``generate_db_auth_token``; ``REGION`` optional) or ``command`` (``COMMAND`` prints a short-lived password or
  OAuth access token on stdout, run for every connection) or ``databricks-oauth`` (a Lakebase OAuth token from
  databricks-sdk, ``INSTANCE`` or ``ENDPOINT``, refreshed before expiry; ``sslmode=require`` by default);
* ``KIND``: ``postgres`` (the default) or ``databricks`` (a SQL warehouse: see ``databricks_tenants``).

Any other provider is a callable returning the password, passed to ``TenantConnector``.
"""

from __future__ import annotations

import shlex
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from provisioner.logs import redact_text
from provisioner.tokenize.errors import TenantError, TenantUnavailable

AUTH_KINDS = ("password", "rds-iam", "command", "databricks-oauth")
TENANT_KINDS = ("postgres", "databricks")
_CONNECT_TIMEOUT = 10


class CredentialProvider(Protocol):
    """Returns the password for the next connection (None: rely on the DSN, ~/.pgpass or a client cert)."""

    def __call__(self, params: Mapping[str, Any]) -> str | None: ...


@dataclass(frozen=True)
class StaticPassword:
    """A fixed password (or none)."""

    password: str | None = field(default=None, repr=False)

    def __call__(self, params: Mapping[str, Any]) -> str | None:
        return self.password


@dataclass(frozen=True)
class RdsIamToken:
    """An AWS RDS IAM authentication token, fresh for every connection (needs sslmode=require or stricter)."""

    region: str | None = None

    def __call__(self, params: Mapping[str, Any]) -> str | None:
        import boto3  # only tenants on RDS need it

        host, user = params.get("host"), params.get("user")
        if not host or not user:
            raise TenantError("rds-iam authentication needs a host and a user in the tenant's settings")
        try:
            client = boto3.client("rds", region_name=self.region)
            return str(
                client.generate_db_auth_token(
                    DBHostname=host, Port=int(params.get("port") or 5432), DBUsername=user, Region=self.region
                )
            )
        except Exception as exc:  # botocore raises many unrelated types (no credentials, no region)
            raise TenantError(f"cannot generate an RDS IAM token for {user}@{host}: {type(exc).__name__}") from exc


@dataclass(frozen=True)
class CommandPassword:
    """Runs a command (no shell) and uses its first stdout line as the password: a hook for OAuth-style tokens."""

    command: str
    timeout_s: float = 30.0

    def __call__(self, params: Mapping[str, Any]) -> str | None:
        argv = shlex.split(self.command)
        if not argv:
            raise TenantError("the tenant's COMMAND is empty")
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout_s, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TenantError(f"credential command {argv[0]!r} could not run: {type(exc).__name__}") from exc
        if done.returncode != 0:
            # stderr may be useful and is not the secret; stdout might be, so it is never shown.
            tail = redact_text(done.stderr.strip().splitlines()[-1]) if done.stderr.strip() else ""
            raise TenantError(f"credential command {argv[0]!r} exited with {done.returncode}: {tail}".rstrip(": "))
        lines = done.stdout.strip().splitlines()
        if not lines or not lines[0].strip():
            raise TenantError(f"credential command {argv[0]!r} printed no password")
        return lines[0].strip()


@dataclass(frozen=True)
class TenantConnector:
    """How to open a connection as one tenant's role."""

    tenant: str
    params: Mapping[str, Any] = field(repr=False)
    credentials: CredentialProvider = field(default_factory=StaticPassword, repr=False)

    @classmethod
    def from_conninfo(
        cls, tenant: str, conninfo: str, credentials: CredentialProvider | None = None
    ) -> TenantConnector:
        """A connector from a URL or ``key=value`` string; a password in it is used unless a provider is given."""
        try:
            params = conninfo_to_dict(conninfo)
        except psycopg.ProgrammingError as exc:
            raise TenantError(f"tenant {tenant}: connection string is invalid: {redact_text(str(exc))}") from None
        password = params.pop("password", None)
        return cls(tenant, params, credentials or StaticPassword(None if password is None else str(password)))

    @classmethod
    def from_fields(cls, tenant: str, fields: Mapping[str, str]) -> TenantConnector:
        """A connector from the ``PROVISIONER_TENANT_<ID>_*`` fields (upper-case names: DSN, HOST, AUTH, ...)."""
        upper = {k.upper(): v for k, v in fields.items() if v != ""}
        var = f"PROVISIONER_TENANT_{tenant.upper()}"
        params: dict[str, Any] = {}
        if "DSN" in upper:
            try:
                params = conninfo_to_dict(upper["DSN"])
            except psycopg.ProgrammingError:
                raise TenantError(f"{var}_DSN is not a valid connection string") from None
        elif "HOST" not in upper:
            raise TenantError(f"tenant {tenant!r} has no connection settings: set {var}_DSN or {var}_HOST and _USER")
        for name, key in (("HOST", "host"), ("PORT", "port"), ("DBNAME", "dbname"), ("USER", "user")):
            if name in upper:
                params[key] = upper[name]
        if "SSLMODE" in upper:
            params["sslmode"] = upper["SSLMODE"]
        password = upper.get("PASSWORD") or params.pop("password", None)
        params.pop("password", None)
        auth = upper.get("AUTH", "password").lower()
        provider: CredentialProvider
        if auth == "password":
            provider = StaticPassword(password)
        elif auth == "rds-iam":
            params.setdefault("sslmode", "require")
            provider = RdsIamToken(region=upper.get("REGION"))
        elif auth == "command":
            if not upper.get("COMMAND"):
                raise TenantError(f"{var}_AUTH=command needs {var}_COMMAND (prints the password on stdout)")
            provider = CommandPassword(upper["COMMAND"])
        elif auth == "databricks-oauth":
            from provisioner.tokenize.lakebase import DatabricksOAuth

            params.setdefault("sslmode", "require")  # Lakebase accepts TLS connections only
            provider = DatabricksOAuth.from_fields(var, upper)
        else:
            raise TenantError(f"{var}_AUTH={auth!r} is unknown: use one of {', '.join(AUTH_KINDS)}")
        return cls(tenant, params, provider)

    @property
    def redacted(self) -> str:
        """The connection string without any secret, for logs and errors."""
        return redact_text(make_conninfo(**{k: v for k, v in self.params.items() if k != "password"}))

    def connect(self, *, autocommit: bool = False) -> psycopg.Connection:
        """Open a connection as this tenant's role; TenantUnavailable (retryable) when the server cannot be reached."""
        params = dict(self.params)
        password = self.credentials(params)
        if password is not None:
            params["password"] = password
        params.setdefault("connect_timeout", _CONNECT_TIMEOUT)
        params.setdefault("application_name", "provisioner-tokenize")
        try:
            try:
                return psycopg.connect(make_conninfo(**params), autocommit=autocommit)
            except psycopg.OperationalError as exc:
                invalidate = getattr(self.credentials, "invalidate", None)
                if invalidate is None or not login_refused(exc):
                    raise
                # A short-lived token refused at login (revoked, or expired before its time): one new token.
                invalidate()
                password = self.credentials(params)
                params["password"] = password
                return psycopg.connect(make_conninfo(**params), autocommit=autocommit)
        except psycopg.OperationalError as exc:
            message = redact_text(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
            if password:
                message = message.replace(password, "****")
            raise TenantUnavailable(f"cannot connect to tenant {self.tenant} ({self.redacted}): {message}") from None


def login_refused(exc: psycopg.OperationalError) -> bool:
    """True when PostgreSQL refused the login's credentials (not when it could not be reached)."""
    # 28P01 invalid_password, 28000 invalid_authorization_specification; connection errors carry no SQLSTATE
    # in every libpq version, so the message is checked too.
    state = getattr(exc, "sqlstate", None)
    return state in ("28P01", "28000") or "password authentication failed" in str(exc)


@runtime_checkable
class PlanExecutor(Protocol):
    """Runs a plan on a tenant that is not a PostgreSQL database (``engine.run`` records and logs the run)."""

    def execute_plan(self, plan: Any, dry_run: bool, done: list[Any], progress: Any) -> None:
        """Run (or dry-run) ``plan``, appending each finished table's result to ``done``; raise on failure."""
        ...


@dataclass(frozen=True)
class Tenants:
    """Every configured tenant's connector (PostgreSQL) or executor (other kinds), by id (lower case)."""

    connectors: Mapping[str, TenantConnector]
    executors: Mapping[str, PlanExecutor] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, tenants: Mapping[str, Mapping[str, str]]) -> Tenants:
        """Build from ``Settings.tenants`` (tenant id → field → value); ``KIND`` picks PostgreSQL or Databricks."""
        connectors: dict[str, TenantConnector] = {}
        executors: dict[str, PlanExecutor] = {}
        for tid, fields in tenants.items():
            tenant = tid.lower()
            kind = {k.upper(): v for k, v in fields.items()}.get("KIND", "postgres").lower() or "postgres"
            if kind == "databricks":
                from provisioner.tokenize.databricks_tenants import DatabricksTenant

                executors[tenant] = DatabricksTenant.from_fields(tenant, fields).executor()
            elif kind in ("postgres", "postgresql"):
                connectors[tenant] = TenantConnector.from_fields(tenant, fields)
            else:
                var = f"PROVISIONER_TENANT_{tenant.upper()}_KIND"
                raise TenantError(f"{var}={kind!r} is unknown: use one of {', '.join(TENANT_KINDS)}")
        return cls(connectors, executors)

    def executor(self, tenant: str) -> PlanExecutor | None:
        """The executor of a tenant that is not a PostgreSQL database (a Databricks warehouse), else None."""
        return self.executors.get(tenant.lower())

    def __getitem__(self, tenant: str) -> TenantConnector:
        if tenant.lower() in self.executors:
            raise TenantError(f"tenant {tenant!r} is not a PostgreSQL database (its KIND is databricks)")
        try:
            return self.connectors[tenant.lower()]
        except KeyError:
            var = f"PROVISIONER_TENANT_{tenant.upper()}"
            known = ", ".join(sorted([*self.connectors, *self.executors])) or "none"
            raise TenantError(
                f"tenant {tenant!r} has no connection settings (configured: {known}): set {var}_DSN "
                f"or {var}_HOST, {var}_USER and {var}_PASSWORD"
            ) from None

    def connect(self, tenant: str) -> psycopg.Connection:
        """Open a connection as ``tenant``'s role."""
        return self[tenant].connect()


ConnectFn = Callable[[str], psycopg.Connection]
