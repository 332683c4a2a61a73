"""Short-lived OAuth passwords for Databricks Lakebase (and any PostgreSQL that takes a Databricks OAuth token).

Lakebase hands out one-hour OAuth tokens instead of passwords, through databricks-sdk:

* the instance API: ``w.database.generate_database_credential(instance_names=[…])`` (``expiration_time``, text);
* the newer endpoint API: ``w.postgres.generate_database_credential(endpoint="projects/…/endpoints/…")``
  (``expire_time``, a protobuf Timestamp). SDK versions before the ``postgres`` service have only the first.

PostgreSQL checks the token only at login, so an open connection outlives its token. ``DatabricksOAuth`` is a
credential provider (a callable returning the password of the next connection): every new connection gets a token
that stays valid for at least ``refresh_margin_s`` more seconds, fetched anew once the cached one gets that close
to its expiry (one API call an hour, not one per pooled connection). ``invalidate()`` drops the cached token:
``TenantConnector`` calls it when a login is refused (a token revoked, or rotated by a newer one) and retries once.
Tokens are never logged and never part of a message.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioner.logs import log_event
from provisioner.tokenize.errors import TenantError, TenantUnavailable

_log = logging.getLogger("provisioner.tokenize")

AUTH = "databricks-oauth"
DEFAULT_LIFETIME_S = 3600.0  # when the API does not say: Lakebase tokens last one hour
_REFRESH_MARGIN_S = 300.0
#: How often a ``Passfile`` checks that its token still logs in (a token revoked, or expired before its time).
PROBE_SECONDS = 60.0
# databricks-sdk error codes that a retry cannot fix (a person must change a setting or a grant).
_PERMANENT = frozenset(
    {"UNAUTHENTICATED", "PERMISSION_DENIED", "NOT_FOUND", "RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}
)


class _NoCredentialBodies(logging.Filter):
    """databricks-sdk logs response bodies at DEBUG, the credential's token included: drop those records."""

    def filter(self, record: logging.LogRecord) -> bool:
        return '"token"' not in record.getMessage()


_SDK_LOG_FILTER = _NoCredentialBodies()


