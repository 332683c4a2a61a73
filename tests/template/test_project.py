"""The scaffolded SQLMesh project works end to end against an S3 store that enforces IAM.

One producer is scaffolded, planned and published per module (see conftest.py); consumers are only
rendered and run consume.py, so the module invokes sqlmesh once.
"""

from __future__ import annotations

import sys
from pathlib import Path

import botocore.exceptions
import duckdb
import pytest

from provisioner.names import Namespace
from provisioner.storage.policy import ReadGrant
from tests.template.conftest import Product, Store, grant, run, scaffold_product

pytestmark = [pytest.mark.sqlmesh, pytest.mark.slow]

# seed/raw/orders.csv of the template, aggregated per customer: (customer, orders, total)
EXPECTED_MART = [("acme", 3, 170.50), ("globex", 2, 99.99), ("initech", 1, 300.00)]
MART_QUERY = "SELECT customer, order_count, CAST(total_amount AS DOUBLE) FROM {} ORDER BY customer"


def _rounded(rows: list[tuple]) -> list[tuple[str, int, float]]:
    return [(c, int(n), round(t, 2)) for c, n, t in rows]


def _denied(output: str) -> bool:
    return "403" in output or "AccessDenied" in output


def test_plan_reads_raw_data_from_s3_runs_the_tests_and_builds_the_mart(producer: tuple[Product, str]) -> None:
    product, plan_output = producer
    assert "Successfully Ran `1` Tests" in plan_output
    assert "audits passed" in plan_output
    con = duckdb.connect(str(product.path / "product.duckdb"), read_only=True)
    try:
        assert _rounded(con.execute(MART_QUERY.format("marts.customer_orders")).fetchall()) == EXPECTED_MART
        assert con.execute("SELECT count(*) FROM staging.stg_orders").fetchone() == (6,)
    finally:
        con.close()


def _port_file(product: Product, port: str) -> str:
    return f"{product.namespace}/published/{Namespace(port).store_name}/customer_orders.parquet"


def test_publish_writes_each_mart_into_the_folders_of_its_output_ports(
    producer: tuple[Product, str], store: Store, tmp_path: Path
) -> None:
    product, _ = producer
    listed = store.admin().list_objects_v2(Bucket=store.bucket, Prefix=f"{product.namespace}/published/")
    assert sorted(o["Key"] for o in listed.get("Contents", [])) == sorted(
        [_port_file(product, "customers"), _port_file(product, "internal+eu")]
    )
    local = tmp_path / "customer_orders.parquet"
    store.admin().download_file(store.bucket, _port_file(product, "customers"), str(local))
    rows = duckdb.execute(MART_QUERY.format(f"read_parquet('{local}')")).fetchall()
    assert _rounded(rows) == EXPECTED_MART


def test_the_secret_key_lives_only_in_dot_env(producer: tuple[Product, str]) -> None:
    product, plan_output = producer
    secret = product.secret_key.encode()
    assert secret not in plan_output.encode()
    leaked = [
        str(p.relative_to(product.path))
        for p in product.path.rglob("*")
        if p.is_file() and not p.is_symlink() and p.name != ".env" and secret in p.read_bytes()
    ]
    assert leaked == []
    assert secret in (product.path / ".env").read_bytes()


def test_consumer_reads_exactly_the_approved_output_port(
    producer: tuple[Product, str], store: Store, home: Path, tmp_path: Path
) -> None:
    """Issue 12 §2: S3_READ_PREFIXES lists the port's folder; consume.py reads it, and nothing else is readable."""
    product, _ = producer
    consumer = scaffold_product(store, tmp_path, readable=[ReadGrant(product.namespace, Namespace("customers"))])
    result = run([sys.executable, "consume.py"], consumer.path, home)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"s3://{store.bucket}/{_port_file(product, 'customers')}: 3 rows" in result.stdout
    assert "'acme', 3" in result.stdout
    assert "internal" not in result.stdout  # the other port is not listed, let alone read

    other_folder = f"{product.namespace}/published/{Namespace('internal+eu').store_name}"
    other_port = run([sys.executable, "consume.py", other_folder], consumer.path, home)
    assert other_port.returncode == 1 and _denied(other_port.stderr), other_port.stderr
    s3 = store.server.client("s3", consumer.access_key, consumer.secret_key)
    for key in (_port_file(product, "internal+eu"), f"{product.namespace}/raw/orders.csv"):
        with pytest.raises(botocore.exceptions.ClientError) as denied:
            s3.get_object(Bucket=store.bucket, Key=key)
        assert denied.value.response["Error"]["Code"] == "AccessDenied", key


def test_consumer_is_denied_before_approval_and_after_revocation(
    producer: tuple[Product, str], store: Store, home: Path, tmp_path: Path
) -> None:
    product, _ = producer
    consumer = scaffold_product(store, tmp_path)  # no grant yet: the access request is pending
    read = [sys.executable, "consume.py", f"{product.namespace}/published/customers"]

    before = run(read, consumer.path, home)
    assert before.returncode == 1
    assert _denied(before.stderr), before.stderr
    assert "access request" in before.stderr

    grant(store, consumer, [ReadGrant(product.namespace, Namespace("customers"))])  # approved
    approved = run(read, consumer.path, home)
    assert approved.returncode == 0, approved.stdout + approved.stderr
    assert "customer_orders.parquet: 3 rows" in approved.stdout

    grant(store, consumer, [])  # revoked
    after = run(read, consumer.path, home)
    assert after.returncode == 1
    assert _denied(after.stderr), after.stderr


def test_a_products_key_cannot_write_into_another_products_published_prefix(
    producer: tuple[Product, str], store: Store, home: Path, tmp_path: Path
) -> None:
    product, _ = producer
    other = scaffold_product(store, tmp_path, readable=[ReadGrant(product.namespace, Namespace("customers"))])
    key = _port_file(product, "customers")
    target = f"s3://{store.bucket}/{key}"
    before = store.admin().head_object(Bucket=store.bucket, Key=key)
    script = (
        "import duckdb_s3\n"
        "con = duckdb_s3.connect()\n"
        f"con.execute(\"COPY (SELECT 'forged' AS customer) TO '{target}' (FORMAT parquet)\")\n"
    )
    forged = run([sys.executable, "-c", script], other.path, home)
    assert forged.returncode != 0
    assert _denied(forged.stderr), forged.stderr
    after = store.admin().head_object(Bucket=store.bucket, Key=key)
    assert after["ETag"] == before["ETag"]
    with pytest.raises(botocore.exceptions.ClientError) as denied:
        store.server.client("s3", other.access_key, other.secret_key).put_object(
            Bucket=store.bucket, Key=f"{product.namespace}/published/customers/extra.parquet", Body=b"x"
        )
    assert denied.value.response["Error"]["Code"] == "AccessDenied"
