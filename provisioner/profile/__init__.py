"""In-database profiling: statistics, PII column proposals, DQX check suggestions, and the residual-PII gate.

Typical use (the CLI, the access flow's gate)::

    from provisioner.profile import ProfileOptions, TableName, profile

    result = profile("sales", [TableName.parse("public.customers")], connect=tenants, recorder=recorder)
    for table in result.tables:
        print(table.table, table.proposed, table.checks)

Runs as the tenant's role through ``provisioner.tokenize``'s tenant connections; the table never leaves the
database (one aggregate pass, ``pg_stats``, and a ``TABLESAMPLE`` sample matched against validated patterns).
``provisioner.tokenize`` never imports this package.
"""

from provisioner.profile.checks import CheckOptions, suggest_checks
from provisioner.profile.errors import ProfileInputError, ProfileTargetError
from provisioner.profile.model import (
    ColumnProfile,
    ProfileOptions,
    ProfileProgress,
    ProfileResult,
    TableName,
    TableProfile,
)
from provisioner.profile.profiler import profile
from provisioner.profile.proposals import PROPOSE_AT, Proposal, propose

__all__ = [
    "PROPOSE_AT",
    "CheckOptions",
    "ColumnProfile",
    "ProfileInputError",
    "ProfileOptions",
    "ProfileProgress",
    "ProfileResult",
    "ProfileTargetError",
    "Proposal",
    "TableName",
    "TableProfile",
    "profile",
    "propose",
    "suggest_checks",
]
