"""Webhook intake through the real ASGI app and real PostgreSQL: what is stored, enqueued and answered."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest

from provisioner import jobs
from provisioner.events import parse_delivery
from provisioner.jobs import job_spec
from provisioner.portal import API, PortalClient
from provisioner.testing.portal import StandinServer, sign_v1
from provisioner.web.auth import url_token, v1_signature
from tests.web.conftest import SECRET, V2_KINDS, Web, WebFactory, v1_samples, v2_sample

P = "c9d573ab-84ce-48c4-9051-e7c0a37b1c4d"
WIRE_HEADERS = ("Sign", "Content-Type")  # what the portal sends that matters; Host etc. belong to the capture


def _wire(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k in WIRE_HEADERS}


def cloudevent(event_type: str = "data_product.event", data: Any = None, event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "specversion": "1.0",
            "id": event_id or str(uuid.uuid4()),
            "source": "data-product-portal",
            "type": event_type,
            "time": "2026-11-22T10:00:00+00:00",
            "data": {"id": P} if data is None else data,
        }
    ).encode()


async def post_v2(web: Web, body: bytes, **headers: str) -> Any:
    return await web.client.post(
        f"/webhooks/portal/v2?token={url_token(SECRET)}",
        content=body,
        headers={"Content-Type": "application/json", **headers},
    )


async def test_captured_v1_deliveries_are_accepted_with_200_and_enqueued_once_per_entity(web: Web) -> None:
    samples = v1_samples()
    statuses = []
    for sample in samples:
        response = await web.client.post(
            "/webhooks/portal", content=sample["raw_body"].encode(), headers=_wire(sample["headers"])
        )
        statuses.append(response.status_code)
    assert statuses == [200] * 23  # portal v0.7.0 logs anything else as "Failed to send notification"
    assert web.count("provisioner_inbox") == 23
    expected_locks = {
        job_spec(t).queueing_lock
        for s in samples
        for t in parse_delivery(s["raw_body"].encode(), s["headers"]).triggers
    }
    queued = web.rows("SELECT queueing_lock FROM procrastinate_jobs WHERE status = 'todo'")
    assert sorted(r[0] for r in queued) == sorted(expected_locks)  # one waiting job per entity and kind
    outcomes = dict(web.rows("SELECT outcome, count(*) FROM provisioner_inbox GROUP BY outcome"))
    assert outcomes == {"enqueued": len(expected_locks), "coalesced": 16 - len(expected_locks), "ignored": 7}


@pytest.mark.parametrize("kind", V2_KINDS)
async def test_captured_v2_events_are_accepted(web: Web, kind: str) -> None:
    sample = v2_sample(kind)
    response = await post_v2(web, sample["raw_body"].encode())
    assert response.status_code == 202
    delivery = parse_delivery(sample["raw_body"].encode(), sample["headers"])
    (row,) = web.rows(
        "SELECT delivery_id, generation, event_type, outcome, ignored_reason, body, id FROM provisioner_inbox"
    )
    assert row[:3] == (sample["body"]["id"], "v2", f"{kind}.event")
    assert row[3] == ("enqueued" if delivery.triggers else "ignored")
    assert row[4] == delivery.ignored_reason
    assert row[5] == sample["body"]
    job_ids = [r[0] for r in web.rows("SELECT id FROM procrastinate_jobs ORDER BY id")]
    assert len(job_ids) == len(delivery.triggers)
    # The answer names the stored inbox row and the jobs it queued.
    assert response.json() == {"id": row[6], "outcome": row[3], "jobs": job_ids}


async def test_binary_mode_cloudevent_is_accepted(web: Web) -> None:
    event_id = str(uuid.uuid4())
    response = await web.client.post(
        f"/webhooks/portal?token={url_token(SECRET)}",
        content=json.dumps({"id": P}).encode(),
        headers={
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": event_id,
            "ce-source": "data-product-portal",
            "ce-type": "data_product.event",
        },
    )
    assert response.status_code == 202
    assert web.rows("SELECT delivery_id, entity FROM provisioner_inbox") == [(event_id, f"product:{P}")]
    assert web.rows("SELECT task_name, args FROM procrastinate_jobs") == [("reconcile_product", {"product_id": P})]


async def test_redelivered_cloudevent_is_200_and_enqueues_nothing(web: Web) -> None:
    body = cloudevent()
    first = await post_v2(web, body)
    second = await post_v2(web, body)
    assert (first.status_code, second.status_code) == (202, 200)
    assert second.json()["outcome"] == "duplicate"
    assert web.count("procrastinate_jobs") == 1
    assert web.rows("SELECT outcome FROM provisioner_inbox ORDER BY id") == [("enqueued",), ("duplicate",)]


async def test_identical_v1_bodies_are_each_accepted_and_coalesce_while_a_job_waits(web: Web) -> None:
    sample = v1_samples()[18]  # POST …/input_ports/revoke: every revoke on this port has exactly this body
    answers = [
        await web.client.post("/webhooks/portal", content=sample["raw_body"].encode(), headers=_wire(sample["headers"]))
        for _ in range(2)
    ]
    assert [a.status_code for a in answers] == [200, 200]
    assert [a.json()["outcome"] for a in answers] == ["enqueued", "coalesced"]
    assert web.count("procrastinate_jobs") == 1
    assert web.count("provisioner_inbox_keys") == 0  # a v1 body is no proof of a redelivery: nothing remembered
    # Once the waiting job has started, the same body again is a new decision: a new job.
    web.rows("UPDATE procrastinate_jobs SET status = 'doing' RETURNING id")
    third = await web.client.post(
        "/webhooks/portal", content=sample["raw_body"].encode(), headers=_wire(sample["headers"])
    )
    assert (third.status_code, third.json()["outcome"]) == (200, "enqueued")
    assert web.count("procrastinate_jobs") == 2


async def test_every_identical_v1_decision_leads_to_a_reconcile_and_the_last_state_wins(
    web: Web, portal: StandinServer
) -> None:
    """approve, revoke, approve, revoke on one port: four deliveries, two distinct bodies, four reconciles."""
    state = portal.state
    producer = state.create_product("Producer", "producer", notify=False)
    consumer = state.create_product("Consumer", "consumer", notify=False)
    port = state.create_output_port(producer.id, "Orders", namespace="orders", notify=False)
    state.request_access(consumer.id, port.id, notify=False)
    seen: list[str] = []

    class ReadThePortal:
        """A level-triggered handler: what the portal shows when the job runs is what counts."""

        def __init__(self, client: PortalClient) -> None:
            self.client = client

        def reconcile_output_port(self, producer_id: str, output_port_id: str) -> None:
            (link,) = self.client.output_port_input_ports(producer_id, output_port_id)
            seen.append(link.status)

    with PortalClient(portal.url) as client:
        app = jobs.build_app(web.url, ReadThePortal(client), max_attempts=1, resync_seconds=0)  # type: ignore[arg-type]
        for action in ("approve", "revoke", "approve", "revoke"):
            if action == "approve" and seen:
                state.request_access(consumer.id, port.id, notify=False)  # a revoked consumer asks again
            {"approve": state.approve, "revoke": state.revoke}[action](port.id, consumer.id, notify=False)
            response = await _post_v1(web, "POST", f"{API}/{producer.id}/output_ports/{port.id}/input_ports/{action}")
            assert (response.status_code, response.json()["outcome"]) == (200, "enqueued"), action
            await jobs.run_worker(app, concurrency=1, wait=False, install_signal_handlers=False)
    assert seen == ["approved", "revoked", "approved", "revoked"]


async def _post_v1(web: Web, method: str, url: str, response: str = "null") -> Any:
    """A v1 delivery as the portal sends it: compact JSON body, ``Sign`` over its default-separator dump."""
    content = {"method": method, "url": url, "query": "", "response": response, "status_code": 200}
    return await web.client.post(
        "/webhooks/portal",
        content=json.dumps(content, separators=(",", ":")).encode(),
        headers={"Content-Type": "application/json", "Sign": sign_v1(SECRET, content)},
    )


async def test_second_event_for_a_waiting_product_is_coalesced(web: Web) -> None:
    first = await post_v2(web, cloudevent())
    second = await post_v2(web, cloudevent())
    assert (first.status_code, second.status_code) == (202, 202)
    assert (first.json()["outcome"], second.json()["outcome"]) == ("enqueued", "coalesced")
    assert second.json()["jobs"] == []
    assert web.count("procrastinate_jobs") == 1
    # Once the waiting job has started, a new event must queue a fresh job (the running one read older state).
    web.rows("UPDATE procrastinate_jobs SET status = 'doing' RETURNING id")
    third = await post_v2(web, cloudevent())
    assert third.json()["outcome"] == "enqueued"
    assert web.count("procrastinate_jobs") == 2


async def test_unknown_event_type_is_accepted_and_recorded_as_ignored(web: Web) -> None:
    response = await post_v2(web, cloudevent("dataset.event", {"id": "whatever"}))
    assert response.status_code == 202
    assert response.json()["outcome"] == "ignored"
    assert web.rows("SELECT outcome, ignored_reason FROM provisioner_inbox") == [
        ("ignored", "unknown event type 'dataset.event'")
    ]
    assert web.count("procrastinate_jobs") == 0


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "error"),
    [
        (b"{not json", "application/json", 400, "body is not JSON"),
        (b'{"hello": "world"}', "application/json", 400, "neither a v1 envelope"),
        (b"[" * 5000 + b"]" * 5000, "application/json", 400, "nested deeper"),
        (cloudevent(data={"id": "'; DROP TABLE x; --"}), "application/json", 400, "data.id must be a UUID"),
        (cloudevent(), "text/plain", 415, "Content-Type 'text/plain'"),
        (b'{"method": "PUT", "url": "/x\\u0000", "status_code": 200}', "application/json", 400, "\\u0000"),
    ],
)
async def test_bad_input_gets_its_status_and_stores_nothing(
    web: Web, body: bytes, content_type: str, status: int, error: str
) -> None:
    response = await post_v2(web, body, **{"Content-Type": content_type})
    assert response.status_code == status
    assert error in response.json()["error"]
    assert web.stored_nothing()


async def test_oversized_body_is_413_by_declared_length(make_web: WebFactory) -> None:
    web = await make_web(max_body_bytes=1000)
    body = cloudevent(data={"id": P, "padding": "x" * 2000})
    response = await post_v2(web, body)
    assert response.status_code == 413
    assert "over the 1000 byte limit" in response.json()["error"]
    assert web.stored_nothing()


async def test_oversized_chunked_body_is_413_while_streaming(make_web: WebFactory) -> None:
    web = await make_web(max_body_bytes=1000)
    body = cloudevent(data={"id": P, "padding": "x" * 5000})
    response = await web.client.post(
        f"/webhooks/portal?token={url_token(SECRET)}",
        content=_chunks(body, 256),  # no Content-Length: the limit must hold while reading
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert web.stored_nothing()


async def test_v1_signed_on_the_raw_body_is_accepted(web: Web) -> None:
    body = json.dumps(
        {"method": "PUT", "url": f"/api/v2/data_products/{P}", "query": "", "response": "", "status_code": 200},
        separators=(",", ":"),
    ).encode()
    response = await web.client.post(
        "/webhooks/portal",
        content=body,
        headers={"Content-Type": "application/json", "Sign": v1_signature(SECRET, body)},
    )
    assert response.status_code == 200


async def test_metrics_count_deliveries_and_queue_depth(web: Web) -> None:
    await post_v2(web, cloudevent())
    await post_v2(web, cloudevent("technical_asset.event", {"id": P, "data_product_id": P}))
    await post_v2(web, b"nope")
    text = (await web.client.get("/metrics")).text
    assert (
        'provisioner_webhook_deliveries_total{generation="v2",outcome="enqueued",type="data_product.event"} 1.0' in text
    )
    assert 'outcome="ignored",type="technical_asset.event"} 1.0' in text
    assert 'provisioner_webhook_deliveries_total{generation="unknown",outcome="invalid",type="unknown"} 1.0' in text
    assert 'provisioner_queue_jobs{status="todo"} 1.0' in text


async def test_status_lists_latest_run_per_subject(web: Web) -> None:
    web.rows(
        "INSERT INTO provisioner_runs (kind, subject, status, started_at) VALUES "
        "('product', 'a', 'failure', now() - interval '1 minute'), ('product', 'a', 'success', now()), "
        "('product', 'b', 'running', now()) RETURNING id"
    )
    body = (await web.client.get("/status/products")).json()
    assert [(r["subject"], r["status"]) for r in body["products"]] == [("a", "success"), ("b", "running")]


async def test_status_shows_the_delete_run_not_the_echo_skipped_after_it_and_parked_products(web: Web) -> None:
    web.rows(
        "INSERT INTO provisioner_runs (kind, subject, status, steps, started_at) VALUES "
        "('product', 'gone', 'success', '[\"user\"]', now() - interval '2 minutes'),"
        "('delete', 'gone', 'success', '[\"user_deleted\", \"finalizer_removed\"]', now() - interval '1 minute'),"
        "('delete', 'gone', 'skipped', '[]', now()),"  # the portal's echo of our finalizer removal
        "('product', 'echo-only', 'skipped', '[]', now()),"
        "('product', 'stuck', 'failure', '[]', now() - interval '1 minute'),"
        "('product', 'stuck', 'skipped', '[]', now())"
        " RETURNING id"
    )
    web.rows(
        "INSERT INTO provisioner_parked (product_id, namespace, fingerprint, reason, error) VALUES "
        "('stuck', 'sales', 'f', 'NamespaceConflict', 'namespace ''sales'' is already provisioned') RETURNING 1"
    )
    body = (await web.client.get("/status/products")).json()
    rows = {r["subject"]: r for r in body["products"]}
    assert (rows["gone"]["kind"], rows["gone"]["status"]) == ("delete", "success")
    assert rows["echo-only"]["status"] == "skipped"  # nothing else to show
    assert rows["stuck"]["status"] == "failure"
    assert rows["stuck"]["parked"]["reason"] == "NamespaceConflict" and rows["gone"]["parked"] is None
    assert [(p["product_id"], p["namespace"]) for p in body["parked"]] == [("stuck", "sales")]


async def test_a_burst_is_committed_together_and_one_bad_body_fails_alone(web: Web) -> None:
    """Group commit: concurrent deliveries share transactions; a body the database refuses fails only itself."""
    import asyncio

    products = [str(uuid.uuid4()) for _ in range(40)]
    bodies = [cloudevent(data={"id": p}) for p in products]
    # Python reads 1e999999 as infinity; PostgreSQL's jsonb refuses it: the batch fails in the database, and
    # only this delivery may be refused.
    bad = cloudevent(data={"id": str(uuid.uuid4())})[:-1] + b', "n": 1e999999}'
    redelivery = bodies[0]
    responses = await asyncio.gather(*(post_v2(web, b) for b in [*bodies, bad, redelivery]))
    statuses = [r.status_code for r in responses]
    assert statuses[1:40] == [202] * 39
    assert statuses[40] == 400 and "cannot be stored" in responses[40].json()["error"]
    # The same CloudEvent id twice in one burst: accepted once (whichever is written first), a duplicate once.
    assert sorted([statuses[0], statuses[41]]) == [200, 202]
    assert web.count("provisioner_inbox") == 41
    assert web.count("procrastinate_jobs") == 40
    ids = {r.json()["id"] for r in responses if r.status_code == 202}
    assert len(ids) == 40  # every 202 names its own committed inbox row


async def test_a_batch_refused_with_a_deadlock_is_replayed_one_by_one(web: Web) -> None:
    """Two batches taking the same entities' locks in another order deadlock; every delivery must still land."""
    import asyncio

    with psycopg.connect(web.url, autocommit=True) as conn:
        # A sequence survives the rollback, so it proves a multi-delivery batch really was refused.
        conn.execute("CREATE SEQUENCE refused_batches")
        conn.execute(
            "CREATE FUNCTION deadlock_on_second_row() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " IF COALESCE(current_setting('test.rows', true), '') <> '' THEN"
            "   PERFORM nextval('refused_batches');"
            "   RAISE EXCEPTION 'simulated deadlock' USING ERRCODE = 'deadlock_detected';"
            " END IF;"
            " PERFORM set_config('test.rows', '1', true); RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER deadlock_on_second_row AFTER INSERT ON provisioner_inbox"
            " FOR EACH ROW EXECUTE FUNCTION deadlock_on_second_row()"
        )
    bodies = [cloudevent(data={"id": str(uuid.uuid4())}) for _ in range(30)]
    responses = await asyncio.gather(*(post_v2(web, b) for b in bodies))
    assert [r.status_code for r in responses] == [202] * 30
    assert web.count("provisioner_inbox") == 30
    assert web.count("procrastinate_jobs") == 30
    assert len({r.json()["id"] for r in responses}) == 30
    refused = web.rows("SELECT last_value, is_called FROM refused_batches")[0]
    assert refused[1] and refused[0] >= 1, "the burst never formed a batch: the replay path was not exercised"
