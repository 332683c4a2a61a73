"""Issue 5's proof: tokenize, then grant; fail closed; revoke; idempotent approvals and resyncs.

Issue 12: a grant is exactly the approved output port (§2), no grant without a tokenization decision (§3), and
revocation is never lost whatever step of a grant fails (§4).
"""

from __future__ import annotations

import json
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
PORT_FILE = "published/customers/customers.parquet"  # what the approved port "customers" publishes
RAW_FILE = "raw/customers.csv"
OTHER_PORT_FILE = "published/orders/orders.parquet"
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
    tenant_dsn: str = ""
    recorder_url: str = ""
    workdir: Path = Path()


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
    for key in (PORT_FILE, RAW_FILE, OTHER_PORT_FILE):
        admin.put_object(Bucket=site.config.bucket, Key=f"{producer}/{key}", Body=b"PAR1")
    admin.put_object(Bucket=site.config.bucket, Key=f"{third}/published/customers/secret.parquet", Body=b"PAR1")
    port = state.create_output_port(p.id, "Customers", namespace="customers", notify=False)
    state.request_access(c.id, port.id, notify=False)
    yield Pair(producer, consumer, third, p.id, c.id, port.id, pg_empty_url, role, tenant_url, pg_url, tmp_path)


def _emails(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT email FROM customers ORDER BY id")]


def test_pending_request_grants_nothing(site: Site, pair: Pair) -> None:
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert site.state.grants_of(pair.consumer_id) == []
    assert _emails(pair.tenant_url) == EMAILS  # nothing tokenized before an approval
    _denied(lambda: site.s3_as(pair.consumer).get_object(Bucket=site.config.bucket, Key=f"{pair.producer}/{PORT_FILE}"))


def test_approve_tokenizes_then_grants_read_only_and_rotates_the_key(site: Site, pair: Pair) -> None:
    old_key = site.env(pair.consumer)["S3_ACCESS_KEY"]
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)

    site.reconcilers.reconcile_access(pair.consumer_id)

    emails = _emails(pair.tenant_url)
    assert not set(emails) & set(EMAILS), "0 plaintext emails left"
    assert all(e.startswith("tok_") and e.endswith("_poc") for e in emails)
    env = site.env(pair.consumer)
    assert env["S3_READ_PREFIXES"] == f"{site.config.bucket}/{pair.producer}/published/customers/"
    assert env["S3_ACCESS_KEY"] != old_key
    assert site.user_keys(pair.consumer) == [env["S3_ACCESS_KEY"]], "the old consumer key is deleted"
    s3 = site.s3_as(pair.consumer)
    bucket = site.config.bucket
    assert s3.get_object(Bucket=bucket, Key=f"{pair.producer}/{PORT_FILE}")["Body"].read() == b"PAR1"
    _denied(lambda: s3.put_object(Bucket=bucket, Key=f"{pair.producer}/published/customers/x.parquet", Body=b"x"))
    _denied(lambda: s3.get_object(Bucket=bucket, Key=f"{pair.third}/published/customers/secret.parquet"))
    # Issue 12 §2: only the approved port's folder, never the producer's raw data or its other ports.
    _denied(lambda: s3.get_object(Bucket=bucket, Key=f"{pair.producer}/{RAW_FILE}"))
    _denied(lambda: s3.get_object(Bucket=bucket, Key=f"{pair.producer}/{OTHER_PORT_FILE}"))
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
    _denied(lambda: site.s3_as(pair.consumer).get_object(Bucket=site.config.bucket, Key=f"{pair.producer}/{PORT_FILE}"))
    run = site.state.last_runs(pair.consumer_id, limit=1)[0]
    assert run["status"] == "failure" and f"role {pair.role} lacks" in run["error"] and "UPDATE" in run["error"]
    outcome = site.state.tokenize_outcomes()[pair.port_id]
    assert outcome["status"] == "FAILURE" and "UPDATE" in outcome["error"]
    assert _emails(pair.tenant_url) == EMAILS

    with psycopg.connect(pair.tenant_url, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT UPDATE ON customers TO {}").format(sql.Identifier(pair.role)))
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert [g.producer_namespace for g in site.state.grants_of(pair.consumer_id)] == [pair.producer]
    site.s3_as(pair.consumer).get_object(Bucket=site.config.bucket, Key=f"{pair.producer}/{PORT_FILE}")


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
    key = f"{pair.producer}/{PORT_FILE}"
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
    site.portal_state.clear_faults()

    # The retry finds the product already cleaned up here, and still names the consumer that could read it.
    assert site.reconcilers.reconcile_product(pair.producer_id) == [ReconcileAccess(pair.consumer_id)]
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert site.env(pair.consumer)["S3_READ_PREFIXES"] == ""
    _denied(lambda: site.s3_as(pair.consumer).get_object(Bucket=site.config.bucket, Key=f"{pair.producer}/{PORT_FILE}"))


def test_rotation_with_a_leftover_second_key_keeps_one(site: Site, pair: Pair) -> None:
    from provisioner.names import Namespace

    leftover = site.store.create_key(Namespace(pair.consumer))  # a crash left a second key behind
    assert len(site.user_keys(pair.consumer)) == 2
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)  # rotates: AWS would refuse a third key
    keys = site.user_keys(pair.consumer)
    assert keys == [site.env(pair.consumer)["S3_ACCESS_KEY"]] and leftover.access_key_id not in keys


