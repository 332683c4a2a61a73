"""A whole site for reconcile tests: real PostgreSQL, moto's S3+IAM server, real cookiecutter, a stand-in portal."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from provisioner import db
from provisioner.names import BucketName, Namespace
from provisioner.persistence.state import StateStore
from provisioner.portal import PortalClient
from provisioner.reconcile import PortTokenizer, ReconcileConfig, Reconcilers, no_port_tokenizer
from provisioner.settings import default_template
from provisioner.storage import build_store
from provisioner.storage.base import StoreAdmin
from provisioner.testing.portal import PortalState, StandinServer, serve_standin
from tests.fixtures.s3 import S3Server


@dataclass
class Site:
    """The parts a reconcile test drives and inspects."""

    portal: StandinServer
    client: PortalClient
    store: StoreAdmin
    state: StateStore
    config: ReconcileConfig
    s3: S3Server
    reconcilers: Reconcilers

    @property
    def portal_state(self) -> PortalState:
        return self.portal.state

    def project(self, namespace: str) -> Path:
        return self.config.products_dir / Namespace(namespace).folder

    def env(self, namespace: str) -> dict[str, str]:
        from provisioner.scaffold import read_env

        return read_env(self.project(namespace) / ".env")

    def s3_as(self, namespace: str):
        env = self.env(namespace)
        return self.s3.client("s3", env["S3_ACCESS_KEY"], env["S3_SECRET_KEY"])

    def user_keys(self, namespace: str) -> list[str]:
        iam = self.s3.client("iam")
        user = Namespace(namespace).user_name
        return [k["AccessKeyId"] for k in iam.list_access_keys(UserName=user)["AccessKeyMetadata"]]

    def provisioned(self, namespace: str) -> str:
        """A new portal product named after ``namespace``, reconciled once; its id."""
        product = self.portal_state.create_product(namespace.title(), namespace, notify=False)
        self.reconcilers.reconcile_product(product.id)
        return product.id

    def with_tokenizer(self, tokenizer: PortTokenizer) -> Reconcilers:
        self.reconcilers = Reconcilers(
            portal=self.client, store=self.store, state=self.state, config=self.config, tokenizer=tokenizer
        )
        return self.reconcilers


@pytest.fixture
def site(pg_url: str, moto_server: S3Server, tmp_path: Path, unique_name: str) -> Iterator[Site]:
    state = PortalState(echo_writes=False)
    with serve_standin(state) as portal, db.open_pool(pg_url) as pool, PortalClient(portal.url, backoff=0.01) as client:
        store = build_store(
            "aws-iam",
            endpoint=moto_server.endpoint,
            access_key=moto_server.access_key,
            secret_key=moto_server.secret_key,
            region=moto_server.region,
        )
        config = ReconcileConfig(
            bucket=BucketName(unique_name),
            products_dir=tmp_path / "products",
            template=default_template(),
            s3_endpoint=moto_server.endpoint,
            s3_region=moto_server.region,
        )
        store_state = StateStore(pool)
        yield Site(
            portal=portal,
            client=client,
            store=store,
            state=store_state,
            config=config,
            s3=moto_server,
            reconcilers=Reconcilers(
                portal=client, store=store, state=store_state, config=config, tokenizer=no_port_tokenizer
            ),
        )
