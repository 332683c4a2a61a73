"""The shared tokenization engine: deterministic tokens for PII columns in PostgreSQL, run by policy.

Typical use (the access-approval flow, the CLI, a DataHub Actions adapter)::

    from provisioner.tokenize import TokenizeOptions, Tenants, RunRecorder, load_policy_file, plan, run

    policy = load_policy_file("policy.yaml").for_output_port("sales", "customers", tags=["pii-email"])
    result = run(plan(policy, TokenizeOptions(key=key)), connect=Tenants.from_mapping(fields), recorder=recorder)
    if result.status != "SUCCESS":
        ...  # refuse the grant; result.error says why, result.retryable whether a retry may help

This package imports nothing of the provisioner around it but errors, names and logs.
"""

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
    "HmacPads",
    "PolicyEntry",
    "PolicyError",
    "PolicyFile",
    "RdsIamToken",
    "RecorderError",
    "RunRecord",
    "RunRecorder",
    "RunResult",
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
    "detokenize",
    "is_pii_tag",
    "load_policy_file",
    "plan",
    "run",
]