# --- issue 12 §3: no grant without a tokenization decision ---------------------------------------------


def _use_policy(site: Site, pair: Pair, entries: str, *, require: bool = True) -> None:
    """Reconcile from now on with a policy file of ``entries`` (YAML list items) and the require setting."""
    path = pair.workdir / f"policy-{uuid.uuid4().hex[:8]}.yaml"
    path.write_text("policies:\n" + entries)
    site.config = replace(site.config, tokenize_require_policy=require)
    site.with_tokenizer(
        policy_tokenizer(
            load_policy_file(path),
            TokenizeOptions(key=KEY),
            Tenants.from_mapping({"demo": {"DSN": pair.tenant_dsn}}),
            RunRecorder(pair.recorder_url),
        )
    )


TABLES = "    tenant: demo\n    tables:\n      - {schema: public, table: customers, columns: [email, phone]}\n"


def _can_read(site: Site, pair: Pair) -> bool:
    try:
        site.s3_as(pair.consumer).get_object(Bucket=site.config.bucket, Key=f"{pair.producer}/{PORT_FILE}")
    except botocore.exceptions.ClientError:
        return False
    return True


def test_a_restricted_port_without_a_policy_entry_waits_and_says_why(site: Site, pair: Pair) -> None:
    _use_policy(site, pair, f"  - producer: {pair.third}\n    output_port: '*'\n" + TABLES)
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)

    site.reconcilers.reconcile_access(pair.consumer_id)  # no error: a person must decide, retrying cannot help

    assert site.state.grants_of(pair.consumer_id) == [] and not _can_read(site, pair)
    run = site.state.last_runs(pair.consumer_id, limit=1)[0]
    reason = run["detail"]["waiting"][pair.port_id]
    assert "no tokenization decision for restricted output port" in reason and "tokenize: none" in reason
    assert run["detail"]["outcome"] == "waiting"
    (wait,) = [w for w in site.state.all_waits() if w.consumer_id == pair.consumer_id]
    assert wait.reason == reason and wait.output_port_namespace == "customers"

    # An explicit `tokenize: none` is a decision: granted as it is, nothing tokenized, the wait is gone.
    _use_policy(site, pair, f"  - producer: {pair.producer}\n    output_port: customers\n    tokenize: none\n")
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert _can_read(site, pair) and _emails(pair.tenant_url) == EMAILS
    (grant,) = site.state.grants_of(pair.consumer_id)
    assert "granted untokenized" in grant.tokenize_note and "tokenize: none" in grant.tokenize_note
    assert [w for w in site.state.all_waits() if w.consumer_id == pair.consumer_id] == []


def test_without_require_policy_a_port_without_an_entry_is_granted_untokenized(site: Site, pair: Pair) -> None:
    _use_policy(site, pair, f"  - producer: {pair.third}\n    output_port: '*'\n" + TABLES, require=False)
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert _can_read(site, pair) and _emails(pair.tenant_url) == EMAILS
    assert "REQUIRE_POLICY is off" in site.state.grants_of(pair.consumer_id)[0].tokenize_note


