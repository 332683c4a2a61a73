"""Issue 5's proof: tokenize, then grant; fail closed; revoke; idempotent approvals and resyncs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import botocore.exceptions
import psycopg
import pytest
from psycopg import sql

from provisioner.events import ReconcileAccess
from provisioner.reconcile.access import GrantBlocked
from provisioner.reconcile.tokenizing import policy_tokenizer
from provisioner.tokenize import RunRecorder, Tenants, TokenizeOptions, load_policy_file
from tests.reconcile.conftest import Site

KEY = "test-tokenize-key"
EMAILS = ["ada@example.com", "grace@example.org", "linus@example.net"]


@dataclass
class Pair:
    producer: str
    consumer: str
    third: str
    producer_id: str
    consumer_id: str
    port_id: str
    tenant_url: str
    role: str


def _denied(call) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as err:
        call()
    assert err.value.response["Error"]["Code"] in {"AccessDenied", "InvalidAccessKeyId"}


@pytest.fixture
def pair(site: Site, unique_name: str, pg_empty_url: str, pg_url: str, tmp_path: Path) -> Iterator[Pair]:
    """A provisioned producer (with a customers table in its tenant database), a consumer and a third product."""
    role = f"r_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, email text, phone text)")
        for i, email in enumerate(EMAILS):
            conn.execute("INSERT INTO customers VALUES (%s, %s, %s)", (i, email, f"+32 470 00 00 0{i}"))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT, UPDATE ON customers TO {}").format(sql.Identifier(role)))
    tenant_url = psycopg.conninfo.make_conninfo(pg_empty_url, user=role)
    producer, consumer, third = f"{unique_name}-prod", f"{unique_name}-cons", f"{unique_name}-third"
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        f"policies:\n  - producer: {producer}\n    output_port: '*'\n    tenant: demo\n    max_columns: 4\n"
        "    tables:\n      - {schema: public, table: customers, columns: [email, phone]}\n"
    )
    site.with_tokenizer(
        policy_tokenizer(
            load_policy_file(policy),
            TokenizeOptions(key=KEY),
            Tenants.from_mapping({"demo": {"DSN": tenant_url}}),
            RunRecorder(pg_url),
        )
    )
    state = site.portal_state
    p = state.create_product("Producer", producer, notify=False)
    c = state.create_product("Consumer", consumer, notify=False)
    t = state.create_product("Third", third, notify=False)
    for product in (p, c, t):
        site.reconcilers.reconcile_product(product.id)
    admin = site.s3.client("s3")
    admin.put_object(Bucket=site.config.bucket, Key=f"{producer}/published/customers.parquet", Body=b"PAR1")
    admin.put_object(Bucket=site.config.bucket, Key=f"{third}/published/secret.parquet", Body=b"PAR1")
    port = state.create_output_port(p.id, "Customers", namespace="customers", notify=False)
    state.request_access(c.id, port.id, notify=False)
    yield Pair(producer, consumer, third, p.id, c.id, port.id, pg_empty_url, role)


def _emails(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT email FROM customers ORDER BY id")]


def test_pending_request_grants_nothing(site: Site, pair: Pair) -> None:
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert site.state.grants_of(pair.consumer_id) == []
    assert _emails(pair.tenant_url) == EMAILS  # nothing tokenized before an approval
    _denied(
        lambda: site.s3_as(pair.consumer).get_object(
            Bucket=site.config.bucket, Key=f"{pair.producer}/published/customers.parquet"
        )
    )


def test_approve_tokenizes_then_grants_read_only_and_rotates_the_key(site: Site, pair: Pair) -> None:
    old_key = site.env(pair.consumer)["S3_ACCESS_KEY"]
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)

    site.reconcilers.reconcile_access(pair.consumer_id)

    emails = _emails(pair.tenant_url)
    assert not set(emails) & set(EMAILS), "0 plaintext emails left"
    assert all(e.startswith("tok_") and e.endswith("_poc") for e in emails)
    env = site.env(pair.consumer)
    assert env["S3_READ_PREFIXES"] == pair.producer
    assert env["S3_ACCESS_KEY"] != old_key
    assert site.user_keys(pair.consumer) == [env["S3_ACCESS_KEY"]], "the old consumer key is deleted"
    s3 = site.s3_as(pair.consumer)
    bucket = site.config.bucket
    assert s3.get_object(Bucket=bucket, Key=f"{pair.producer}/published/customers.parquet")["Body"].read() == b"PAR1"
    _denied(lambda: s3.put_object(Bucket=bucket, Key=f"{pair.producer}/published/x.parquet", Body=b"x"))
    _denied(lambda: s3.get_object(Bucket=bucket, Key=f"{pair.third}/published/secret.parquet"))
    s3.put_object(Bucket=bucket, Key=f"{pair.consumer}/own.csv", Body=b"still writes its own prefix")
    grants = site.state.grants_of(pair.consumer_id)
    assert [g.producer_namespace for g in grants] == [pair.producer]
    assert "tokenized 3 row(s)" in grants[0].tokenize_note
    assert site.state.tokenize_outcomes()[pair.port_id]["status"] == "SUCCESS"


def test_tokenization_failure_blocks_the_grant_until_fixed(site: Site, pair: Pair) -> None:
    with psycopg.connect(pair.tenant_url, autocommit=True) as conn:
        conn.execute(sql.SQL("REVOKE UPDATE ON customers FROM {}").format(sql.Identifier(pair.role)))
    old_key = site.env(pair.consumer)["S3_ACCESS_KEY"]
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)

    with pytest.raises(GrantBlocked, match=r"tokenization of .* failed"):
        site.reconcilers.reconcile_access(pair.consumer_id)

    assert site.state.grants_of(pair.consumer_id) == []
    assert site.env(pair.consumer)["S3_ACCESS_KEY"] == old_key
    _denied(
        lambda: site.s3_as(pair.consumer).get_object(
            Bucket=site.config.bucket, Key=f"{pair.producer}/published/customers.parquet"
        )
    )
    run = site.state.last_runs(pair.consumer_id, limit=1)[0]
    assert run["status"] == "failure" and f"role {pair.role} lacks" in run["error"] and "UPDATE" in run["error"]
    outcome = site.state.tokenize_outcomes()[pair.port_id]
    assert outcome["status"] == "FAILURE" and "UPDATE" in outcome["error"]
    assert _emails(pair.tenant_url) == EMAILS

    with psycopg.connect(pair.tenant_url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT UPDATE ON customers TO {}").format(sql.Identifier(pair.role)))
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert [g.producer_namespace for g in site.state.grants_of(pair.consumer_id)] == [pair.producer]
    site.s3_as(pair.consumer).get_object(Bucket=site.config.bucket, Key=f"{pair.producer}/published/customers.parquet")


def test_revoke_removes_read_and_rotates(site: Site, pair: Pair) -> None:
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)
    granted_env = site.env(pair.consumer)
    site.portal_state.revoke(pair.port_id, pair.consumer_id, notify=False)

    site.reconcilers.reconcile_access(pair.consumer_id)

    env = site.env(pair.consumer)
    assert env["S3_ACCESS_KEY"] != granted_env["S3_ACCESS_KEY"]
    assert env["S3_READ_PREFIXES"] == ""
    assert granted_env["S3_ACCESS_KEY"] not in site.user_keys(pair.consumer), "the old key no longer exists"
    key = f"{pair.producer}/published/customers.parquet"
    _denied(lambda: site.s3_as(pair.consumer).get_object(Bucket=site.config.bucket, Key=key))
    old = site.s3.client("s3", granted_env["S3_ACCESS_KEY"], granted_env["S3_SECRET_KEY"])
    _denied(lambda: old.get_object(Bucket=site.config.bucket, Key=key))
    assert site.state.grants_of(pair.consumer_id) == []


def test_duplicate_approvals_and_resyncs_change_nothing(site: Site, pair: Pair, pg_url: str) -> None:
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)
    keys = site.user_keys(pair.consumer)
    tokenized = _emails(pair.tenant_url)
    runs_before = RunRecorder(pg_url).last(100)
    site.portal_state.reset_counters()

    for _ in range(3):
        site.reconcilers.reconcile_access(pair.consumer_id)
        assert site.reconcilers.resync() == []

    assert site.user_keys(pair.consumer) == keys
    assert _emails(pair.tenant_url) == tokenized
    assert len(RunRecorder(pg_url).last(100)) == len(runs_before), "no extra tokenization runs"
    assert sum(site.portal_state.writes.values()) == 0


def test_resync_finds_a_missed_approval(site: Site, pair: Pair) -> None:
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)  # the webhook was lost
    assert ReconcileAccess(pair.consumer_id) in site.reconcilers.resync()


def test_output_port_decision_names_its_consumers(site: Site, pair: Pair) -> None:
    assert site.reconcilers.reconcile_output_port(pair.producer_id, pair.port_id) == [ReconcileAccess(pair.consumer_id)]


def test_deleting_a_producer_sends_its_consumers_to_reconcile(site: Site, pair: Pair) -> None:
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)
    site.portal_state.delete_product(pair.producer_id, notify=False)
    assert site.reconcilers.reconcile_product(pair.producer_id) == [ReconcileAccess(pair.consumer_id)]
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert site.state.grants_of(pair.consumer_id) == []
    assert site.env(pair.consumer)["S3_READ_PREFIXES"] == ""


def test_a_deleted_producer_loses_its_readers_even_if_the_port_stays_approved(site: Site, pair: Pair) -> None:
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)
    record = site.state.product(pair.producer_id)
    assert record is not None
    # The producer was cleaned up here, while the portal still lists the consumer's port as approved.
    site.state.save_product(replace(record, state="deleted"))

    site.reconcilers.reconcile_access(pair.consumer_id)  # no GrantBlocked: there is nothing to wait for

    assert site.state.grants_of(pair.consumer_id) == []
    assert site.env(pair.consumer)["S3_READ_PREFIXES"] == ""
    assert "was deleted" in str(site.state.last_runs(pair.consumer_id, limit=1)[0]["detail"]["skipped"])


def test_an_interrupted_producer_clean_up_still_hands_over_its_readers(site: Site, pair: Pair) -> None:
    from provisioner.errors import PortalUnavailable

    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)
    site.portal_state.delete_product(pair.producer_id, notify=False)
    site.portal_state.fail_next(20, 503, methods=("DELETE",))  # the finalizer cannot be removed yet
    with pytest.raises(PortalUnavailable):
        site.reconcilers.reconcile_product(pair.producer_id)
    site.portal_state._faults.clear()

    # The retry finds the product already cleaned up here, and still names the consumer that could read it.
    assert site.reconcilers.reconcile_product(pair.producer_id) == [ReconcileAccess(pair.consumer_id)]
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert site.env(pair.consumer)["S3_READ_PREFIXES"] == ""
    _denied(
        lambda: site.s3_as(pair.consumer).get_object(
            Bucket=site.config.bucket, Key=f"{pair.producer}/published/customers.parquet"
        )
    )


def test_rotation_with_a_leftover_second_key_keeps_one(site: Site, pair: Pair) -> None:
    from provisioner.names import Namespace

    leftover = site.store.create_key(Namespace(pair.consumer))  # a crash left a second key behind
    assert len(site.user_keys(pair.consumer)) == 2
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)  # rotates: AWS would refuse a third key
    keys = site.user_keys(pair.consumer)
    assert keys == [site.env(pair.consumer)["S3_ACCESS_KEY"]] and leftover.access_key_id not in keys
