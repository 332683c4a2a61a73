"""The job queue retries what the one error policy (provisioner.errors.classify) retries, and nothing else.

The classes here declare the opposite of the class they derive from: only a queue that asks the policy (which reads
the ``temporary`` flag) rather than testing ``isinstance`` itself gets them right, in its retry strategy and in the
``job.failed`` event and metric alike.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from provisioner import jobs
from provisioner.errors import PermanentError, ProvisionerError
from provisioner.events import ReconcileProduct
from tests.test_jobs import P1, Scripted, _drain, _jobs


class DeclaredPermanent(ProvisionerError):
    temporary = False


class DeclaredTemporary(PermanentError):
    temporary = True


def _failed_events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if getattr(r, "event", None) == "job.failed"]  # type: ignore[attr-defined]


async def test_a_failure_the_policy_calls_permanent_fails_the_job_at_once(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    handlers = Scripted(failures=[DeclaredPermanent("a person must fix the policy file")])
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1)])
    registry = CollectorRegistry()
    app = jobs.build_app(
        pg_url, handlers, max_attempts=5, resync_seconds=0, backoff_seconds=0, metrics=jobs.JobMetrics(registry)
    )
    with caplog.at_level("INFO", logger="provisioner.jobs"):
        await _drain(app, pg_url)
    assert handlers.calls == [("product", P1)]
    assert _jobs(pg_url) == [("reconcile_product", "failed", 1, {"product_id": P1})]
    assert [e["will_retry"] for e in _failed_events(caplog)] == [False]
    assert registry.get_sample_value("provisioner_jobs_total", {"task": "reconcile_product", "outcome": "failed"})


async def test_a_failure_the_policy_calls_temporary_is_retried(pg_url: str, caplog: pytest.LogCaptureFixture) -> None:
    handlers = Scripted(failures=[DeclaredTemporary("the tenant did not answer")])
    with psycopg.connect(pg_url) as conn:
        jobs.enqueue(conn, [ReconcileProduct(P1)])
    app = jobs.build_app(pg_url, handlers, max_attempts=5, resync_seconds=0, backoff_seconds=0)
    with caplog.at_level("INFO", logger="provisioner.jobs"):
        await _drain(app, pg_url)
    assert handlers.calls == [("product", P1)] * 2
    assert _jobs(pg_url) == [("reconcile_product", "succeeded", 2, {"product_id": P1})]
    assert [e["will_retry"] for e in _failed_events(caplog)] == [True]
