"""The tenant family: ``PROVISIONER_TENANT_<ID>_<FIELD>``, one set of fields per tenant, each field declared once.

The settings only sort the variables into ``tenant id → field → value`` and refuse unknown fields; the tokenize
package, which opens the connections, validates the values (``Tenants.from_mapping``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from provisioner.errors import SettingsError
from provisioner.settings.declare import PREFIX

FAMILY = PREFIX + "TENANT_"
_TENANT_VAR = re.compile(r"PROVISIONER_TENANT_(?P<tenant>[A-Za-z0-9_]+?)_(?P<field>[A-Z_]+)$")


@dataclass(frozen=True)
class TenantField:
    """One field of a tenant's settings: ``PROVISIONER_TENANT_<ID>_<name>``."""

    name: str
    accepts: str
    doc: str
    default: str = "(unset)"

    @property
    def variable(self) -> str:
        """The variable with the tenant ID as a placeholder, as the reference shows it."""
        return f"{FAMILY}<ID>_{self.name}"


#: Every field a tenant may set, in the order the reference lists them.
TENANT_FIELD_DECLARATIONS: tuple[TenantField, ...] = (
    TenantField(
        "KIND",
        "postgres | databricks",
        "what the tenant is: a PostgreSQL database or a Databricks SQL warehouse",
        "postgres",
    ),
    TenantField(
        "AUTH",
        "password | rds-iam | command | databricks-oauth; databricks: sdk | token | oauth-m2m",
        "how runs authenticate as the tenant (fields each method needs are listed below)",
        "password (databricks: sdk)",
    ),
    TenantField(
        "DSN", "URL or key=value string", "the tenant's PostgreSQL connection (instead of HOST, PORT, DBNAME, USER)"
    ),
    TenantField(
        "HOST", "host name", "PostgreSQL host; databricks: the warehouse's server hostname (adb-….azuredatabricks.net)"
    ),
    TenantField("PORT", "port", "PostgreSQL port", "(libpq's: 5432)"),
    TenantField("DBNAME", "text", "PostgreSQL database"),
    TenantField("USER", "text", "the role runs connect as: it holds exactly the tenant's privileges"),
    TenantField("PASSWORD", "text", "the role's password (AUTH=password)"),
    TenantField(
        "SSLMODE", "libpq sslmode", "TLS of the connection", "(libpq's; require with rds-iam, databricks-oauth)"
    ),
    TenantField("REGION", "AWS region", "region of the RDS IAM token (AUTH=rds-iam)", "(boto3's)"),
    TenantField(
        "COMMAND",
        "command line (no shell)",
        "prints a short-lived password on stdout, run per connection (AUTH=command)",
    ),
    TenantField("INSTANCE", "text", "Lakebase instance name (AUTH=databricks-oauth; or ENDPOINT)"),
    TenantField(
        "ENDPOINT", "projects/…/branches/…/endpoints/…", "Lakebase endpoint (AUTH=databricks-oauth; or INSTANCE)"
    ),
    TenantField(
        "WORKSPACE", "URL", "Databricks workspace of a Lakebase tenant (AUTH=databricks-oauth)", "(databricks-sdk's)"
    ),
    TenantField("HTTP_PATH", "/sql/1.0/warehouses/…", "databricks: the warehouse's HTTP path"),
    TenantField("CATALOG", "catalog name", "databricks: the Unity Catalog catalog of the policy's schema.table names"),
    TenantField("TOKEN", "text", "Databricks personal access token (AUTH=token; or for databricks-oauth)"),
    TenantField("CLIENT_ID", "text", "Databricks service principal (AUTH=oauth-m2m; or for databricks-oauth)"),
    TenantField("CLIENT_SECRET", "text", "the service principal's secret (AUTH=oauth-m2m; or for databricks-oauth)"),
    TenantField("SECRET_SCOPE", "text", "databricks: scope of the secret holding the tokenization key (hmac mode)"),
    TenantField("SECRET_KEY", "text", "databricks: key of the secret holding the tokenization key (hmac mode)"),
    TenantField(
        "HMAC", "auto | hmac | sha2", "databricks: auto uses hmac() where the runtime has it, else sha2", "auto"
    ),
)

#: The field names alone (``DSN``, ``HOST``, ...).
TENANT_FIELDS = frozenset(f.name for f in TENANT_FIELD_DECLARATIONS)


def read_tenants(env: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """``tenant id (lower case) → field → value`` from every ``PROVISIONER_TENANT_<ID>_<FIELD>`` variable.

    Raises SettingsError for a variable of the family whose field is not declared.
    """
    tenants: dict[str, dict[str, str]] = {}
    for var, value in env.items():
        match = _TENANT_VAR.fullmatch(var)
        if not match:
            continue
        tenant, fld = match["tenant"], match["field"]
        # Ids may contain '_' (PROVISIONER_TENANT_SALES_EU_DSN): take the longest known field suffix.
        for known in sorted(TENANT_FIELDS, key=len, reverse=True):
            if var.endswith("_" + known):
                tenant = var[len(FAMILY) : -len(known) - 1]
                fld = known
                break
        else:
            raise SettingsError(
                f"{var} is not a known tenant setting: use one of "
                + ", ".join(f"{FAMILY}<ID>_{f}" for f in sorted(TENANT_FIELDS))
            )
        tenants.setdefault(tenant.lower(), {})[fld] = value
    return tenants
