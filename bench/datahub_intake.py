"""Benchmark of the DataHub Actions plugin's intake: act() latency and events per second into the durable queue.

    python bench/datahub_intake.py [--events 1000] [--pipeline-events 5000] [--rounds 3]

Uses PROVISIONER_DATABASE_URL when set, else starts embedded PostgreSQL in a temporary directory (migrated). Needs
the datahub extra. Measured, each on a fresh queue:

* act():      ``TokenizeAction.act()`` on ``--events`` distinct tag events (one request row and one job each), one
              at a time, each timed with perf_counter; p50 / p99 / max; with ``synchronous_commit`` on (the default:
              each request flushed to the WAL before the event is acknowledged) and off. Target: p99 under 5 ms
              (Kafka's ``max.poll.interval.ms`` is 10 s, and act() must leave the poll loop all of it).
* replay:     act() on the same events again (each absorbed: the key is known, nothing queued).
* floor:      ``SELECT 1`` on the same kind of connection (one round trip to PostgreSQL), the baseline of the ratios;
              and a one-row ``INSERT`` into a bench table with ``synchronous_commit`` on: the smallest durable commit
              (one round trip and one WAL flush), the least a durable act() can cost.
* pipeline:   a real Actions ``Pipeline`` (JSON-lines source, the event_type filter, the action) over
              ``--pipeline-events`` events, events per second into the queue; and the same pipeline with an action
              that does nothing, the framework's own ceiling here.

The act() measurements alternate on/off ``--rounds`` times (medians reported, each round in ``every_round``).
Nothing is tokenized: no worker runs. Every queued job is counted at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
from datahub_actions.action.action import Action
from datahub_actions.event.event_envelope import EventEnvelope
from datahub_actions.pipeline.pipeline import Pipeline
from datahub_actions.pipeline.pipeline_context import PipelineContext

from provisioner import db
from provisioner.datahub import TokenizeAction, TokenizeActionConfig
from provisioner.datahub.queue import RequestQueue
from provisioner.testing import datahub_events

logging.getLogger().setLevel(logging.WARNING)  # the framework turned INFO on for everything (basicConfig)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "tests" / "data" / "contract-samples" / "datahub" / "events.json"
TAG = "urn:li:tag:tokenize-now"
CTX = PipelineContext("bench", None)


class NoOpAction(Action):
    """The baseline action: acknowledges every event and does nothing."""

    @classmethod
    def create(cls, config_dict: dict[str, Any], ctx: PipelineContext) -> NoOpAction:
        return cls()

    def act(self, event: EventEnvelope) -> bool:
        return True

    def close(self) -> None:
        return None


def events(n: int, offset: int = 0) -> list[dict[str, Any]]:
    """``n`` distinct field tag events (UI shape), over 100 datasets and 5 fields, each with its own stamp."""
    base = json.loads(SAMPLES.read_text())["field_tag_add_via_ui_editableSchemaMetadata"]
    out = []
    for i in range(n):
        e = copy.deepcopy(base)
        dataset = f"urn:li:dataset:(urn:li:dataPlatform:postgres,shop.public.t{i % 100},PROD)"
        field = f"c{i % 5}"
        e["event"]["entityUrn"] = f"urn:li:schemaField:({dataset},{field})"
        e["event"]["parameters"].update(fieldPath=field, parentUrn=e["event"]["entityUrn"])
        e["event"]["auditStamp"]["time"] = 1_700_000_000_000 + offset + i
        out.append(e)
    return out


def percentiles(samples_ms: list[float]) -> dict[str, float]:
    ordered = sorted(samples_ms)
    q = statistics.quantiles(ordered, n=100, method="inclusive")
    return {"p50": round(q[49], 3), "p99": round(q[98], 3), "max": round(ordered[-1], 3)}


def reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM provisioner_datahub_runs")
        conn.execute("DELETE FROM procrastinate_jobs WHERE queue_name = 'datahub'")


def queued(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'tokenize_dataset'").fetchone()
    return int(row[0]) if row else 0


def config(url: str, synchronous_commit: str = "on") -> dict[str, Any]:
    return {
        "tenants": [{"platform": "postgres", "tenant": "t1"}],
        "database_url": url,
        "synchronous_commit": synchronous_commit,
    }


def bench_act(url: str, n: int, synchronous_commit: str) -> dict[str, Any]:
    reset(url)
    queue = RequestQueue(url, synchronous_commit=synchronous_commit)
    action = TokenizeAction(TokenizeActionConfig.model_validate(config(url, synchronous_commit)), CTX, queue)
    envelopes = [EventEnvelope.from_json(json.dumps(e)) for e in events(n)]
    action.act(envelopes[0])  # the connection opens on first use: not part of the figures
    reset(url)

    def timed(batch: list[EventEnvelope]) -> list[float]:
        out = []
        for envelope in batch:
            start = time.perf_counter()
            action.act(envelope)
            out.append((time.perf_counter() - start) * 1000)
        return out

    first = timed(envelopes)
    jobs = queued(url)
    again = timed(envelopes)
    floor = []
    durable_floor = []
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("SET synchronous_commit = on")
    conn.execute("CREATE TABLE IF NOT EXISTS bench_durable_floor (at timestamptz)")
    for _ in range(n):
        start = time.perf_counter()
        conn.execute("SELECT 1").fetchone()
        floor.append((time.perf_counter() - start) * 1000)
        start = time.perf_counter()
        conn.execute("INSERT INTO bench_durable_floor VALUES (now())")
        durable_floor.append((time.perf_counter() - start) * 1000)
    conn.execute("DROP TABLE bench_durable_floor")
    conn.close()
    action.close()
    return {
        "act": percentiles(first),
        "replay": percentiles(again),
        "floor_select_1": percentiles(floor),
        "floor_durable_commit": percentiles(durable_floor),
        "jobs_queued": jobs,
        "jobs_after_replay": queued(url),
    }


def _median_of(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Each number of the rounds' results (nested dicts alike) replaced by its median over the rounds."""
    out: dict[str, Any] = {}
    for key, value in rounds[0].items():
        if isinstance(value, dict):
            out[key] = _median_of([r[key] for r in rounds])
        elif isinstance(value, int | float):
            out[key] = round(statistics.median(r[key] for r in rounds), 3)
        else:
            out[key] = value
    return out


