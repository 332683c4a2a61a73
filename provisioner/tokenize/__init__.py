"""The shared tokenization engine: deterministic tokens for PII columns in PostgreSQL, run by policy.

Typical use (the access-approval flow, the CLI, a DataHub Actions adapter)::

    from provisioner.tokenize import TokenizeOptions, Tenants, RunRecorder, load_policy_file, plan, run

    policy = load_policy_file("policy.yaml").for_output_port("sales", "customers", tags=["pii-email"])
    result = run(plan(policy, TokenizeOptions(key=key)), connect=Tenants.from_mapping(fields), recorder=recorder)
    if result.status != "SUCCESS":
        ...  # refuse the grant; result.error says why, result.retryable whether a retry may help

Beside PostgreSQL: ``DatabricksTenant``/``DatabricksExecutor`` run the same tokens as one UPDATE per Delta table on a
Databricks SQL warehouse (the databricks extra), and ``DatabricksOAuth`` logs in to Lakebase (or any PostgreSQL that
takes a Databricks OAuth token) with a fresh one-hour token; ``Passfile`` keeps a libpq password file current with
it for connections opened elsewhere (the provisioner's own database, site.py).

This package imports nothing of the provisioner around it but errors, names and logs.
"""

from provisioner.tokenize.databricks import (
    DatabricksExecutor,
    DatabricksTableTemporary,
    PlaintextAfterUpdate,
    WarehouseUnavailable,
)
from provisioner.tokenize.databricks_statements import SecretScopeKey, SessionViewKey
from provisioner.tokenize.databricks_tenants import DatabricksTenant
from provisioner.tokenize.engine import (
    RunResult,
    TableProgress,
    TableResult,
    TokenizeOptions,
    TokenizePlan,
    plan,
    run,
)
from provisioner.tokenize.errors import (
    PolicyError,
    RecorderError,
    TargetError,
    TenantError,
    TenantUnavailable,
    TokenizeConfigError,
)
from provisioner.tokenize.lakebase import DatabricksOAuth, Passfile
from provisioner.tokenize.policy import (
    PolicyEntry,
    PolicyFile,
    TableSpec,
    TableTarget,
    TokenizePolicy,
    is_pii_tag,
    load_policy_file,
)
from provisioner.tokenize.records import RunRecord, RunRecorder
from provisioner.tokenize.tenants import (
    CommandPassword,
    CredentialProvider,
    RdsIamToken,
    StaticPassword,
    TenantConnector,
    Tenants,
)
from provisioner.tokenize.tokens import DEFAULT_KEY_ENV, HmacPads, TokenFormat, Tokenizer, detokenize

__all__ = [
    "DEFAULT_KEY_ENV",
    "CommandPassword",
    "CredentialProvider",
    "DatabricksExecutor",
    "DatabricksOAuth",
    "DatabricksTableTemporary",
    "DatabricksTenant",
    "HmacPads",
    "Passfile",
    "PlaintextAfterUpdate",
    "PolicyEntry",
    "PolicyError",
    "PolicyFile",
    "RdsIamToken",
    "RecorderError",
    "RunRecord",
    "RunRecorder",
    "RunResult",
    "SecretScopeKey",
    "SessionViewKey",
    "StaticPassword",
    "TableProgress",
    "TableResult",
    "TableSpec",
    "TableTarget",
    "TargetError",
    "TenantConnector",
    "TenantError",
    "TenantUnavailable",
    "Tenants",
    "TokenFormat",
    "TokenizeConfigError",
    "TokenizeOptions",
    "TokenizePlan",
    "TokenizePolicy",
    "Tokenizer",
    "WarehouseUnavailable",
    "detokenize",
    "is_pii_tag",
    "load_policy_file",
    "plan",
    "run",
]
