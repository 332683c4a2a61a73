"""The intake answers failures as the one error policy (provisioner.errors.classify) says, and stores nothing."""

from __future__ import annotations

import psycopg
import pytest

from provisioner.errors import DatabaseUnavailable, UnsupportedMediaType, classify
from tests.web.conftest import Web
from tests.web.test_intake import cloudevent, post_v2


async def _database_down(item: str) -> tuple[int, str, list[int], int]:
    raise psycopg.OperationalError("connection to server failed: Connection refused")


async def test_a_database_outage_is_a_temporary_failure_answered_503(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web.app.state.intake.committer, "write", _database_down)
    response = await post_v2(web, cloudevent())
    policy = classify(DatabaseUnavailable("x"))
    assert policy.temporary and response.status_code == policy.http_status == 503
    assert response.json() == {"error": "database unavailable; nothing was stored, send again"}
    assert web.stored_nothing()


async def test_the_intake_takes_its_statuses_from_the_policy(web: Web, monkeypatch: pytest.MonkeyPatch) -> None:
    """Change what the policy says about a class, and the intake answers that: it keeps no statuses of its own."""
    monkeypatch.setattr(DatabaseUnavailable, "http_status", 507)
    monkeypatch.setattr(UnsupportedMediaType, "http_status", 418)
    monkeypatch.setattr(web.app.state.intake.committer, "write", _database_down)
    assert (await post_v2(web, cloudevent())).status_code == 507
    assert (await post_v2(web, cloudevent(), **{"Content-Type": "text/plain"})).status_code == 418
    assert web.stored_nothing()
