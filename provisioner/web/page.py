"""``GET /``: a small read-only status page, rendered on the server (no JavaScript at all).

It shows the products and their state with their key ids (never a secret), the grants and the approved ports that
wait, the parked products, the last runs and the queue. It is guarded like the status API (``StatusTokenGuard``:
with ``PROVISIONER_STATUS_TOKEN`` set it needs ``Authorization: Bearer <token>``).

Everything on it comes from outside (product names and namespaces come from the portal, errors from the stores),
so every value is escaped (``html.escape``), and the Content-Security-Policy allows no script at all: a value that
slipped through could still not run.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from starlette.requests import Request
from starlette.responses import HTMLResponse

from provisioner.errors import DatabaseUnavailable
from provisioner.persistence.overview import Overview, overview

#: No script, no plugin, no frame, no form target, no external fetch; only the page's own inline style.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.4em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;
vertical-align:top}th{background:#f3f3f3}.none{color:#777}.failure,.failed{color:#a00}.success{color:#070}
code{font-size:.95em}
"""
_QUEUE_STATUSES = ("todo", "doing", "failed", "succeeded", "cancelled", "aborted")


async def status_page(request: Request) -> HTMLResponse:
    """GET /: the status page (503 through the error policy when the database cannot be read)."""
    pool: AsyncConnectionPool[Any] = request.app.state.pool
    try:
        async with pool.connection() as conn:
            seen = await overview(conn)
    except (psycopg.OperationalError, PoolTimeout) as exc:
        raise DatabaseUnavailable("database unavailable; the status page cannot be read now") from exc
    return HTMLResponse(render(seen, datetime.now(UTC)), headers=SECURITY_HEADERS)


def render(seen: Overview, now: datetime) -> str:
    """The whole page for ``seen``; every value escaped."""
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>provisioner status</title><style>{_STYLE}</style></head><body>",
        f"<h1>Provisioner status</h1><p>Read at {_e(_when(now))}. Read only; reload for fresh figures.</p>",
        _section("Queue", "queue", ["status", "jobs"], _queue_rows(seen.queue), "no job"),
        _section(
            "Jobs running or waiting",
            "jobs",
            ["job", "queue", "task", "entity", "status", "attempts", "due"],
            (
                [
                    _e(j["id"]),
                    _e(j["queue_name"]),
                    _e(j["task_name"]),
                    _code(j["lock"]),
                    _e(j["status"]),
                    _e(j["attempts"]),
                    _e(_when(j["scheduled_at"]) or "now"),
                ]
                for j in seen.jobs
            ),
            "none",
        ),
        _section(
            "Products",
            "products",
            ["product", "namespace", "state", "key id", "changed"],
            (
                [
                    _e(p["name"] or p["product_id"]),
                    _code(p["namespace"]),
                    _e(p["state"]),
                    _code(p["access_key_id"]),
                    _e(_when(p["updated_at"])),
                ]
                for p in seen.products
            ),
            "no product provisioned yet",
        ),
        _section(
            "Grants",
            "grants",
            ["consumer", "reads", "tokenization"],
            (
                [
                    _code(g["consumer"]),
                    _code(f"{g['producer_namespace']}/published/{_port(g)}/"),
                    _e(g["tokenize_note"]),
                ]
                for g in seen.grants
            ),
            "no grant",
        ),
        _section(
            "Approved, not granted yet",
            "waits",
            ["consumer", "waits for", "why", "since"],
            (
                [
                    _code(w["consumer"]),
                    _code(f"{w['producer_namespace']}/{w['output_port_namespace']}"),
                    _e(w["reason"]),
                    _e(_when(w["since"])),
                ]
                for w in seen.waits
            ),
            "nothing waits",
        ),
        _section(
            "Parked (failed permanently; retried when the portal shows them differently, or by "
            "<code>provisioner provision</code>)",
            "parked",
            ["product", "namespace", "why", "since"],
            (
                [
                    _code(p["product_id"]),
                    _code(p["namespace"]),
                    _e(f"{p['reason']}: {p['error']}"),
                    _e(_when(p["parked_at"])),
                ]
                for p in seen.parked
            ),
            "nothing parked",
        ),
        _section(
            "Last runs",
            "runs",
            ["run", "kind", "subject", "status", "steps", "error", "started"],
            (
                [
                    _e(r["id"]),
                    _e(r["kind"]),
                    _code(r["namespace"] or r["subject"]),
                    f'<span class="{_e(r["status"])}">{_e(r["status"])}</span>',
                    _e(", ".join(r["steps"] or [])),
                    _e(r["error"]),
                    _e(_when(r["started_at"])),
                ]
                for r in seen.runs
            ),
            "no run yet",
        ),
        "</body></html>",
    ]
    return "\n".join(parts)


def _queue_rows(counts: dict[str, int]) -> list[list[str]]:
    statuses = [s for s in _QUEUE_STATUSES if counts.get(s)] + sorted(set(counts) - set(_QUEUE_STATUSES))
    return [[f'<span class="{_e(s)}">{_e(s)}</span>', _e(counts[s])] for s in statuses]


def _section(title: str, anchor: str, headers: Sequence[str], rows: Iterable[list[str]], empty: str) -> str:
    """A heading and a table of already escaped cells (``title`` is the page's own text, never outside data)."""
    body = "".join("<tr>" + "".join(f"<td>{cell}</td>" for cell in row) + "</tr>" for row in rows)
    if not body:
        return f'<h2 id="{anchor}">{title}</h2><p class="none">{_e(empty)}</p>'
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    return f'<h2 id="{anchor}">{title}</h2><table id="{anchor}-table"><tr>{head}</tr>{body}</table>'


def _port(grant: dict[str, Any]) -> str:
    return str(grant["output_port_namespace"] or grant["output_port_id"])


def _e(value: object) -> str:
    """``value`` as HTML text: escaped, quotes included; None as a dash."""
    return "-" if value is None or value == "" else html.escape(str(value), quote=True)


def _code(value: object) -> str:
    return "-" if value is None or value == "" else f"<code>{_e(value)}</code>"


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
