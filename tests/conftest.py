"""Shared fixtures: real services (PostgreSQL, S3 servers, a portal stand-in) for every test module.

The suite runs with no ``PROVISIONER_*`` variable in its environment: a developer's shell settings (a log level, a
store, a portal URL…) must not leak into the in-process CLI tests or the processes they start. The one variable the
suite honours, ``PROVISIONER_DATABASE_URL`` (a PostgreSQL server to test against instead of an embedded one), is
read by ``tests.fixtures.postgres`` when it is imported, before the environment is cleaned.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

pytest_plugins = [
    "tests.fixtures.postgres",
    "tests.fixtures.s3",
    "tests.fixtures.seaweed",
    "tests.fixtures.portal",
    "tests.fixtures.spark",
    "tests.fixtures.bigquery",
]


@pytest.fixture(scope="session", autouse=True)
def _no_provisioner_settings_from_the_shell() -> Iterator[None]:
    """Remove every ``PROVISIONER_*`` variable for the whole session; put them back at the end."""
    shell = {name: value for name, value in os.environ.items() if name.startswith("PROVISIONER_")}
    for name in shell:
        del os.environ[name]
    yield
    os.environ.update(shell)
