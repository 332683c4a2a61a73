"""``PortalClient.probe`` (the portal line of `provisioner check`): what each answer of the portal is called.

The stand-in refuses writes the way the real portal does for a caller without the permission: 403 before the body
is validated (``Authorization.enforce`` is a route dependency, and FastAPI runs those first).
"""

from __future__ import annotations

from typing import Any

import pytest

from provisioner.errors import PortalError
from provisioner.portal import PortalClient


def test_the_probe_passes_and_writes_nothing(portal: Any) -> None:
    product = portal.state.create_product("Kept", "kept", notify=False)
    portal.state.reset_counters()

    with PortalClient(portal.url, retries=0) as client:
        line = client.probe()

    assert line == f"{portal.url} answers; no API key needed; finalizer and status writes allowed"
    assert portal.state.writes == {}
    assert portal.state.product(product.id).finalizers == [] and portal.state.product(product.id).status == "pending"


def test_writes_refused_without_a_key_say_so(portal: Any) -> None:
    portal.state.refuse_writes = True

    with PortalClient(portal.url, retries=0) as client, pytest.raises(PortalError) as failed:
        client.probe()

    assert "we can read but not write (no PROVISIONER_PORTAL_API_KEY is set" in str(failed.value)
    assert "finalizer and status writes answer 403" in str(failed.value)
    assert str(failed.value).endswith(", and set PROVISIONER_PORTAL_API_KEY")


def test_an_unexpected_answer_to_a_write_probe_is_named(portal: Any) -> None:
    portal.state.fail_next(1, 405, methods=["POST"])

    with PortalClient(portal.url, retries=0) as client, pytest.raises(PortalError) as failed:
        client.probe()

    assert "finalizer write probe" in str(failed.value) and "with 405 where 403 or 422 was expected" in str(
        failed.value
    )


def test_something_that_is_not_the_portal_is_not_taken_for_it(portal: Any) -> None:
    portal.state.garble_next(1)

    with PortalClient(portal.url, retries=0) as client, pytest.raises(Exception, match="not JSON"):
        client.probe()
