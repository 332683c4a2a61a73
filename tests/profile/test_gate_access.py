"""The residual-PII gate in the real access flow: approve, tokenize, scan, then grant (warn) or not (fail)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

import botocore.exceptions
import psycopg
import pytest
from psycopg import sql

from provisioner.reconcile.access import GrantBlocked
from provisioner.reconcile.tokenizing import policy_tokenizer
from provisioner.tokenize import RunRecorder, Tenants, TokenizeOptions, load_policy_file
from tests.reconcile.conftest import Site, site  # noqa: F401  (the fixture, for this folder)

PORT_FILE = "published/customers/customers.parquet"


@dataclass
class Port:
    producer: str
    consumer: str
    consumer_id: str
    port_id: str
    recorder: RunRecorder


def approved_port(site: Site, name: str, tenant_db: str, recorder_db: str, tmp_path: Path, mode: str) -> Port:  # noqa: F811
    """A producer whose tenant table has a ``notes`` column full of addresses the policy does not tokenize, a
    consumer, and the consumer's approved request for the producer's ``customers`` port."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(tenant_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text, notes text)")
        with conn.cursor() as cur, cur.copy("COPY customers FROM STDIN") as copy:
            for i in range(200):
                copy.write_row((i, f"person{i}@example.com", f"wrote to friend{i}@mail.nl on monday"))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT, UPDATE ON customers TO {}").format(sql.Identifier(role)))
    producer, consumer = f"{name}-prod", f"{name}-cons"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"policies:\n  - producer: {producer}\n    output_port: customers\n    tenant: demo\n"
        f"    residual_pii: {mode}\n"
        "    tables:\n      - {schema: public, table: customers, columns: [email]}\n"
    )
    recorder = RunRecorder(recorder_db)
    site.with_tokenizer(
        policy_tokenizer(
            load_policy_file(policy),
            TokenizeOptions(key="gate-access-key"),
            Tenants.from_mapping({"demo": {"DSN": psycopg.conninfo.make_conninfo(tenant_db, user=role)}}),
            recorder,
        )
    )
    state = site.portal_state
    p = state.create_product("Producer", producer, notify=False)
    c = state.create_product("Consumer", consumer, notify=False)
    for product in (p, c):
        site.reconcilers.reconcile_product(product.id)
    site.s3.client("s3").put_object(Bucket=site.config.bucket, Key=f"{producer}/{PORT_FILE}", Body=b"PAR1")
    port = state.create_output_port(p.id, "Customers", namespace="customers", notify=False)
    state.request_access(c.id, port.id, notify=False)
    state.approve(port.id, c.id, notify=False)
    return Port(producer, consumer, c.id, port.id, recorder)


def gate_runs(recorder: RunRecorder) -> list:
    return [r for r in recorder.last(20) if r.kind == "gate"]


def test_fail_blocks_the_grant_when_notes_hold_emails(
    site: Site,  # noqa: F811
    unique_name: str,
    pg_empty_url: str,
    pg_url: str,
    tmp_path: Path,
) -> None:
    port = approved_port(site, unique_name, pg_empty_url, pg_url, tmp_path, "fail")

    with pytest.raises(GrantBlocked, match=r"residual PII .*public\.customers\.notes \(email\).*grant blocked"):
        site.reconcilers.reconcile_access(port.consumer_id)

    assert site.state.grants_of(port.consumer_id) == []
    outcome = site.state.tokenize_outcomes()[port.port_id]
    assert outcome["status"] == "FAILURE" and "public.customers.notes (email)" in outcome["error"]
    with pytest.raises(botocore.exceptions.ClientError):
        site.s3_as(port.consumer).get_object(Bucket=site.config.bucket, Key=f"{port.producer}/{PORT_FILE}")
    (gate,) = gate_runs(port.recorder)
    assert gate.result == "FAILURE" and gate.detail["blocked"] is True
    assert [f["column"] for f in gate.detail["findings"]] == ["notes"]


def test_warn_grants_and_records_the_finding(
    site: Site,  # noqa: F811
    unique_name: str,
    pg_empty_url: str,
    pg_url: str,
    tmp_path: Path,
) -> None:
    port = approved_port(site, unique_name, pg_empty_url, pg_url, tmp_path, "warn")

    site.reconcilers.reconcile_access(port.consumer_id)

    assert [g.producer_namespace for g in site.state.grants_of(port.consumer_id)] == [port.producer]
    assert site.state.tokenize_outcomes()[port.port_id]["status"] == "SUCCESS"
    body = site.s3_as(port.consumer).get_object(Bucket=site.config.bucket, Key=f"{port.producer}/{PORT_FILE}")
    assert body["Body"].read() == b"PAR1"
    (gate,) = gate_runs(port.recorder)
    assert gate.result == "SUCCESS" and gate.detail["blocked"] is False and gate.detail["mode"] == "warn"
    assert gate.detail["findings"] == [
        {
            "table": "public.customers",
            "column": "notes",
            "kinds": ["email"],
            "score": 1.0,
            "matched": 200,
            "sampled": 200,
        }
    ]
