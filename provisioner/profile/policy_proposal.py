"""``--propose-policy FILE``: the proposed PII columns as a tokenization policy entry, for a person to review.

The file is a single flat policy in the existing format (``tenant`` and ``tables`` with ``column_tags``), so
``provisioner tokenize --policy FILE --dry-run`` reads it as it is; each column carries its score as a comment.
Nothing is applied: to use it for an output port, copy the tables under a ``policies:`` entry with its producer and
output port. A column whose name is not a plain identifier cannot be named in a policy; it is listed as a comment.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from provisioner.errors import InvalidName
from provisioner.names import SqlName
from provisioner.profile.errors import ProfileInputError
from provisioner.profile.model import TableProfile


def check_writable(path: Path) -> None:
    """Refuse, before anything runs, a file that exists (it may be a reviewed policy) or a missing folder."""
    if path.exists():
        raise ProfileInputError(f"{path} exists; write the proposal to a new file and merge it by hand")
    if not path.parent.is_dir():
        raise ProfileInputError(f"folder {path.parent} does not exist")


def policy_text(tenant: str, tables: Sequence[TableProfile], run_id: str) -> str | None:
    """The policy as YAML text, or None when no column is proposed."""
    blocks: list[str] = []
    for table in tables:
        proposed = [c for c in table.columns if c.proposal.tags]
        if not proposed:
            continue
        schema, name = table.table.split(".", 1)
        lines = [f"  - schema: {json.dumps(schema)}", f"    table: {json.dumps(name)}", "    column_tags:"]
        listed = 0
        for column in proposed:
            comment = f"score {column.proposal.score:.2f}; {_why(column.proposal.evidence)}"
            try:
                SqlName(column.name)
            except InvalidName:
                lines.append(f"      # {json.dumps(column.name)} {list(column.proposal.tags)} ({comment}): not a")
                lines.append("      # plain identifier, so it cannot be named in a policy; rename it or view it")
                continue
            lines.append(f"      {json.dumps(column.name)}: {json.dumps(list(column.proposal.tags))}  # {comment}")
            listed += 1
        if listed:
            blocks.append("\n".join(lines))
    if not blocks:
        return None
    head = [
        f"# Tokenization policy proposed by `provisioner profile` (run {run_id}) for tenant {tenant}.",
        "# Nothing was applied. Review every column (the profile's evidence says why it is here), then copy the",
        "# tables under a `policies:` entry with its producer and output_port (docs/tokenization.md, 'Policy file').",
        f"tenant: {json.dumps(tenant)}",
        "tables:",
    ]
    return "\n".join(head + blocks) + "\n"


def _why(evidence: dict[str, Any]) -> str:
    parts = []
    if evidence.get("matches"):
        parts.append("values: " + ", ".join(f"{k} {v}" for k, v in evidence["matches"].items()))
    if evidence.get("in_text"):
        parts.append("inside text: " + ", ".join(f"{k} {v}" for k, v in evidence["in_text"].items()))
    if evidence.get("sampled") is not None:
        parts.append(f"of {evidence['sampled']} sampled")
    if evidence.get("column_name"):
        parts.append(f"name suggests {evidence['column_name']}")
    return ", ".join(parts) or "column name and values"


def write_policy(path: Path, text: str) -> None:
    """Write whole or not at all (a temporary file in the same folder, then a hard link that refuses to replace a
    file created meanwhile), readable by the owner only."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ProfileInputError(f"{path} was created while profiling; nothing was written") from None
    finally:
        Path(tmp).unlink(missing_ok=True)
