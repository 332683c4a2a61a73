"""Issue 15 §6: with no portal answering, `serve` says so once and points to `make demo`, not once per retry."""

from __future__ import annotations

import io
import json
import logging

import pytest

from provisioner.cli.serve import say_if_portal_unreachable
from provisioner.errors import PortalUnavailable
from provisioner.logs import JsonFormatter, PortalOutageFilter, log_event
from provisioner.portal import PortalClient
from tests.fixtures.s3 import free_port


def test_an_unreachable_portal_is_said_once_with_what_to_do() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(PortalOutageFilter(window=600))
    root = logging.getLogger("provisioner")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    nowhere = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    try:
        assert say_if_portal_unreachable(nowhere) is False
        client = PortalClient(nowhere, retries=3, backoff=0.0)
        for product in range(10):  # what the workers' jobs do while the portal is away: 30 retries
            with pytest.raises(PortalUnavailable):
                client.get_product(f"p{product}")
            log_event(
                logging.getLogger("provisioner.jobs"),
                "job.failed",
                level=logging.WARNING,
                error_type="PortalUnavailable",
                error="portal GET ... could not be reached",
            )
        log_event(logging.getLogger("provisioner.jobs"), "job.failed", level=logging.ERROR, error_type="StorageError")
    finally:
        root.removeHandler(handler)
        root.setLevel(logging.NOTSET)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["event"] for line in lines] == ["portal.unreachable", "job.failed"]
    assert nowhere in lines[0]["warning"] and "make demo" in lines[0]["warning"]
    assert lines[1]["error_type"] == "StorageError"  # other failures are still said, every time
