"""``provisioner datahub-actions -c pipeline.yaml``: the DataHub Actions pipeline and the worker of its jobs.

The pipeline (DataHub's own ``Pipeline``, any source: ``kafka``, ``pg_queue``…) runs the plugin
``provisioner.datahub:TokenizeAction``, whose ``act()`` only queues; the worker of the ``datahub`` queue runs those
jobs with the tenants and token settings of PROVISIONER_*, reading and reporting through the pipeline's
``datahub:`` connection. ``--no-worker`` runs the pipeline alone (as ``datahub actions -c`` would), ``--worker-only``
a worker alone (start as many as you like); ``--once`` stops when the source has no more events and the queue is
empty (file sources, tests). Needs the ``datahub`` extra: ``pip install 'provisioner[datahub]'``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import threading
from pathlib import Path
from typing import Any

from provisioner.errors import SettingsError
from provisioner.logs import configure_logging, log_event
from provisioner.settings import Settings
from provisioner.site import Site

log = logging.getLogger(__name__)

MISSING_EXTRA = "the DataHub plugin needs the datahub extra: pip install 'provisioner[datahub]'"


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add ``datahub-actions``."""
    p = subparsers.add_parser(
        "datahub-actions",
        help="run a DataHub Actions pipeline that tokenizes datasets tagged tokenize-now",
        description=(
            "Run a DataHub Actions pipeline (YAML, as `datahub actions -c` takes it) whose action is "
            "provisioner.datahub:TokenizeAction, and a worker that tokenizes the datasets it queues and reports each "
            "run on the dataset in DataHub. Tenant connections come from PROVISIONER_TENANT_<ID>_*, the key from "
            "PROVISIONER_TOKENIZE_KEY, the queue from PROVISIONER_DATABASE_URL. Example pipelines: deploy/datahub/."
        ),
    )
    p.add_argument("-c", "--config", required=True, metavar="FILE", help="the pipeline YAML (${VAR} expanded)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--no-worker", action="store_true", help="run the pipeline only (jobs wait for a worker)")
    mode.add_argument("--worker-only", action="store_true", help="run a worker of the queued jobs only")
    p.add_argument("--once", action="store_true", help="stop when the source is exhausted and the queue is empty")
    p.add_argument("--concurrency", type=int, default=2, metavar="N", help="jobs the worker runs at once (2)")
    p.set_defaults(func=cmd_datahub_actions)


def cmd_datahub_actions(args: argparse.Namespace) -> int:
    """Load the pipeline, then run it and/or the worker; 0 when they stopped cleanly."""
    try:
        from datahub.configuration.config_loader import load_config_file
        from datahub_actions.pipeline.pipeline import Pipeline

        from provisioner.datahub import worker
    except ImportError:
        raise SettingsError(MISSING_EXTRA) from None
    settings = Settings.from_env()
    configure_logging(
        settings.log_level, fmt=settings.log_format
    )  # after the imports: one of the framework's modules calls basicConfig
    if args.concurrency < 1:
        raise SettingsError("--concurrency must be 1 or more")
    path = Path(args.config)
    if not path.is_file():
        raise SettingsError(f"pipeline file {path} does not exist")
    try:
        pipeline_dict: dict[str, Any] = load_config_file(path)
    except Exception as exc:  # the loader raises ConfigurationError, YAML errors, KeyError for a missing ${VAR}
        raise SettingsError(f"cannot read pipeline file {path}: {exc}") from None
    parts = worker.pipeline_parts(pipeline_dict)
    with Site.open(
        settings,
        reconcile=False,
        database_url=parts.action.database_url,
        datahub_concurrency=0 if args.no_worker else args.concurrency,
    ) as site:
        # The action reads its database from its own config: give it the one the worker uses.
        action = pipeline_dict["action"]
        action["config"] = {**(action.get("config") or {}), "database_url": site.database_url}
        app = None if args.no_worker else site.datahub_app(parts)
        pipeline = None if args.worker_only else Pipeline.create(pipeline_dict)
        return _run(args, pipeline_dict, pipeline, app, worker)


def _run(args: argparse.Namespace, pipeline_dict: dict[str, Any], pipeline: Any, app: Any, worker: Any) -> int:
    """Run the pipeline and/or the worker as the arguments ask."""
    log_event(
        log,
        "datahub.actions_started",
        pipeline=pipeline_dict.get("name"),
        source=(pipeline_dict.get("source") or {}).get("type"),
        worker=app is not None,
        once=args.once,
    )
    if args.once:
        if pipeline is not None:
            _run_pipeline(pipeline)
        if app is not None:
            asyncio.run(worker.run_worker(app, concurrency=args.concurrency, wait=False, install_signal_handlers=False))
        return 0
    if app is None:
        assert pipeline is not None
        _run_pipeline(pipeline)
        return 0
    return asyncio.run(_serve(pipeline, app, args.concurrency, worker))


def _run_pipeline(pipeline: Any) -> None:
    try:
        pipeline.run()
    finally:
        pipeline.close()


async def _serve(pipeline: Any, app: Any, concurrency: int, worker: Any) -> int:
    """The worker in this loop, the pipeline in a thread; when either ends, the other is stopped."""
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(worker.run_worker(app, concurrency=concurrency))
    failed: list[BaseException] = []

    def run_pipeline() -> None:
        try:
            pipeline.run()
        except BaseException as exc:  # a pipeline in THROW mode stops on an event it could not queue
            failed.append(exc)
            log_event(log, "datahub.pipeline_stopped", level=logging.ERROR, error=f"{type(exc).__name__}: {exc}")
        finally:
            loop.call_soon_threadsafe(task.cancel)

    thread = None
    if pipeline is not None:
        thread = threading.Thread(target=run_pipeline, name="datahub-pipeline", daemon=True)
        thread.start()
    try:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    finally:
        if pipeline is not None:
            pipeline.stop()
            if thread is not None:
                await asyncio.to_thread(thread.join, 30)
            pipeline.close()
    return 1 if failed else 0
