"""Tenants of kind ``databricks``: a SQL warehouse, its catalog, credentials and the secret holding the key.

Fields (``PROVISIONER_TENANT_<ID>_<FIELD>``, with ``KIND=databricks``):

* ``HOST`` (server hostname, ``adb-….azuredatabricks.net``) and ``HTTP_PATH`` (``/sql/1.0/warehouses/…``);
* ``CATALOG`` (optional): the Unity Catalog catalog of the policy's ``schema.table`` names;
* ``AUTH``: ``token`` (a personal access token in ``TOKEN``), ``oauth-m2m`` (a service principal's
  ``CLIENT_ID`` and ``CLIENT_SECRET``, through databricks-sdk) or ``sdk`` (the default: databricks-sdk's unified
  authentication from ``DATABRICKS_*`` variables or ``~/.databrickscfg``);
* ``SECRET_SCOPE`` and ``SECRET_KEY``: the Databricks secret that holds the tokenization key (hmac mode);
* ``HMAC`` (optional): ``auto`` (default: ``hmac()`` if the runtime has it, else ``sha2``), ``hmac`` or ``sha2``.

The connector and the SDK are imported only when a connection is opened (the ``databricks`` extra).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from provisioner.tokenize.databricks import MAC_CHOICES, Connection, DatabricksExecutor, MacChoice
from provisioner.tokenize.databricks_statements import SecretScopeKey, check_catalog
from provisioner.tokenize.errors import TenantError, TokenizeConfigError

KIND = "databricks"
AUTH_KINDS = ("sdk", "token", "oauth-m2m")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::[0-9]{1,5})?")
_HTTP_PATH = re.compile(r"/[A-Za-z0-9/._-]{1,250}")
_SOCKET_TIMEOUT_S = 900  # an UPDATE of a large table runs for minutes; STATEMENT_TIMEOUT bounds it


@dataclass(frozen=True)
class DatabricksTenant:
    """How to reach one tenant's SQL warehouse, and where its key is."""

    tenant: str
    server_hostname: str
    http_path: str
    catalog: str | None = None
    auth: str = "sdk"
    token: str | None = field(default=None, repr=False)
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    secret_scope: str | None = None
    secret_key: str | None = None
    mac: MacChoice = "auto"

    @classmethod
    def from_fields(cls, tenant: str, fields: Mapping[str, str]) -> DatabricksTenant:
        """A tenant from its ``PROVISIONER_TENANT_<ID>_*`` fields; TenantError names the one at fault."""
        upper = {k.upper(): v for k, v in fields.items() if v != ""}
        var = f"PROVISIONER_TENANT_{tenant.upper()}"
        host = upper.get("HOST", "").removeprefix("https://").rstrip("/")
        if not _HOST.fullmatch(host):
            raise TenantError(f"{var}_HOST must be the warehouse's server hostname (adb-….azuredatabricks.net)")
        http_path = upper.get("HTTP_PATH", "")
        if not _HTTP_PATH.fullmatch(http_path):
            raise TenantError(f"{var}_HTTP_PATH must be the warehouse's HTTP path (/sql/1.0/warehouses/…)")
        auth = upper.get("AUTH", "sdk").lower()
        if auth not in AUTH_KINDS:
            raise TenantError(f"{var}_AUTH={auth!r} is unknown for a databricks tenant: use {', '.join(AUTH_KINDS)}")
        if auth == "token" and not upper.get("TOKEN"):
            raise TenantError(f"{var}_AUTH=token needs {var}_TOKEN (a personal access token)")
        if auth == "oauth-m2m" and not (upper.get("CLIENT_ID") and upper.get("CLIENT_SECRET")):
            raise TenantError(f"{var}_AUTH=oauth-m2m needs {var}_CLIENT_ID and {var}_CLIENT_SECRET")
        scope, key = upper.get("SECRET_SCOPE"), upper.get("SECRET_KEY")
        if bool(scope) != bool(key):
            raise TenantError(f"set both {var}_SECRET_SCOPE and {var}_SECRET_KEY (the secret holding the key)")
        mac = upper.get("HMAC", "auto").lower()
        if mac not in MAC_CHOICES:
            raise TenantError(f"{var}_HMAC={mac!r} is unknown: use one of {', '.join(MAC_CHOICES)}")
        try:
            catalog = check_catalog(upper["CATALOG"]) if "CATALOG" in upper else None
            if scope and key:
                SecretScopeKey(scope, key)  # validates the names
        except TokenizeConfigError as exc:
            raise TenantError(f"{var}: {exc}") from None
        return cls(
            tenant=tenant,
            server_hostname=host,
            http_path=http_path,
            catalog=catalog,
            auth=auth,
            token=upper.get("TOKEN"),
            client_id=upper.get("CLIENT_ID"),
            client_secret=upper.get("CLIENT_SECRET"),
            secret_scope=scope,
            secret_key=key,
            mac=mac,  # checked against MAC_CHOICES above
        )

    @property
    def where(self) -> str:
        """Host and HTTP path, for messages (no credential)."""
        return f"{self.server_hostname}{self.http_path}"

    def executor(self) -> DatabricksExecutor:
        """The executor ``engine.run`` hands this tenant's plans to."""
        key = SecretScopeKey(self.secret_scope, self.secret_key) if self.secret_scope and self.secret_key else None
        return DatabricksExecutor(
            tenant=self.tenant, connect=self.connect, catalog=self.catalog, key=key, mac=self.mac, where=self.where
        )

    def connect(self) -> Connection:
        """Open a connection to the warehouse (``ignore_transactions=True``: each statement commits on its own)."""
        from databricks import sql as dbsql  # the databricks extra

        options: dict[str, Any] = {
            "server_hostname": self.server_hostname,
            "http_path": self.http_path,
            "ignore_transactions": True,
            "user_agent_entry": "provisioner-tokenize",
            "_socket_timeout": _SOCKET_TIMEOUT_S,
        }
        if self.auth == "token":
            options["access_token"] = self.token
        else:
            options["credentials_provider"] = self._sdk_credentials()
        return dbsql.connect(**options)

    def _sdk_credentials(self) -> Any:
        """A connector credentials provider backed by databricks-sdk (OAuth M2M, or its unified auth)."""
        from databricks.sdk.core import Config

        kwargs: dict[str, Any] = {"host": f"https://{self.server_hostname}"}
        if self.auth == "oauth-m2m":
            kwargs.update(client_id=self.client_id, client_secret=self.client_secret, auth_type="oauth-m2m")
        config = Config(**kwargs)
        return lambda: config.authenticate  # the connector calls it for a header factory