def test_an_unrestricted_port_needs_no_entry(site: Site, pair: Pair) -> None:
    _use_policy(site, pair, f"  - producer: {pair.third}\n    output_port: '*'\n" + TABLES)
    open_port = site.portal_state.create_output_port(
        pair.producer_id, "Open", namespace="customers", access_type="unrestricted", notify=False
    )
    site.portal_state.request_access(pair.consumer_id, open_port.id, notify=False)  # approved by the portal itself
    site.reconcilers.reconcile_access(pair.consumer_id)
    (grant,) = site.state.grants_of(pair.consumer_id)
    assert grant.output_port_id == open_port.id and "unrestricted" in grant.tokenize_note
    assert _can_read(site, pair)


@pytest.mark.parametrize("port", ["customer-segments", "customer.segments", "customer__segments", "customer_segments-"])
def test_a_lookalike_port_never_falls_through_untokenized(site: Site, pair: Pair, port: str) -> None:
    """The entry is for customer_segments; a port that only looks like it waits, even beside a wildcard."""
    _use_policy(
        site,
        pair,
        f"  - producer: {pair.producer}\n    output_port: '*'\n    tokenize: none\n"
        f"  - producer: {pair.producer}\n    output_port: Customer_Segments\n" + TABLES,
        require=False,
    )
    lookalike = site.portal_state.create_output_port(pair.producer_id, "Segments", namespace=port, notify=False)
    site.portal_state.request_access(pair.consumer_id, lookalike.id, notify=False)
    site.portal_state.approve(lookalike.id, pair.consumer_id, notify=False)

    site.reconcilers.reconcile_access(pair.consumer_id)

    assert site.state.grants_of(pair.consumer_id) == []
    reason = site.state.last_runs(pair.consumer_id, limit=1)[0]["detail"]["waiting"][lookalike.id]
    assert f"{pair.producer}/customer_segments look like output port {pair.producer}/{port}" in reason
    assert _emails(pair.tenant_url) == EMAILS


def test_the_exact_port_matches_its_entry_after_normalisation(site: Site, pair: Pair) -> None:
    _use_policy(site, pair, f"  - producer: {pair.producer.upper()}\n    output_port: ' Customers '\n" + TABLES)
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert _can_read(site, pair) and not set(_emails(pair.tenant_url)) & set(EMAILS)


# --- issue 12 §4: revocation is never lost ---------------------------------------------------------------


class Crash(RuntimeError):
    """The process died here (injected)."""


FAULT_STEPS = ["record", "policy", "key", "env"]


def _inject_fault(site: Site, monkeypatch: pytest.MonkeyPatch, step: str) -> dict[str, list[str]]:
    """Make the next grant crash right after ``step`` happened; count the keys issued from now on."""
    from provisioner import scaffold

    armed = [step]
    issued: dict[str, list[str]] = {"keys": []}

    def after(target: object, name: str, when: str, predicate=lambda *a, **k: True) -> None:
        real = getattr(target, name)

        def wrapper(*args, **kwargs):
            result = real(*args, **kwargs)
            if name == "create_key":
                issued["keys"].append(result.access_key_id)
            if armed and armed[0] == when and predicate(*args, **kwargs):
                armed.clear()
                raise Crash(f"crashed after the {when} step")
            return result

        monkeypatch.setattr(target, name, wrapper)

    after(site.state, "add_grants", "record")
    after(site.store, "ensure_user", "policy")
    after(site.store, "create_key", "key")
    after(scaffold, "write_env", "env", lambda path, values: "S3_SECRET_KEY" in values)
    return issued


def _policy_opens_producer(site: Site, pair: Pair) -> bool:
    from provisioner.names import Namespace

    return f"/{pair.producer}/published/" in json.dumps(site.store.user_policy(Namespace(pair.consumer)))


