"""What `serve` and `worker` share: logging, the database (embedded or configured, migrated) and job handlers.

``handlers_factory`` gets the settings and the resolved database URL and returns ``JobHandlers``, or a context
manager yielding them (entered here, closed on exit). The default is the real reconcilers, with their store
(embedded SeaweedFS when no endpoint is set), portal client and tokenizer; a process that runs no worker
builds none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass

from provisioner.cli.wiring import open_services, resolve_database
from provisioner.jobs import JobHandlers
from provisioner.logs import configure_logging
from provisioner.reconcile import Reconcilers
from provisioner.settings import Settings

#: The object /readyz asks the store about: any answer, "not found" included, means the store is reachable.
READYZ_OBJECT = ".provisioner-readyz"

HandlersFactory = Callable[[Settings, str], "JobHandlers | AbstractContextManager[JobHandlers]"]


@contextmanager
def reconcile_handlers(settings: Settings, database_url: str) -> Iterator[JobHandlers]:
    """The real handlers: product, access and resync reconcilers over open clients."""
    with open_services(settings, database_url) as services:
        yield services.reconcilers


@dataclass(frozen=True)
class Runtime:
    """The resolved pieces a serving or working process needs."""

    settings: Settings
    database_url: str
    handlers: JobHandlers | None
    #: Raises when the object store cannot be reached (None when this process has no store).
    store_probe: Callable[[], object] | None = None


@contextmanager
def open_runtime(
    settings: Settings, handlers_factory: HandlersFactory | None = reconcile_handlers
) -> Iterator[Runtime]:
    """Configure logging, resolve and migrate the database, build the handlers (if any); release them on exit."""
    configure_logging(settings.log_level)
    if settings.log_level != "DEBUG":
        # procrastinate logs every job start and end; job.started/job.succeeded already say it once.
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
    url = resolve_database(settings)
    with ExitStack() as stack:
        handlers: JobHandlers | None = None
        if handlers_factory is not None:
            made = handlers_factory(settings, url)
            handlers = stack.enter_context(made) if isinstance(made, AbstractContextManager) else made
        yield Runtime(settings, url, handlers, _store_probe(handlers))


def _store_probe(handlers: JobHandlers | None) -> Callable[[], object] | None:
    if not isinstance(handlers, Reconcilers):
        return None
    store, bucket = handlers.store, handlers.config.bucket
    return lambda: store.object_exists(bucket, READYZ_OBJECT)
