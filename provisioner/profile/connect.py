"""How profiling opens a tenant connection: the same forms the tokenization engine accepts."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from provisioner.tokenize import TenantConnector, Tenants
from provisioner.tokenize.engine import Connect
from provisioner.tokenize.errors import TenantError
from provisioner.tokenize.tenants import PlanExecutor

APPLICATION_NAME = "provisioner-profile"


def opener(connect: Connect) -> Callable[[str], psycopg.Connection]:
    """A function opening a connection as a tenant's role, from a ``Tenants`` set, a connector, a conninfo or a
    callable (as ``provisioner.tokenize.run`` takes)."""
    if isinstance(connect, Tenants):
        return connect.connect
    if isinstance(connect, TenantConnector):
        return lambda _tenant: connect.connect()
    if isinstance(connect, str):
        return lambda _tenant: psycopg.connect(connect, application_name=APPLICATION_NAME, connect_timeout=10)
    if isinstance(connect, PlanExecutor):
        # The executor of a warehouse tenant opens no PostgreSQL connection: say so, as Tenants does for one.
        def refuse(tenant: str) -> psycopg.Connection:
            raise TenantError(f"tenant {tenant!r} is not a PostgreSQL database (profiling reads PostgreSQL only)")

        return refuse
    return connect
