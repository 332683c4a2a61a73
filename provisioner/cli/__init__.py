"""The ``provisioner`` command line: one sub-command module per area, each with its own --help.

Every module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its commands and sets
``func(args) -> int`` on each. Settings errors, every ``ProvisionerError`` and an operating system error (a data
dir that cannot be written) end the process with exit code 1 and one clear line on stderr, never a traceback.

Before any command runs, logging is set up (``--log-format`` or PROVISIONER_LOG_FORMAT: human lines on a terminal,
JSON lines otherwise; a short command logs warnings and errors only unless PROVISIONER_LOG_LEVEL says otherwise),
and every ``PROVISIONER_*`` variable that is no setting is warned about, with the closest setting's name.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from provisioner import __version__
from provisioner.errors import ProvisionerError, SettingsError
from provisioner.logs import configure_logging, log_event, redact_text
from provisioner.settings import Settings, unknown_variables

COMMAND_MODULES = ("serve", "products", "tokenize", "profile", "webhook_url", "check", "demo", "datahub_actions")
#: Commands that run until stopped: they log at PROVISIONER_LOG_LEVEL (INFO) and set up their own logging.
LONG_RUNNING = frozenset({"serve", "worker", "datahub-actions"})

log = logging.getLogger("provisioner.cli")


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser, with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="provisioner",
        description=(
            "Turn Data Product Portal events into scoped S3 storage, SQLMesh projects and "
            "tokenized access grants. Configuration comes from PROVISIONER_* environment variables."
        ),
    )
    parser.add_argument("--version", action="version", version=f"provisioner {__version__}")
    parser.add_argument(
        "--log-format",
        choices=("auto", "human", "json"),
        help="logs as human-readable lines or JSON lines (default PROVISIONER_LOG_FORMAT, auto: human on a "
        "terminal, JSON otherwise)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"provisioner.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the chosen command; return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if args.log_format:
        # Through the environment: every Settings.from_env() of this process (and of those it starts) sees it.
        os.environ["PROVISIONER_LOG_FORMAT"] = args.log_format
    try:
        _set_up_logging(args.command)
        return int(args.func(args) or 0)
    except SettingsError as exc:
        # Messages may quote what went wrong (a URL, a DSN): mask any secret in them before printing.
        print(f"provisioner: configuration error: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except ProvisionerError as exc:
        print(f"provisioner: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except OSError as exc:
        # A file or directory the command needs (the data dir, a policy file, a project folder) is not usable.
        print(f"provisioner: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _set_up_logging(command: str) -> None:
    """Logging for the whole process (before any part logs) and one warning per unknown PROVISIONER_* variable."""
    try:
        settings = Settings.from_env()
    except SettingsError:
        # The command reads the settings again and says what is wrong in its own way (`check` as its first line).
        fmt = os.environ.get("PROVISIONER_LOG_FORMAT", "auto").strip().lower()
        configure_logging("WARNING", fmt=fmt if fmt in ("human", "json") else "auto")
        return
    level = settings.log_level
    if command not in LONG_RUNNING and "PROVISIONER_LOG_LEVEL" not in os.environ:
        level = "WARNING"  # a command's own output says what happened; INFO lines would drown it
    configure_logging(level, fmt=settings.log_format)
    for warning in unknown_variables():
        log_event(log, "settings.unknown_variable", level=logging.WARNING, warning=warning)