@dataclass
class DatabricksOAuth:
    """A Lakebase credential provider: ``instance`` (instance API) or ``endpoint`` (endpoint API), not both.

    ``workspace`` builds the ``WorkspaceClient`` (by default from ``host``, ``token``, ``client_id`` and
    ``client_secret``, or databricks-sdk's unified authentication from ``DATABRICKS_*`` variables when unset).
    """

    instance: str | None = None
    endpoint: str | None = None
    host: str | None = None
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    refresh_margin_s: float = _REFRESH_MARGIN_S
    workspace: Callable[[], Any] | None = field(default=None, repr=False)
    clock: Callable[[], float] = field(default=time.time, repr=False)
    _cached: tuple[str, float] | None = field(default=None, init=False, repr=False)
    _client: Any = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if bool(self.instance) == bool(self.endpoint):
            raise TenantError(
                "databricks-oauth needs exactly one of a Lakebase instance name (INSTANCE) or an endpoint "
                "(ENDPOINT, projects/…/branches/…/endpoints/…)"
            )

    @classmethod
    def from_fields(cls, var: str, fields: Mapping[str, str]) -> DatabricksOAuth:
        """From ``<var>_INSTANCE`` or ``_ENDPOINT``, and optionally ``_WORKSPACE``, ``_TOKEN``, ``_CLIENT_ID``,
        ``_CLIENT_SECRET`` (upper-case field names, ``var`` the variables' common prefix for messages)."""
        try:
            return cls(
                instance=fields.get("INSTANCE") or None,
                endpoint=fields.get("ENDPOINT") or None,
                host=fields.get("WORKSPACE") or None,
                token=fields.get("TOKEN") or None,
                client_id=fields.get("CLIENT_ID") or None,
                client_secret=fields.get("CLIENT_SECRET") or None,
            )
        except TenantError as exc:
            raise TenantError(f"{var}_AUTH={AUTH}: {exc} (set {var}_INSTANCE or {var}_ENDPOINT)") from None

    @property
    def target(self) -> str:
        """The instance or endpoint, for messages."""
        return f"instance {self.instance}" if self.instance else f"endpoint {self.endpoint}"

    def __call__(self, params: Mapping[str, Any]) -> str | None:
        """The next connection's password: the cached token while it has ``refresh_margin_s`` left, else a new one."""
        with self._lock:
            now = self.clock()
            if self._cached is None or self._cached[1] - now <= self.refresh_margin_s:
                self._cached = self._generate(now)
            return self._cached[0]

    def invalidate(self) -> None:
        """Forget the cached token (its login was refused): the next connection gets a new one."""
        with self._lock:
            self._cached = None

    def expires_at(self) -> float | None:
        """When the cached token expires (epoch seconds), None if there is none."""
        return self._cached[1] if self._cached else None

    def _workspace(self) -> Any:
        if self._client is None:
            if self.workspace is not None:
                self._client = self.workspace()
            else:
                from databricks.sdk import WorkspaceClient  # the databricks extra

                # On the SDK's logger itself: its records never reach a handler with the token in them.
                sdk_log = logging.getLogger("databricks.sdk")
                if _SDK_LOG_FILTER not in sdk_log.filters:
                    sdk_log.addFilter(_SDK_LOG_FILTER)

                kwargs: dict[str, Any] = {
                    k: v
                    for k, v in (
                        ("host", self.host),
                        ("token", self.token),
                        ("client_id", self.client_id),
                        ("client_secret", self.client_secret),
                    )
                    if v
                }
                self._client = WorkspaceClient(**kwargs)
        return self._client

    def _generate(self, now: float) -> tuple[str, float]:
        try:
            w = self._workspace()
            if self.instance:
                cred = w.database.generate_database_credential(
                    instance_names=[self.instance], request_id=str(uuid.uuid4())
                )
                expires = _parse_time(getattr(cred, "expiration_time", None))
            else:
                postgres = getattr(w, "postgres", None)
                if postgres is None:
                    raise TenantError(
                        "this databricks-sdk has no postgres service (endpoint API): upgrade databricks-sdk, "
                        "or configure the Lakebase instance name (INSTANCE) instead"
                    )
                cred = postgres.generate_database_credential(endpoint=self.endpoint)
                expire_time = getattr(cred, "expire_time", None)
                expires = expire_time.ToDatetime(tzinfo=UTC).timestamp() if expire_time is not None else None
        except TenantError:
            raise
        except Exception as exc:  # the SDK's errors: no credentials, HTTP errors, a host that cannot be reached
            code = str(getattr(exc, "error_code", "") or "")
            status = getattr(getattr(exc, "response", None), "status_code", None)
            http = {"UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "NOT_FOUND": 404}.get(code, status)
            permanent = code in _PERMANENT or http in (400, 401, 403, 404) or isinstance(exc, ValueError)
            raise (TenantError if permanent else TenantUnavailable)(
                f"cannot get a Lakebase credential for {self.target}: {type(exc).__name__}"
                + (f" (HTTP {http})" if http else "")
            ) from None
        token = getattr(cred, "token", None)
        if not token:
            raise TenantError(f"the Lakebase credential API returned no token for {self.target}")
        return str(token), expires if expires is not None else now + DEFAULT_LIFETIME_S


def _parse_time(value: object) -> float | None:
    """RFC 3339 text (``2026-11-22T10:00:00Z``, fractions allowed) as epoch seconds."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()


class Passfile:
    """A libpq password file kept current with Lakebase tokens, for connections this code does not open itself.

    The provisioner's own database (``PROVISIONER_DATABASE_URL``) is reached from several places: the pool,
    migrations, the job queue, the web app. libpq reads its password file (``passfile``, or ``PGPASSFILE``) at every
    login, so one line ``host:port:dbname:user:token`` for that server, rewritten (atomically, mode 0600) before the
    token expires, serves all of them unchanged. Connections to any other server never see the token.

    Between refreshes, every ``probe_s`` seconds, it logs in once with the file (``check``): a token the server
    refuses before its announced expiry (revoked, or rotated by another client) is replaced then, so new connections
    recover within ``probe_s`` instead of at the next scheduled refresh.
    """

    def __init__(
        self,
        conninfo: str,
        provider: DatabricksOAuth,
        path: str | os.PathLike[str],
        *,
        probe_s: float | None = None,
    ) -> None:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(conninfo)
        host = str(params.get("host") or "localhost")
        self._match = [
            "*" if host.startswith("/") else host,  # a socket directory: libpq matches it as "localhost"
            str(params.get("port") or "5432"),
            str(params.get("dbname") or "*"),
            str(params.get("user") or "*"),
        ]
        self.provider, self.path = provider, Path(path)
        self.conninfo = conninfo
        self.probe_s = PROBE_SECONDS if probe_s is None else probe_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Write the current token (a new one if the cached one is close to expiry)."""
        token = self.provider({})
        line = ":".join(_pgpass_escape(v) for v in [*self._match, token or ""]) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".pgpass-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path)

    def check(self) -> bool:
        """Log in once with the file; if the server refuses the token, write a new one. True when it did."""
        import psycopg

        from provisioner.tokenize.tenants import login_refused

        try:
            psycopg.connect(self.conninfo, passfile=str(self.path), connect_timeout=10).close()
        except psycopg.OperationalError as exc:
            if not login_refused(exc):
                return False  # the server is away or busy: not the token's fault, and the pools will say so
            self.provider.invalidate()
            self.refresh()
            log_event(_log, "lakebase.token_refused_replaced", level=logging.WARNING, target=self.provider.target)
            return True
        return False

    def start(self) -> None:
        """Write the file now and keep it fresh from a daemon thread until ``stop()``."""
        self.refresh()
        self._thread = threading.Thread(target=self._run, name="lakebase-passfile", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop refreshing (the file stays until its token expires)."""
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            expires = self.provider.expires_at() or self.provider.clock() + DEFAULT_LIFETIME_S
            due = expires - self.provider.refresh_margin_s - self.provider.clock() + 1
            if self._stop.wait(max(1.0, min(due, self.probe_s))):
                return
            try:
                if self.provider.clock() >= expires - self.provider.refresh_margin_s:
                    self.refresh()
                else:
                    self.check()
            except (TenantError, TenantUnavailable, OSError) as exc:  # try again soon; logins go on meanwhile
                log_event(_log, "lakebase.passfile_refresh_failed", level=logging.WARNING, error=str(exc))
                if self._stop.wait(30):
                    return


def _pgpass_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")
