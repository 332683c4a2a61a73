"""The ``provisioner`` command line: one sub-command module per area, each with its own --help.

Every module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its commands and sets
``func(args) -> int`` on each. Settings errors end the process with exit code 1 and one clear line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from provisioner import __version__
from provisioner.errors import ProvisionerError, SettingsError
from provisioner.logs import redact_text

COMMAND_MODULES = ("serve", "products", "tokenize", "profile", "webhook_url", "check", "demo", "datahub_actions")


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
    try:
        return int(args.func(args) or 0)
    except SettingsError as exc:
        # Messages may quote what went wrong (a URL, a DSN): mask any secret in them before printing.
        print(f"provisioner: configuration error: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except ProvisionerError as exc:
        print(f"provisioner: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
