"""Where a piece of the provisioner gets its connections: the process's sync pool, or a connection string.

Inside a running provisioner every piece borrows from the one pool ``provisioner.site`` opens; the connection string
serves pieces used on their own (a test, a library caller), which connect anew for each unit of work.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

#: A conninfo (each unit of work connects anew) or the process's pool (each unit of work borrows a connection).
ConnectionSource = str | ConnectionPool


@contextlib.contextmanager
def connection(
    source: ConnectionSource, *, autocommit: bool = False, timeout: float | None = None
) -> Iterator[psycopg.Connection[Any]]:
    """A connection for one short unit of work: borrowed from the pool, or opened on the conninfo and closed after.

    Without ``autocommit`` the work commits when the block ends without error and rolls back otherwise; with it,
    every statement commits on its own (a pooled connection goes back to the pool as it came). ``timeout``: how
    long to wait for a pooled connection, or for the server (None: the pool's, or psycopg's, default).
    """
    if isinstance(source, str):
        if timeout is None:
            opened = psycopg.connect(source, autocommit=autocommit)
        else:
            opened = psycopg.connect(source, autocommit=autocommit, connect_timeout=max(1, math.ceil(timeout)))
        with opened as conn:
            yield conn
        return
    with source.connection(timeout=timeout) as conn:
        if not autocommit:
            yield conn
            return
        conn.autocommit = True
        try:
            yield conn
        finally:
            with contextlib.suppress(psycopg.Error):  # a broken connection cannot be reset: the pool discards it
                conn.autocommit = False
