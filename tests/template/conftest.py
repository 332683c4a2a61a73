"""A freshly scaffolded producer project on moto's S3 + IAM server, shared by the template tests.

The bucket, the per-product IAM users, their inline policies (the provisioner's own document) and keys are made
here with the admin client, as the provisioner's storage adapter would, so these tests depend only on the template,
provisioner.scaffold and provisioner.storage.policy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner.names import BucketName, Namespace
from provisioner.scaffold import env_values, raw_seed_files, render_project, write_env
from provisioner.settings import default_template
from provisioner.storage.policy import ReadGrant, policy_json, product_policy
from tests.fixtures.s3 import S3Server

SQLMESH = Path(sys.executable).with_name("sqlmesh")
PORTS_YAML = 'customers: [customer_orders]\n"internal+eu": "*"\n'


@dataclass(frozen=True)
class Product:
    """A scaffolded product project and its store identity."""

    namespace: Namespace
    path: Path
    user: str
    access_key: str
    secret_key: str


@dataclass(frozen=True)
class Store:
    """moto's server plus one bucket for this module."""

    server: S3Server
    bucket: str

    def admin(self):
        return self.server.client("s3")

    def iam(self):
        return self.server.client("iam")


def grant(store: Store, product: Product, readable: list[ReadGrant]) -> None:
    """Replace the product user's inline policy with the provisioner's own document (approving or revoking)."""
    store.iam().put_user_policy(
        UserName=product.user,
        PolicyName="product",
        PolicyDocument=policy_json(product_policy(BucketName(store.bucket), product.namespace, readable)),
    )


def scaffold_product(store: Store, root: Path, *, readable: list[ReadGrant] = ()) -> Product:
    """Create the store user and key, render the project, write its .env and upload the raw seed."""
    namespace = Namespace(f"p-{uuid.uuid4().hex[:8]}")
    user = namespace.user_name
    iam = store.iam()
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    path = root / namespace
    render_project(
        default_template(),
        path,
        {
            "namespace": namespace,
            "product_id": str(uuid.uuid4()),
            "product_name": f"Product {namespace}",
            "description": "A product made by the template tests.",
            "bucket": store.bucket,
            "s3_endpoint": store.server.endpoint,
            "region": store.server.region,
        },
    )
    product = Product(namespace, path, user, key["AccessKeyId"], key["SecretAccessKey"])
    grant(store, product, list(readable))
    write_env(
        path / ".env",
        env_values(
            endpoint=store.server.endpoint,
            bucket=store.bucket,
            namespace=namespace,
            access_key=product.access_key,
            secret_key=product.secret_key,
            region=store.server.region,
            read_prefixes=[g.location(BucketName(store.bucket)) for g in readable],
        ),
    )
    admin = store.admin()
    for name, body in raw_seed_files(path):
        admin.put_object(Bucket=store.bucket, Key=f"{namespace}/raw/{name}", Body=body)
    return product


def project_env(home: Path) -> dict[str, str]:
    """The environment of a data team's shell: no S3/AWS variables leak in from the test runner."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "AWS_", "PROVISIONER_"))}
    env["HOME"] = str(home)
    return env


def run(args: list[str], project: Path, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run a command in a project folder, the way a data team would, and capture its output."""
    return subprocess.run(
        args, cwd=project, env=project_env(home), capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def store(moto_server: S3Server) -> Store:
    bucket = f"t-{uuid.uuid4().hex[:10]}"
    moto_server.client("s3").create_bucket(Bucket=bucket)
    return Store(moto_server, bucket)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def producer(store: Store, home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Product, str]]:
    """A producer project after `sqlmesh plan --auto-apply --no-prompts` and `python publish.py`.

    Its output_ports.yaml publishes the mart to two ports: ``customers`` and ``internal+eu`` (a namespace whose
    folder carries a hash).
    """
    product = scaffold_product(store, tmp_path_factory.mktemp("products"))
    (product.path / "output_ports.yaml").write_text(PORTS_YAML)
    plan = run([str(SQLMESH), "plan", "--auto-apply", "--no-prompts"], product.path, home)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    publish = run([sys.executable, "publish.py"], product.path, home)
    assert publish.returncode == 0, publish.stdout + publish.stderr
    yield product, plan.stdout + plan.stderr