@pytest.mark.parametrize("step", FAULT_STEPS)
def test_a_fault_at_any_grant_step_then_a_revoke_leaves_no_access(
    site: Site, pair: Pair, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    issued = _inject_fault(site, monkeypatch, step)
    with pytest.raises(Crash):
        site.reconcilers.reconcile_access(pair.consumer_id)
    keys_of_the_crash = list(issued["keys"])
    site.portal_state.revoke(pair.port_id, pair.consumer_id, notify=False)

    site.reconcilers.reconcile_access(pair.consumer_id)  # the next access reconcile of that consumer

    assert not _policy_opens_producer(site, pair)
    assert not _can_read(site, pair)
    live = site.user_keys(pair.consumer)
    assert live == [site.env(pair.consumer)["S3_ACCESS_KEY"]], "one live key: the one in .env"
    assert not set(keys_of_the_crash) & set(live), "a key issued by the crashed run is gone"
    assert len(issued["keys"]) - len(keys_of_the_crash) <= 1, "the recovery issued at most one key"
    assert site.state.grants_of(pair.consumer_id) == []
    before = list(issued["keys"])
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert issued["keys"] == before, "a converged consumer issues no key"


@pytest.mark.parametrize(("step", "keys_in_retry"), [("record", 1), ("policy", 1), ("key", 1), ("env", 0)])
def test_a_retry_after_a_fault_grants_once_and_never_issues_a_key_twice(
    site: Site, pair: Pair, monkeypatch: pytest.MonkeyPatch, step: str, keys_in_retry: int
) -> None:
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    issued = _inject_fault(site, monkeypatch, step)
    with pytest.raises(Crash):
        site.reconcilers.reconcile_access(pair.consumer_id)
    crashed = len(issued["keys"])

    site.reconcilers.reconcile_access(pair.consumer_id)  # the job's retry
    site.reconcilers.reconcile_access(pair.consumer_id)  # and a resync after it

    # "key": the crashed run's secret never reached the .env, so one more key is the only way to deliver one.
    assert len(issued["keys"]) - crashed == keys_in_retry
    assert _can_read(site, pair)
    assert site.user_keys(pair.consumer) == [site.env(pair.consumer)["S3_ACCESS_KEY"]]
    assert site.env(pair.consumer)["S3_READ_PREFIXES"] == f"{site.config.bucket}/{pair.producer}/published/customers/"


def test_a_product_reconcile_never_puts_back_a_revoked_grant(site: Site, pair: Pair) -> None:
    """The product reconcile (resync, verify) computes grants from the portal now, not from the grant rows."""
    site.portal_state.approve(pair.port_id, pair.consumer_id, notify=False)
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert _can_read(site, pair)
    site.portal_state.revoke(pair.port_id, pair.consumer_id, notify=False)  # its webhook is lost

    follow_up = site.reconcilers.reconcile_product(pair.consumer_id)

    assert not _policy_opens_producer(site, pair) and not _can_read(site, pair)
    assert ReconcileAccess(pair.consumer_id) in follow_up  # the .env still names the port: the key is settled next
    site.reconcilers.reconcile_access(pair.consumer_id)
    assert site.env(pair.consumer)["S3_READ_PREFIXES"] == ""


def test_grants_beyond_the_policy_size_limit_wait_with_a_clear_error(site: Site, pair: Pair) -> None:
    """AWS inline policies stop at 2,048 characters: what fits is granted, the rest waits and the run fails loudly."""
    from provisioner.names import Namespace
    from provisioner.storage.policy import INLINE_POLICY_LIMIT, PolicyTooLarge, policy_json

    _use_policy(site, pair, f"  - producer: {pair.producer}\n    output_port: '*'\n    tokenize: none\n")
    ports = []
    for i in range(14):
        port = site.portal_state.create_output_port(
            pair.producer_id, f"Port {i}", namespace=f"port-{i:02d}-" + "x" * 24, notify=False
        )
        site.portal_state.request_access(pair.consumer_id, port.id, notify=False)
        site.portal_state.approve(port.id, pair.consumer_id, notify=False)
        ports.append(port.id)

    with pytest.raises(PolicyTooLarge, match="2,048-character inline policy limit"):
        site.reconcilers.reconcile_access(pair.consumer_id)

    granted = {g.output_port_id for g in site.state.grants_of(pair.consumer_id)}
    waiting = {w.output_port_id: w.reason for w in site.state.all_waits() if w.consumer_id == pair.consumer_id}
    assert granted and waiting and granted | set(waiting) == set(ports) and not granted & set(waiting)
    assert all("2,048-character" in reason for reason in waiting.values())
    policy = site.store.user_policy(Namespace(pair.consumer))
    assert len(policy_json(policy)) <= INLINE_POLICY_LIMIT
    assert len(site.env(pair.consumer)["S3_READ_PREFIXES"].split(",")) == len(granted)

    # A revocation still goes through while other ports wait for room.
    revoked = sorted(granted)[0]
    site.portal_state.revoke(revoked, pair.consumer_id, notify=False)
    with pytest.raises(PolicyTooLarge):
        site.reconcilers.reconcile_access(pair.consumer_id)
    assert revoked not in {g.output_port_id for g in site.state.grants_of(pair.consumer_id)}
    assert f"port-{ports.index(revoked):02d}" not in json.dumps(site.store.user_policy(Namespace(pair.consumer)))
