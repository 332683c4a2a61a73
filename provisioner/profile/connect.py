"""How profiling opens a tenant connection: the same forms the tokenization engine accepts."""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from provisioner.tokenize import TenantConnector, Tenants
from provisioner.tokenize.engine import Connect

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
    return connect