def bench_pipeline(url: str, n: int, tmp: Path, action_type: str) -> dict[str, Any]:
    reset(url)
    path = tmp / f"events-{action_type.rsplit(':', 1)[-1]}.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in events(n, offset=10_000_000)))
    pipeline = Pipeline.create(
        {
            "name": "bench",
            **datahub_events.tag_added_source(path, TAG),
            "action": {"type": action_type, "config": config(url) if "TokenizeAction" in action_type else {}},
            "options": {"failure_mode": "THROW", "failed_events_dir": str(tmp / "failed")},
        }
    )
    start = time.perf_counter()
    try:
        pipeline.run()
    finally:
        pipeline.close()
    seconds = time.perf_counter() - start
    return {"events": n, "seconds": round(seconds, 3), "events_per_s": round(n / seconds), "jobs_queued": queued(url)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--pipeline-events", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-datahub-") as tmp_dir:
        tmp = Path(tmp_dir)
        url = os.environ.get("PROVISIONER_DATABASE_URL")
        if not url:
            tmp.chmod(0o755)  # the embedded server may run as its own user
            url = db.start_embedded(tmp / "pg").url
        db.migrate(url)
        # on and off alternate ``--rounds`` times, so a change of the machine's load hits both alike; the figures
        # are the medians over the rounds, each round's are in ``every_round``.
        rounds: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
        for _ in range(args.rounds):
            for mode in ("on", "off"):
                rounds[mode].append(bench_act(url, args.events, mode))
        queue = bench_pipeline(url, args.pipeline_events, tmp, "provisioner.datahub:TokenizeAction")
        noop = bench_pipeline(url, args.pipeline_events, tmp, f"{__name__}:NoOpAction")
    on, off = _median_of(rounds["on"]), _median_of(rounds["off"])
    result = {
        "load_average": os.getloadavg(),
        "rounds": args.rounds,
        "synchronous_commit_on": on,
        "synchronous_commit_off": off,
        "every_round": rounds,
        "pipeline_into_queue": queue,
        "pipeline_noop_action": noop,
        "act_on_p50_over_durable_floor_p50": round(on["act"]["p50"] / on["floor_durable_commit"]["p50"], 2),
        "act_on_p99_over_durable_floor_p99": round(on["act"]["p99"] / on["floor_durable_commit"]["p99"], 2),
        "act_on_p50_over_select_1_p50": round(on["act"]["p50"] / on["floor_select_1"]["p50"], 2),
        "act_p99_on_over_off": round(on["act"]["p99"] / off["act"]["p99"], 2),
        "pipeline_queue_over_noop": round(queue["events_per_s"] / noop["events_per_s"], 2),
        "target_act_p99_under_5ms": {"on": on["act"]["p99"] < 5.0, "off": off["act"]["p99"] < 5.0},
        "durable_floor_p99_under_5ms": on["floor_durable_commit"]["p99"] < 5.0,
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
