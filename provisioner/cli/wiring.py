"""Builds the running parts from Settings: the one place where configuration becomes clients.

Entry points (serve, worker, the product commands, demo) call ``open_services``; adapters below receive only the
plain values they need.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from provisioner import db
from provisioner.logs import log_event
from provisioner.persistence.state import StateStore
from provisioner.portal import PortalClient
from provisioner.reconcile import PortTokenizer, ReconcileConfig, Reconcilers, no_port_tokenizer
from provisioner.reconcile.scope import Scope
from provisioner.settings import Settings
from provisioner.storage import build_store
from provisioner.storage.base import StoreAdmin

if TYPE_CHECKING:
    from provisioner.tokenize import TokenizeOptions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Services:
    """Everything a command needs to reconcile, with its clients open."""

    settings: Settings
    database_url: str
    state: StateStore
    store: StoreAdmin
    portal: PortalClient
    reconcilers: Reconcilers
    s3_endpoint: str


def resolve_database(settings: Settings) -> str:
    """The database URL: the configured one, or the embedded server's (started if needed); migrated."""
    url = db.start_embedded(settings.data_dir / "postgres").url if settings.embedded_database else settings.database_url
    assert url is not None
    db.migrate(url)
    return url


@contextmanager
def open_store(settings: Settings) -> Iterator[tuple[StoreAdmin, str]]:
    """The store admin client and the endpoint to write into .env files; starts the embedded store if needed."""
    with ExitStack() as stack:
        if settings.embedded_store:
            from provisioner.storage.embedded import start_embedded_store

            embedded = start_embedded_store(settings.data_dir / "s3", settings.s3_embedded_port)
            stack.callback(embedded.stop)
            endpoint, access, secret, kind = embedded.endpoint, embedded.access_key, embedded.secret_key, "aws-iam"
        else:
            assert settings.s3_access_key is not None and settings.s3_secret_key is not None
            endpoint, access, secret = settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key
            kind = settings.store_kind
        store = build_store(kind, endpoint=endpoint, access_key=access, secret_key=secret, region=settings.s3_region)
        yield store, settings.s3_public_endpoint or endpoint


def tokenize_options(settings: Settings, key: str | None, key_env: str | None = None) -> TokenizeOptions:
    """Token format, key and limits of the tokenization engine, from PROVISIONER_TOKENIZE_*."""
    from provisioner.tokenize import DEFAULT_KEY_ENV, TokenFormat, TokenizeOptions

    return TokenizeOptions(
        format=TokenFormat(
            mode=settings.tokenize_mode,  # type: ignore[arg-type]  # validated by Settings
            prefix=settings.tokenize_prefix,
            suffix=settings.tokenize_suffix,
        ),
        key=key,
        key_env=key_env or DEFAULT_KEY_ENV,
        max_columns=settings.tokenize_max_columns,
        lock_timeout_ms=settings.tokenize_lock_timeout_ms,
        statement_timeout_ms=settings.tokenize_statement_timeout_ms,
        batch_pages=settings.tokenize_batch_pages,
    )


def build_tokenizer(settings: Settings, database_url: str, owner: str | None = None) -> PortTokenizer:
    """The tokenizer the access flow runs before a grant, from PROVISIONER_TOKENIZE_* and tenant settings.

    ``owner`` is the process heartbeat's id its run records carry (db.ProcessHeartbeat).
    """
    if settings.tokenize_policy is None:
        return no_port_tokenizer
    from provisioner.reconcile.tokenizing import policy_tokenizer
    from provisioner.tokenize import RunRecorder, Tenants, load_policy_file

    return policy_tokenizer(
        load_policy_file(settings.tokenize_policy),
        tokenize_options(settings, settings.tokenize_key),
        Tenants.from_mapping(settings.tenants),
        RunRecorder(database_url, owner=owner),
    )


@contextmanager
def open_services(settings: Settings, database_url: str | None = None) -> Iterator[Services]:
    """Open the database pool, store and portal clients and the reconcilers; close them on exit."""
    url = database_url or resolve_database(settings)
    with ExitStack() as stack:
        # First in, last out: runs recorded below carry this process's id; it fails the runs of dead processes.
        heartbeat = stack.enter_context(db.ProcessHeartbeat(url))
        # Each running job holds one connection for its product's lock and borrows others for its state.
        pool = stack.enter_context(db.open_pool(url, max_size=2 * settings.worker_concurrency + 2))
        store, endpoint = stack.enter_context(open_store(settings))
        portal = PortalClient(
            settings.portal_url,
            api_key=settings.portal_api_key,
            timeout=settings.portal_timeout_seconds,
            retries=settings.portal_retries,
        )
        stack.callback(portal.close)
        state = StateStore(pool, owner=heartbeat.owner)
        config = ReconcileConfig(
            bucket=settings.s3_bucket,
            products_dir=settings.products_dir.resolve(),
            template=settings.template.resolve(),  # absolute: cookiecutter changes the working directory
            s3_endpoint=endpoint,
            s3_region=settings.s3_region,
            finalizer=settings.finalizer,
            delete_data=settings.delete_data,
            verify_seconds=settings.verify_seconds,
            tokenize_require_policy=settings.tokenize_require_policy,
            orphan_grace_seconds=settings.orphan_grace_seconds,
            scope=Scope(
                domains=settings.scope_domains,
                types=settings.scope_types,
                tags=settings.scope_tags,
                namespaces=settings.scope_namespaces,
            ),
        )
        tokenizer = build_tokenizer(settings, url, heartbeat.owner)
        reconcilers = Reconcilers(portal=portal, store=store, state=state, config=config, tokenizer=tokenizer)
        log_event(
            log,
            "services.opened",
            portal=settings.portal_url,
            s3_endpoint=endpoint,
            bucket=settings.s3_bucket,
            scope=config.scope.describe(),
        )
        yield Services(settings, url, state, store, portal, reconcilers, endpoint)


def names(items: Sequence[str]) -> str:
    """A comma-separated list, or a dash when empty (for tables)."""
    return ", ".join(items) if items else "-"
