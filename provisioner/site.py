"""The composition root: the whole provisioner of one process, built from Settings in one place.

Every entry point opens a ``Site`` and takes the parts it needs from it: ``serve`` and ``worker`` (cli/serve.py),
each product command (status, grants, provision, rotate, resync), ``tokenize``, ``runs``, ``profile``,
``datahub-actions`` and the demo. Nothing else turns Settings into clients; below this module every part receives
plain values (import-linter: adapters never import the settings).

``Site.open(settings)`` resolves the database (the configured one, or the embedded server, started; migrated), opens
the process's sync pool, registers the process's heartbeat when it records runs, and, with ``reconcile`` (the
default), starts the object store (embedded SeaweedFS when no endpoint is set), opens the portal client and builds
the reconcilers with their port tokenizer. From an open site come the job app (``job_app``), the web app with its
async pool (``open_web``), the DataHub worker's app (``datahub_app``), the run recorder, tenants and token options.

Connection pools, sized here and nowhere else (``pool_sizes``):

* one sync pool per process (``Site.pool``) for everything that runs in threads: the reconcilers' state (each
  running job holds one connection for its product's lock and borrows a second for its reads and writes), the
  run records of tokenization, the heartbeat, retention, the enqueueing of follow-ups and of the resync at start,
  the DataHub worker's rows, and the CLI commands. Its largest size is
  ``2 * jobs that may run at once + 2``: the jobs are ``PROVISIONER_WORKER_CONCURRENCY`` when the site reconciles
  (a CLI command reconciles one at a time but shares the rule), the DataHub worker's concurrency in
  ``datahub-actions``, none otherwise; the two spare connections serve what runs beside the jobs (the heartbeat, an
  enqueue, a command's own reads). It keeps one connection open.
* one async pool for the web intake, where the process serves the web app: 2 to 8 connections (``serve``, the demo;
  bench/intake.py measured the intake's group commit with these).
* the job queue's connector (procrastinate) keeps an async pool of its own, of 4 connections (procrastinate's
  default: its LISTEN connection, job fetches and status updates): ``run_worker`` closes and reopens it to get a
  worker back after a lost database, which a pool shared with the web intake could not do.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from psycopg_pool import ConnectionPool, PoolTimeout

from provisioner import db, jobs
from provisioner.errors import DatabaseUnavailable, SettingsError
from provisioner.logs import configure_logging, log_event, redact_text
from provisioner.persistence.state import StateStore
from provisioner.portal import PortalClient
from provisioner.reconcile import PortTokenizer, ReconcileConfig, Reconcilers, ScopedTarget, no_port_tokenizer
from provisioner.reconcile.scope import Scope
from provisioner.retention import RetentionPolicy
from provisioner.settings import Settings
from provisioner.storage import build_store
from provisioner.storage.base import StoreAdmin
from provisioner.web import create_app, open_pool
from provisioner.web.auth import WebhookAuth
from provisioner.web.health import ReadinessCheck

if TYPE_CHECKING:
    import procrastinate
    from starlette.applications import Starlette

    from provisioner.datahub.worker import PipelineParts
    from provisioner.tokenize import RunRecorder, Tenants, TokenizeOptions

log = logging.getLogger(__name__)

#: The object /readyz asks the store about: any answer, "not found" included, means the store is reachable.
READYZ_OBJECT = ".provisioner-readyz"


@dataclass(frozen=True)
class PoolSizes:
    """How many connections each pool of the process may hold (the rule: this module's docstring)."""

    sync_max: int
    sync_min: int = 1
    web_min: int = 2
    web_max: int = 8
    queue: int = jobs.QUEUE_POOL_SIZE


def pool_sizes(settings: Settings, *, reconcile: bool, datahub_concurrency: int = 0) -> PoolSizes:
    """The pool sizes of a process that reconciles (or not) and runs ``datahub_concurrency`` DataHub jobs at once."""
    jobs_at_once = (settings.worker_concurrency if reconcile else 0) + datahub_concurrency
    return PoolSizes(sync_max=2 * jobs_at_once + 2)


def configure_process_logging(settings: Settings) -> None:
    """Logs at PROVISIONER_LOG_LEVEL for a long-running process (``serve``, ``worker``), as PROVISIONER_LOG_FORMAT
    says (auto: human lines on a terminal, JSON lines otherwise)."""
    configure_logging(settings.log_level, fmt=settings.log_format)
    if settings.log_level != "DEBUG":
        # procrastinate logs every job start and end; job.started/job.succeeded already say it once.
        logging.getLogger("procrastinate").setLevel(logging.WARNING)


def nothing_recorded_yet(settings: Settings) -> bool:
    """True when the embedded database was never created in the data dir: a command that only reads has nothing
    to read, and must not create (start) one to show empty tables."""
    return settings.embedded_database and not (settings.data_dir / "postgres" / "PG_VERSION").is_file()


def resolve_database(settings: Settings) -> str:
    """The database URL: the configured one (``database_conninfo``), or the embedded server's (started if needed);
    migrated."""
    if settings.embedded_database:
        writable_dir(settings.data_dir, "")
        url = db.start_embedded(settings.data_dir / "postgres").url
    else:
        url = database_conninfo(settings)
    db.migrate(url)
    return url


def database_conninfo(settings: Settings) -> str:
    """PROVISIONER_DATABASE_URL as every connection of this process uses it (pools, the job queue, migrations, the
    web app, the DataHub plugin's queue).

    With ``PROVISIONER_DATABASE_AUTH=databricks-oauth`` it names a password file that this process keeps holding a
    current Lakebase token (``tokenize.lakebase.Passfile``): libpq reads the file at every login, so each new
    connection of any pool logs in with a token that has at least five minutes left, fetched anew before the
    previous one expires (one credential call an hour), while open connections go on (Lakebase checks the token at
    login only); a token the server refuses before its time is replaced within a minute (``Passfile.check``). The
    file is the process's own (mode 0600 in a private directory, removed at exit); ``sslmode``
    defaults to ``require``. The URL itself carries no secret.
    """
    url = settings.database_url
    if url is None:
        raise SettingsError("PROVISIONER_DATABASE_URL is not set")
    if settings.database_auth != "databricks-oauth":
        return url
    assert settings.database_lakebase is not None  # Settings.from_env refuses databricks-oauth without it
    key = (url, settings.database_lakebase)
    with _passfiles_lock:
        if key not in _passfiles:
            _passfiles[key] = _start_passfile(url, settings.database_lakebase)
        return _passfiles[key]


_passfiles: dict[tuple[str, str], str] = {}
_passfiles_lock = threading.Lock()


def _start_passfile(url: str, lakebase: str) -> str:
    import atexit
    import shutil
    import tempfile
    from pathlib import Path

    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from provisioner.tokenize import DatabricksOAuth, Passfile, TenantError, TenantUnavailable

    endpoint = lakebase if lakebase.startswith("projects/") else None
    provider = DatabricksOAuth(instance=None if endpoint else lakebase, endpoint=endpoint)
    directory = Path(tempfile.mkdtemp(prefix="provisioner-lakebase-"))  # mode 0700: this process's own
    atexit.register(shutil.rmtree, directory, True)
    params = conninfo_to_dict(url)
    conninfo = make_conninfo(url, passfile=str(directory / "pgpass"), sslmode=params.get("sslmode") or "require")
    passfile = Passfile(conninfo, provider, directory / "pgpass")
    try:
        passfile.start()
    except TenantUnavailable as exc:
        raise DatabaseUnavailable(f"PROVISIONER_DATABASE_URL: {exc}") from None
    except TenantError as exc:  # a setting or a grant to change: no retry fixes it
        raise SettingsError(f"PROVISIONER_DATABASE_LAKEBASE={lakebase}: {exc}") from None
    atexit.register(passfile.stop)
    log_event(log, "db.lakebase_login", target=provider.target, host=params.get("host"), user=params.get("user"))
    return conninfo


@contextmanager
def open_store(settings: Settings, *, attach: bool = True) -> Iterator[tuple[StoreAdmin, str]]:
    """The store admin client and the endpoint to write into .env files.

    With no endpoint configured this is the embedded store of the data dir: ``attach`` uses the one a live
    process (``serve``) runs, and leaves it running; otherwise, or when none runs, this process starts its own
    and stops it on exit. A long-running process (``serve``, ``worker``) passes ``attach=False``: it owns its store.
    """
    with ExitStack() as stack:
        if settings.embedded_store:
            from provisioner.storage.embedded import start_embedded_store

            embedded = start_embedded_store(
                writable_dir(settings.data_dir, "") / "s3",
                settings.s3_embedded_port,
                attach=attach,
                in_memory=settings.store_in_memory,
            )
            stack.callback(embedded.stop)
            if embedded.backend == "moto":
                log_event(
                    log,
                    "storage.in_memory",
                    level=logging.WARNING,
                    warning="PROVISIONER_STORE_IN_MEMORY is on: the store keeps users, keys and data in memory; "
                    "they are LOST when this process exits and the keys written into .env files stop working",
                )
            endpoint, access, secret, kind = embedded.endpoint, embedded.access_key, embedded.secret_key, "aws-iam"
        else:
            # Settings refuse an endpoint without its keys.
            assert settings.s3_endpoint is not None
            assert settings.s3_access_key is not None and settings.s3_secret_key is not None
            endpoint, access, secret = settings.s3_endpoint, settings.s3_access_key, settings.s3_secret_key
            kind = settings.store_kind
        store = build_store(kind, endpoint=endpoint, access_key=access, secret_key=secret, region=settings.s3_region)
        yield store, settings.s3_public_endpoint or endpoint


def writable_dir(data_dir: Path, name: str) -> Path:
    """``data_dir/name``, created; SettingsError (one line) when PROVISIONER_DATA_DIR cannot hold it."""
    path = data_dir / name
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise SettingsError(
            f"PROVISIONER_DATA_DIR={data_dir} is not writable ({path}: {exc.strerror or exc}); "
            "choose a directory this user may write"
        ) from None
    return path


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


def tenants(settings: Settings) -> Tenants:
    """The tenants' connections (PROVISIONER_TENANT_<ID>_*)."""
    from provisioner.tokenize import Tenants

    return Tenants.from_mapping(settings.tenants)


def reconcile_config(settings: Settings, s3_endpoint: str) -> ReconcileConfig:
    """What every reconcile needs to know about the site; ``s3_endpoint`` as the projects' .env files name it."""
    return ReconcileConfig(
        bucket=settings.s3_bucket,
        products_dir=settings.products_dir.resolve(),
        template=settings.template.resolve(),  # absolute: cookiecutter changes the working directory
        s3_endpoint=s3_endpoint,
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


def extra_targets(settings: Settings) -> list[ScopedTarget]:
    """The provisioning targets beside S3 named by PROVISIONER_TARGETS, each with its scope (reconcile/targets.py).

    A target's client library is imported here only when the target is configured: the core install needs none.
    """
    found: list[ScopedTarget] = []
    if "bigquery" in settings.targets:
        from provisioner.targets.bigquery import BigQueryConfig, BigQueryTarget, build_client

        assert settings.bigquery_project is not None  # Settings refuse bigquery without a project
        config = BigQueryConfig(
            project=settings.bigquery_project,
            location=settings.bigquery_location,
            dataset_prefix=settings.bigquery_dataset_prefix,
            endpoint=settings.bigquery_endpoint,
            principals=dict(settings.bigquery_principals),
        )
        target = BigQueryTarget(config, build_client(config))  # fails fast when the extra is not installed
        scope = Scope(
            domains=settings.bigquery_scope_domains,
            types=settings.bigquery_scope_types,
            tags=settings.bigquery_scope_tags,
        )
        found.append(ScopedTarget(target, scope))
    return found


def port_tokenizer(settings: Settings, recorder: Callable[[], RunRecorder]) -> PortTokenizer:
    """The tokenizer the access flow runs before a grant, from PROVISIONER_TOKENIZE_* and tenant settings."""
    if settings.tokenize_policy is None:
        return no_port_tokenizer
    from provisioner.reconcile.tokenizing import policy_tokenizer
    from provisioner.tokenize import load_policy_file

    return policy_tokenizer(
        load_policy_file(settings.tokenize_policy),
        tokenize_options(settings, settings.tokenize_key),
        tenants(settings),
        recorder(),
    )


def job_app(
    settings: Settings,
    database_url: str,
    handlers: jobs.JobHandlers,
    *,
    metrics: jobs.JobMetrics | None = None,
    backoff_seconds: float = 2.0,
    pool: ConnectionPool | None = None,
    sizes: PoolSizes | None = None,
) -> procrastinate.App:
    """The job queue's app over ``handlers``: retries, resync period and retention from the settings.

    Follow-ups and retention borrow from ``pool`` (the site's sync pool; None: they connect to ``database_url``).
    """
    return jobs.build_app(
        database_url,
        handlers,
        max_attempts=settings.job_max_attempts,
        resync_seconds=settings.resync_seconds,
        backoff_seconds=backoff_seconds,
        metrics=metrics,
        retention=RetentionPolicy(days=settings.retention_days, keep_runs=settings.retention_keep_runs),
        pool=pool,
        queue_pool_size=sizes.queue if sizes is not None else jobs.QUEUE_POOL_SIZE,
    )


@dataclass(frozen=True)
class Reconciling:
    """The parts of a site that reconciles: the object store, the portal client and the reconcilers over them."""

    store: StoreAdmin
    s3_endpoint: str  # as written into project .env files
    portal: PortalClient
    state: StateStore
    reconcilers: Reconcilers


@dataclass(frozen=True)
class Site:
    """The open parts of one process; build it with :meth:`Site.open`."""

    settings: Settings
    database_url: str
    pool: ConnectionPool
    sizes: PoolSizes
    #: The id this process's run records carry (its heartbeat in ``provisioner_processes``); None without one.
    owner: str | None = None
    reconciling: Reconciling | None = None

    @classmethod
    @contextmanager
    def open(
        cls,
        settings: Settings,
        *,
        reconcile: bool = True,
        heartbeat: bool | None = None,
        database_url: str | None = None,
        datahub_concurrency: int = 0,
        own_store: bool = False,
    ) -> Iterator[Site]:
        """Open the site; close every part on exit, last opened first.

        ``reconcile``: start the store, open the portal client, build the reconcilers. ``heartbeat``: register the
        process so that its run records fail when it dies (default: when it reconciles). ``database_url``: a
        database the caller resolved already (it is used as it is). ``datahub_concurrency``: DataHub jobs this
        process runs at once (for the pool size). ``own_store``: a long-running process (``serve``, ``worker``,
        the demo) runs its own embedded store and refuses to borrow another live process's; a command attaches to
        the running one (``open_store``).
        """
        url = database_url or resolve_database(settings)
        sizes = pool_sizes(settings, reconcile=reconcile, datahub_concurrency=datahub_concurrency)
        with ExitStack() as stack:
            pool = stack.enter_context(_open_sync_pool(url, sizes))
            # Before the parts that record runs, and closed after them: the runs carry this process's id, and the
            # heartbeat fails the runs of dead processes (and, on exit, this process's runs left open).
            owner = None
            if reconcile if heartbeat is None else heartbeat:
                owner = stack.enter_context(db.ProcessHeartbeat(pool)).owner
            site = cls(settings, url, pool, sizes, owner)
            if reconcile:
                site = replace(site, reconciling=stack.enter_context(site._open_reconciling(attach=not own_store)))
            yield site

    @contextmanager
    def _open_reconciling(self, *, attach: bool) -> Iterator[Reconciling]:
        settings = self.settings
        with ExitStack() as stack:
            store, endpoint = stack.enter_context(open_store(settings, attach=attach))
            portal = PortalClient(
                settings.portal_url,
                api_key=settings.portal_api_key,
                timeout=settings.portal_timeout_seconds,
                retries=settings.portal_retries,
            )
            stack.callback(portal.close)
            state = StateStore(self.pool, owner=self.owner)
            config = reconcile_config(settings, endpoint)
            tokenizer = port_tokenizer(settings, self.run_recorder)
            reconcilers = Reconcilers(
                portal=portal,
                store=store,
                state=state,
                config=config,
                tokenizer=tokenizer,
                targets=extra_targets(settings),
            )
            log_event(
                log,
                "services.opened",
                portal=settings.portal_url,
                s3_endpoint=endpoint,
                bucket=settings.s3_bucket,
                scope=config.scope.describe(),
                targets=list(settings.targets),
            )
            yield Reconciling(store, endpoint, portal, state, reconcilers)

    # -- the parts of a site that reconciles ----------------------------------------------------------------------

    def _reconciling(self) -> Reconciling:
        if self.reconciling is None:
            raise SettingsError("this site was opened without its reconcilers (Site.open(reconcile=False))")
        return self.reconciling

    @property
    def reconcilers(self) -> Reconcilers:
        """The job handlers: product, access and resync reconcilers over the open clients."""
        return self._reconciling().reconcilers

    @property
    def state(self) -> StateStore:
        """What the provisioner recorded about products, grants and runs (also on a site that only reads)."""
        if self.reconciling is None:
            return StateStore(self.pool, owner=self.owner)
        return self.reconciling.state

    @property
    def store(self) -> StoreAdmin:
        """The object store's admin client."""
        return self._reconciling().store

    @property
    def s3_endpoint(self) -> str:
        """The store's endpoint as project .env files name it."""
        return self._reconciling().s3_endpoint

    def target_probes(self) -> dict[str, str]:
        """One line per provisioning target (``ok: …`` or what is wrong), for ``provisioner check``; never raises."""
        return self.reconcilers.probes()

    def store_probe(self) -> Callable[[], object] | None:
        """Raises when the object store cannot be reached (for /readyz); None when this site has no store."""
        if self.reconciling is None:
            return None
        store, bucket = self.reconciling.store, self.reconciling.reconcilers.config.bucket
        return lambda: store.object_exists(bucket, READYZ_OBJECT)

    # -- jobs -----------------------------------------------------------------------------------------------------

    def job_app(
        self,
        metrics: jobs.JobMetrics | None = None,
        *,
        handlers: jobs.JobHandlers | None = None,
        backoff_seconds: float = 2.0,
    ) -> procrastinate.App:
        """The job queue's app over the reconcilers (or ``handlers``)."""
        return job_app(
            self.settings,
            self.database_url,
            handlers or self.reconcilers,
            metrics=metrics,
            backoff_seconds=backoff_seconds,
            pool=self.pool,
            sizes=self.sizes,
        )

    def enqueue_resync(self) -> bool:
        """Queue a resync now unless resync is off; True when a new job was queued.

        ``serve`` and ``worker`` call it at start: events the portal sent while nothing was listening are lost.
        """
        if self.settings.resync_seconds <= 0:
            return False
        return jobs.enqueue_resync(self.pool)

    # -- tokenization ---------------------------------------------------------------------------------------------

    def run_recorder(self) -> RunRecorder:
        """Records tokenization (and profile, gate) runs in this site's database, as this process."""
        from provisioner.tokenize import RunRecorder

        return RunRecorder(self.pool, owner=self.owner)

    # -- the web app and the DataHub worker ---------------------------------------------------------------------

    @asynccontextmanager
    async def open_web(
        self, registry: CollectorRegistry, readiness: Mapping[str, ReadinessCheck] | None = None
    ) -> AsyncIterator[Starlette]:
        """The web app (intake, health, metrics, status) over this process's async pool, closed on exit."""
        s = self.settings
        pool = await open_pool(self.database_url, min_size=self.sizes.web_min, max_size=self.sizes.web_max)
        try:
            yield create_app(
                pool=pool,
                database_url=self.database_url,
                auth=WebhookAuth(
                    s.webhook_secret,
                    token_max_age=s.webhook_token_max_age,
                    tolerance_seconds=s.webhook_tolerance_seconds,
                ),
                registry=registry,
                max_body_bytes=s.max_body_bytes,
                readiness=readiness,
                body_timeout_seconds=s.body_timeout_seconds,
                status_token=s.status_token,
            )
        finally:
            await pool.close()

    def datahub_app(self, parts: PipelineParts) -> procrastinate.App:
        """The ``datahub`` queue's app: the pipeline's plugin config and DataHub connection, the tenants and token
        options of the settings."""
        from provisioner.datahub import worker

        return worker.build_app(
            database_url=self.database_url,
            graph=worker.graph_for(parts.datahub),
            config=parts.action,
            tenants=tenants(self.settings),
            options=tokenize_options(self.settings, self.settings.tokenize_key),
            max_attempts=self.settings.job_max_attempts,
            pool=self.pool,
        )


@contextmanager
def _open_sync_pool(url: str, sizes: PoolSizes) -> Iterator[ConnectionPool]:
    """The process's sync pool; DatabaseUnavailable (one clear line) when no connection comes in time."""
    try:
        pool = db.open_pool(url, min_size=sizes.sync_min, max_size=sizes.sync_max)
    except PoolTimeout as exc:
        raise DatabaseUnavailable(f"cannot reach PostgreSQL: {redact_text(str(exc))}") from exc
    with pool:
        yield pool
