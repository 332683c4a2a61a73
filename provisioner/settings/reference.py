"""The configuration reference, generated from the declarations: one Markdown table per area.

Documents carry it between two markers; ``python -m provisioner.settings --write docs/configuration.md``
regenerates it there, ``--check`` (and tests/test_settings.py) fails when it differs from the declarations.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from provisioner.settings.declare import AREAS, variables
from provisioner.settings.model import Settings
from provisioner.settings.tenants import TENANT_FIELD_DECLARATIONS

BEGIN = "<!-- settings:begin (generated from provisioner/settings: python -m provisioner.settings --write FILE) -->"
END = "<!-- settings:end -->"
_HEADER = ("variable", "default", "unit", "accepts", "meaning")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(rows: Iterable[tuple[str, str, str, str, str]]) -> list[str]:
    lines = ["| " + " | ".join(_HEADER) + " |", "|" + "---|" * len(_HEADER)]
    for name, default, unit, accepts, doc in rows:
        cells = (f"`{name}`", f"`{default}`", unit, accepts, doc)
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines


def reference_markdown() -> str:
    """Every setting, one table per area in the order of ``AREAS``, tenant fields last."""
    by_area: dict[str, list[tuple[str, str, str, str, str]]] = {area: [] for area in AREAS}
    for var in variables(Settings):
        d = var.declared
        by_area[d.area].append((var.name, var.shown_default, d.unit, d.kind.accepts, d.doc))
    for fld in TENANT_FIELD_DECLARATIONS:
        by_area["tenants"].append((fld.variable, fld.default, "", fld.accepts, fld.doc))
    lines: list[str] = []
    for area, heading in AREAS.items():
        if not by_area[area]:
            continue
        lines += [f"### {heading}", "", *_table(by_area[area]), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


def with_reference(text: str) -> str:
    """``text`` with the part between the markers replaced by the generated reference (ValueError: no markers)."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no settings reference markers: put {BEGIN!r} and {END!r} where the tables go")
    return text[: start + len(BEGIN)] + "\n\n" + reference_markdown() + "\n" + text[end:]


def main(argv: Sequence[str] | None = None) -> int:
    """``--markdown`` prints the reference; ``--write FILE`` regenerates it in place; ``--check FILE`` compares."""
    parser = argparse.ArgumentParser(
        prog="python -m provisioner.settings", description="The PROVISIONER_* configuration reference."
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--markdown", action="store_true", help="print the reference tables")
    group.add_argument("--write", metavar="FILE", nargs="+", type=Path, help="regenerate the tables in FILE")
    group.add_argument("--check", metavar="FILE", nargs="+", type=Path, help="exit 1 when FILE's tables differ")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(reference_markdown())
        return 0
    stale = []
    for path in args.write or args.check:
        text = path.read_text(encoding="utf-8")
        try:
            fresh = with_reference(text)
        except ValueError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            return 1
        if fresh != text:
            stale.append(path)
            if args.write:
                path.write_text(fresh, encoding="utf-8")
    for path in stale:
        verb = "regenerated" if args.write else "is out of date: run python -m provisioner.settings --write"
        print(f"{path}: settings reference {verb}" + ("" if args.write else f" {path}"), file=sys.stderr)
    return 1 if stale and args.check else 0
