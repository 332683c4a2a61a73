"""Issue 18: S3 and BigQuery as two targets of one site. Each converges on its own, its outcome is recorded, and a
failure in one never undoes or blocks the other; access follows the portal's approvals in both."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from provisioner.errors import StorageUnavailable
from provisioner.events import ReconcileAccess, ReconcileProduct
from provisioner.names import Namespace
from provisioner.reconcile import Reconcilers, ScopedTarget
from provisioner.reconcile.scope import Scope
from provisioner.targets.base import TargetProduct
from provisioner.targets.bigquery import BigQueryConfig, BigQueryTarget, build_client
from provisioner.testing.bigquery_http import FakeBigQueryHTTP
from provisioner.testing.bqemulator import Emulator
from tests.fixtures.bigquery import PROJECT, fake_client
from tests.reconcile.conftest import Site

pytestmark = pytest.mark.bigquery


def _names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"prod_{tag}", f"cons_{tag}"


def _principals(*namespaces: str) -> dict[str, str]:
    return {ns: f"group:{ns}@example.com" for ns in namespaces}


def _with_target(site: Site, target: BigQueryTarget, scope: Scope | None = None) -> Reconcilers:
    site.config = replace(site.config, tokenize_require_policy=False)  # ports are granted untokenized here
    site.reconcilers = Reconcilers(
        portal=site.client,
        store=site.store,
        state=site.state,
        config=site.config,
        targets=[ScopedTarget(target, scope or Scope())],
    )
    return site.reconcilers


def _emulated(emulator: Emulator, *namespaces: str, call_seconds: float = 30.0) -> BigQueryTarget:
    config = BigQueryConfig(project=PROJECT, endpoint=emulator.endpoint, principals=_principals(*namespaces))
    return BigQueryTarget(config, build_client(config), call_seconds=call_seconds)


def _faked(fake: FakeBigQueryHTTP, *namespaces: str) -> BigQueryTarget:
    return BigQueryTarget(
        BigQueryConfig(project=PROJECT, principals=_principals(*namespaces)), fake_client(fake), call_seconds=2.0
    )


def _bq(run: dict) -> dict:
    return run["detail"]["targets"]["bigquery"]


def _approved_pair(site: Site, producer: str, consumer: str) -> tuple[str, str, str]:
    state = site.portal_state
    producer_id, consumer_id = site.provisioned(producer), site.provisioned(consumer)
    port = state.create_output_port(producer_id, "Orders", namespace="orders", notify=False)
    state.request_access(consumer_id, port.id, notify=False)
    state.approve(port.id, consumer_id, notify=False)
    return producer_id, consumer_id, port.id


# -- S3 and BigQuery together ----------------------------------------------------------------------------------------
def test_s3_and_bigquery_together_for_one_product(site: Site, bq_emulator: Emulator) -> None:
    producer, _ = _names()
    target = _with_target(site, _emulated(bq_emulator, producer)).targets.targets[0].target
    product_id = site.provisioned(producer)

    env = site.env(producer)
    assert env["S3_ACCESS_KEY"] in site.user_keys(producer)  # S3: user, key, .env as always
    assert site.s3.client("s3").list_objects_v2(Bucket=site.config.bucket, Prefix=f"{producer}/")["KeyCount"] >= 1
    dataset = f"dp_{Namespace(producer).sql_name}"
    assert env["BQ_DATASET"] == dataset and env["BQ_PROJECT"] == PROJECT  # BigQuery, in the same .env
    report = target.report(TargetProduct(product_id, Namespace(producer)))
    assert report["exists"] is True
    assert report["access"] == [{"role": "WRITER", "groupByEmail": f"{producer}@example.com"}]
    run = site.state.last_runs(product_id, 1)[0]
    assert run["status"] == "success"
    assert "user" in run["steps"] and "bigquery.dataset" in run["steps"]
    assert _bq(run)["resources"]["outcome"] == "converged"
    assert [(s.target, s.aspect, s.state) for s in site.state.target_states(product_id)] == [
        ("bigquery", "resources", "converged")
    ]

    probes = site.reconcilers.probes()  # what `provisioner check` prints, one line per target
    assert list(probes) == ["s3", "bigquery"]
    assert probes["s3"] == f"ok: s3 store answers for bucket {site.config.bucket}"
    assert probes["bigquery"].startswith(f"ok: bigquery project {PROJECT} answers at http://127.0.0.1:")

    site.reconcilers.reconcile_product(product_id)  # converged: nothing changes in either target
    again = site.state.last_runs(product_id, 1)[0]
    assert again["steps"] == [] and again["detail"]["outcome"] == "unchanged"


def test_a_bigquery_failure_does_not_undo_s3_and_resync_tries_it_again(site: Site, bq_emulator: Emulator) -> None:
    producer, _ = _names()
    dead = BigQueryConfig(project=PROJECT, endpoint="http://127.0.0.1:9", principals=_principals(producer))
    _with_target(site, BigQueryTarget(dead, build_client(dead), call_seconds=1.0))
    product_id = site.provisioned(producer)

    run = site.state.last_runs(product_id, 1)[0]
    assert run["status"] == "success"  # S3 converged and stands
    assert site.env(producer)["S3_ACCESS_KEY"] in site.user_keys(producer)
    assert "BQ_DATASET" not in site.env(producer)
    assert _bq(run)["resources"]["outcome"] == "failed"
    assert "cannot reach" in _bq(run)["resources"]["error"] or "BigQuery" in _bq(run)["resources"]["error"]
    assert ReconcileProduct(product_id) in site.reconcilers.resync()  # the failed target is tried again

    _with_target(site, _emulated(bq_emulator, producer))  # BigQuery is back
    site.reconcilers.reconcile_product(product_id)
    assert site.env(producer)["BQ_DATASET"] == f"dp_{Namespace(producer).sql_name}"
    assert [s.state for s in site.state.target_states(product_id)] == ["converged"]
    assert ReconcileProduct(product_id) not in site.reconcilers.resync()


class _FailingPolicies:
    """The store, but writing a user's policy fails (S3 down in the middle of a grant)."""

    def __init__(self, store) -> None:
        self._store = store
        self.fail = False

    def ensure_user(self, *args, **kwargs):
        if self.fail:
            raise StorageUnavailable("the store is down")
        return self._store.ensure_user(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_an_s3_failure_does_not_block_the_bigquery_grant(site: Site, bq_fake: FakeBigQueryHTTP) -> None:
    producer, consumer = _names()
    failing = _FailingPolicies(site.store)
    site.store = failing  # type: ignore[assignment]
    _with_target(site, _faked(bq_fake, producer, consumer))
    _, consumer_id, _ = _approved_pair(site, producer, consumer)

    failing.fail = True
    with pytest.raises(StorageUnavailable):
        site.reconcilers.reconcile_access(consumer_id)
    dataset = f"dp_{Namespace(producer).sql_name}"
    assert {"role": "READER", "groupByEmail": f"{consumer}@example.com"} in bq_fake.datasets[dataset]["access"]
    run = site.state.last_runs(consumer_id, 1)[0]
    assert run["status"] == "failure" and _bq(run)["grants"]["outcome"] == "converged"


# -- grants: approve, revoke, 412 ------------------------------------------------------------------------------------
def test_approve_adds_the_reader_entry_revoke_removes_it_and_a_412_is_retried(
    site: Site, bq_fake: FakeBigQueryHTTP
) -> None:
    producer, consumer = _names()
    _with_target(site, _faked(bq_fake, producer, consumer))
    _, consumer_id, port_id = _approved_pair(site, producer, consumer)
    dataset = f"dp_{Namespace(producer).sql_name}"
    reader = {"role": "READER", "groupByEmail": f"{consumer}@example.com"}
    other = {"role": "READER", "userByEmail": "auditor@example.com"}
    bq_fake.change_before_next_patch(dataset, lambda d: d["access"].append(other))  # a concurrent writer: 412

    before = len(bq_fake.patches(dataset))
    site.reconcilers.reconcile_access(consumer_id)
    patches = bq_fake.patches(dataset)[before:]
    assert len(patches) == 2  # refused once with 412, then written over the newer etag
    assert patches[1].body == {"access": [{"role": "WRITER", "groupByEmail": f"{producer}@example.com"}, other, reader]}
    assert bq_fake.datasets[dataset]["access"][-1] == reader
    assert site.env(consumer)["BQ_READ_DATASETS"] == f"{PROJECT}.{dataset}"
    held = site.state.target_grants_held("bigquery", consumer_id)
    assert [(g.consumer_id, g.resource, g.principal) for g in held] == [
        (consumer_id, dataset, f"group:{consumer}@example.com")
    ]
    # S3 granted the same approval, as it always did.
    assert f"{site.config.bucket}/{producer}/published/orders/" in site.env(consumer)["S3_READ_PREFIXES"]

    site.portal_state.revoke(port_id, consumer_id, notify=False)
    site.reconcilers.reconcile_access(consumer_id)
    assert reader not in bq_fake.datasets[dataset]["access"]
    assert other in bq_fake.datasets[dataset]["access"]  # only our entry goes
    assert site.env(consumer)["BQ_READ_DATASETS"] == ""
    assert site.state.target_grants_held("bigquery", consumer_id) == []


def test_a_revocation_while_bigquery_fails_is_applied_when_it_answers_again(
    site: Site, bq_fake: FakeBigQueryHTTP
) -> None:
    producer, consumer = _names()
    _with_target(site, _faked(bq_fake, producer, consumer))
    _, consumer_id, port_id = _approved_pair(site, producer, consumer)
    site.reconcilers.reconcile_access(consumer_id)
    dataset = f"dp_{Namespace(producer).sql_name}"
    reader = {"role": "READER", "groupByEmail": f"{consumer}@example.com"}
    assert reader in bq_fake.datasets[dataset]["access"]

    site.portal_state.revoke(port_id, consumer_id, notify=False)
    bq_fake.fail_next(100, 503)
    site.reconcilers.reconcile_access(consumer_id)  # S3 revokes; BigQuery fails, and says so
    assert "S3_READ_PREFIXES" in site.env(consumer) and producer not in site.env(consumer)["S3_READ_PREFIXES"]
    run = site.state.last_runs(consumer_id, 1)[0]
    assert _bq(run)["grants"]["outcome"] == "failed"
    assert site.state.target_grants_held("bigquery", consumer_id) != []  # still known, so it will be removed
    assert ReconcileAccess(consumer_id) in site.reconcilers.resync()

    bq_fake._faults.clear()
    site.reconcilers.reconcile_access(consumer_id)
    assert reader not in bq_fake.datasets[dataset]["access"]
    assert site.state.target_grants_held("bigquery", consumer_id) == []


def test_a_grant_is_recorded_before_it_is_written(site: Site, bq_fake: FakeBigQueryHTTP) -> None:
    producer, consumer = _names()
    _with_target(site, _faked(bq_fake, producer, consumer))
    _, consumer_id, _ = _approved_pair(site, producer, consumer)
    bq_fake.fail_next(100, 503, methods=("PATCH",))  # the write of the entry fails (it may have landed)
    site.reconcilers.reconcile_access(consumer_id)
    held = site.state.target_grants_held("bigquery", consumer_id)
    assert [g.resource for g in held] == [f"dp_{Namespace(producer).sql_name}"]


def test_a_grant_that_waited_for_the_producers_dataset_follows_once_it_exists(
    site: Site, bq_fake: FakeBigQueryHTTP
) -> None:
    producer, consumer = _names()
    _with_target(site, _faked(bq_fake, producer, consumer))
    bq_fake.fail_next(1000, 503)  # BigQuery is down while both are provisioned and the port approved
    _, consumer_id, _ = _approved_pair(site, producer, consumer)
    producer_id = site.state.live_by_namespace(producer).product_id  # type: ignore[union-attr]
    bq_fake._faults.clear()
    site.reconcilers.reconcile_access(consumer_id)  # S3 grants; BigQuery has no dataset of the producer yet
    assert "has no bigquery resources yet" in _bq(site.state.last_runs(consumer_id, 1)[0])["grants"]["waiting"][0]

    follow_up = site.reconcilers.reconcile_product(producer_id)  # the dataset is created now
    assert ReconcileAccess(consumer_id) in follow_up
    site.reconcilers.reconcile_access(consumer_id)
    dataset = f"dp_{Namespace(producer).sql_name}"
    assert {"role": "READER", "groupByEmail": f"{consumer}@example.com"} in bq_fake.datasets[dataset]["access"]


def test_a_consumer_without_a_principal_waits_and_s3_grants(site: Site, bq_fake: FakeBigQueryHTTP) -> None:
    producer, consumer = _names()
    _with_target(site, _faked(bq_fake, producer))  # no principal for the consumer
    _, consumer_id, _ = _approved_pair(site, producer, consumer)
    site.reconcilers.reconcile_access(consumer_id)
    run = site.state.last_runs(consumer_id, 1)[0]
    assert _bq(run)["grants"]["outcome"] == "waiting"
    assert "PROVISIONER_BIGQUERY_PRINCIPALS" in _bq(run)["grants"]["waiting"][0]
    assert producer in site.env(consumer)["S3_READ_PREFIXES"]


def test_the_target_scope_narrows_which_products_get_a_dataset(site: Site, bq_fake: FakeBigQueryHTTP) -> None:
    producer, _ = _names()
    _with_target(site, _faked(bq_fake, producer), Scope(tags=("bigquery",)))
    product_id = site.provisioned(producer)
    assert bq_fake.datasets == {}
    assert site.env(producer)["S3_ACCESS_KEY"]
    assert "targets" not in site.state.last_runs(product_id, 1)[0]["detail"]


# -- deletion --------------------------------------------------------------------------------------------------------
def test_deletion_keeps_the_dataset_by_default_and_delete_data_deletes_it(site: Site, bq_emulator: Emulator) -> None:
    producer, consumer = _names()
    target = _emulated(bq_emulator, producer, consumer)
    _with_target(site, target)
    producer_id, consumer_id, _ = _approved_pair(site, producer, consumer)
    site.reconcilers.reconcile_access(consumer_id)
    dataset = f"{PROJECT}.dp_{Namespace(producer).sql_name}"
    assert {"role": "READER", "groupByEmail": f"{consumer}@example.com"} in [
        e.to_api_repr() for e in target.client.get_dataset(dataset).access_entries
    ]

    site.portal_state.delete_product(producer_id, notify=False)
    site.reconcilers.reconcile_product(producer_id)
    kept = target.client.get_dataset(dataset)
    assert kept.labels["deleted"] == "true"
    assert list(kept.access_entries) == []  # every entry we added is gone
    assert site.state.target_grants_on("bigquery", producer_id) == []
    assert [(s.aspect, s.state) for s in site.state.target_states(producer_id)] == [
        ("grants", "converged"),  # what it read itself: nothing
        ("resources", "deleted"),
    ]

    other, _ = _names()
    site.config = replace(site.config, delete_data=True)
    site.reconcilers = Reconcilers(
        portal=site.client, store=site.store, state=site.state, config=site.config, targets=[ScopedTarget(target)]
    )
    target.config = replace(target.config, principals=_principals(other))
    other_id = site.provisioned(other)
    site.portal_state.delete_product(other_id, notify=False)
    site.reconcilers.reconcile_product(other_id)
    from google.api_core.exceptions import NotFound

    with pytest.raises(NotFound):
        target.client.get_dataset(f"{PROJECT}.dp_{Namespace(other).sql_name}")
