"""CLI commands: serve (filled in by its issue)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:  # argparse's _SubParsersAction is private
    """Add this module's commands to the top-level parser."""
    del subparsers


def _unused(args: argparse.Namespace) -> int:
    return 0
