"""What `serve` and `worker` share: logging, the database (embedded or configured, migrated) and job handlers.

``handlers_factory`` is the plug for the real reconcilers: it gets the settings and the resolved database
URL and returns ``JobHandlers``, or a context manager yielding them (entered here, closed on exit).
``RecordingHandlers`` is the default until the reconcile layer is wired in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass

from provisioner.cli.wiring import resolve_database
from provisioner.jobs import JobHandlers, RecordingHandlers
from provisioner.logs import configure_logging
from provisioner.settings import Settings

HandlersFactory = Callable[[Settings, str], "JobHandlers | AbstractContextManager[JobHandlers]"]


def recording_handlers(settings: Settings, database_url: str) -> JobHandlers:
    """The placeholder handlers: every job records a run row and does nothing else."""
    return RecordingHandlers(database_url)


@dataclass(frozen=True)
class Runtime:
    """The resolved pieces a serving or working process needs."""

    settings: Settings
    database_url: str
    handlers: JobHandlers


@contextmanager
def open_runtime(settings: Settings, handlers_factory: HandlersFactory = recording_handlers) -> Iterator[Runtime]:
    """Configure logging, resolve and migrate the database, build the handlers; release them on exit."""
    configure_logging(settings.log_level)
    if settings.log_level != "DEBUG":
        # procrastinate logs every job start and end; job.started/job.succeeded already say it once.
        logging.getLogger("procrastinate").setLevel(logging.WARNING)
    url = resolve_database(settings)
    with ExitStack() as stack:
        made = handlers_factory(settings, url)
        handlers = stack.enter_context(made) if isinstance(made, AbstractContextManager) else made
        yield Runtime(settings, url, handlers)
