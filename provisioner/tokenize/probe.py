"""The doctor's probe of one tenant: it connects, with the privileges tokenization needs (``provisioner check``).

It connects as the tenant's role, as a run does, and then checks without writing what a run checks before its
first write (``engine.preflight``) for every table the policy file gives this tenant: the table and its columns
exist, the columns are text wide enough for a token, the role may SELECT and UPDATE them and UPDATE (so lock) the
table, and no row-level security hides rows from it. In hmac mode a run loads the key into a temporary table, so
the role also needs TEMPORARY on the database.
"""

from __future__ import annotations

from provisioner.tokenize.engine import preflight
from provisioner.tokenize.errors import TargetError
from provisioner.tokenize.policy import TableTarget
from provisioner.tokenize.tenants import TenantConnector
from provisioner.tokenize.tokens import TokenFormat

_CAN_TEMP = "SELECT current_user, current_database(), has_database_privilege(current_database(), 'TEMPORARY')"


def probe_tenant(connector: TenantConnector, tables: tuple[TableTarget, ...], fmt: TokenFormat) -> str:
    """One line when the tenant connects with every privilege its tables need; the run's own error otherwise."""
    with connector.connect() as conn:
        role, database, can_temp = conn.execute(_CAN_TEMP).fetchone() or ("?", "?", False)
        if fmt.mode == "hmac" and not can_temp:
            raise TargetError(
                f"role {role} lacks TEMPORARY on database {database} (a run loads the key into a temporary table); "
                "grant it"
            )
        preflight(conn, tables, fmt)
    if not tables:
        return f"connects as {role} to {database}; no table of it in the policy file to check"
    columns = sum(len(t.columns) for t in tables)
    return f"connects as {role} to {database}; may tokenize {columns} column(s) in {len(tables)} table(s)"
