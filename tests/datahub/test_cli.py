"""``provisioner datahub-actions``: a pipeline YAML run end to end; the extra stays out of the core install."""

from __future__ import annotations

import json
import re
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from provisioner.cli import main
from tests.cli.test_serve import as_url
from tests.datahub.conftest import KEY, ROWS, Harness, field_event

ROOT = Path(__file__).resolve().parents[2]


def test_datahub_actions_runs_the_pipeline_and_its_jobs(
    harness: Harness, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = tmp_path / "events.jsonl"
    events.write_text(json.dumps(field_event("email")) + "\n")
    pipeline = harness.pipeline_config([])
    pipeline["source"] = {
        "type": "provisioner.testing.datahub_events:JsonLinesEventSource",  # by import path, as a YAML would
        "config": {"path": "${EVENTS_FILE}"},
    }
    del pipeline["action"]["config"]["database_url"]  # from PROVISIONER_DATABASE_URL, as in production
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    monkeypatch.setenv("EVENTS_FILE", str(events))
    monkeypatch.setenv("PROVISIONER_DATABASE_URL", as_url(harness.database_url))
    monkeypatch.setenv("PROVISIONER_TENANT_T1_DSN", harness.tenant_url)
    monkeypatch.setenv("PROVISIONER_TOKENIZE_KEY", KEY)
    monkeypatch.setenv("PROVISIONER_TOKENIZE_ALLOW_SHORT_KEY", "true")  # a short test key

    assert main(["datahub-actions", "-c", str(path), "--once"]) == 0

    assert all(r[0] is None or r[0].startswith("tok_") for r in harness.table())
    (dpi,) = harness.dpi_urns()
    assert harness.gms.run_events(dpi)[-1]["result"]["type"] == "SUCCESS"
    logged = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    success = [e for e in logged if e["event"] == "tokenize.success"]
    assert success and success[0]["dataset_urn"].endswith("shop.public.customers,PROD)")


def test_a_pipeline_naming_another_action_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump({"name": "x", "source": {"type": "kafka"}, "action": {"type": "hello_world"}}))
    assert main(["datahub-actions", "-c", str(path)]) == 1
    assert "action.type must be 'provisioner.datahub:TokenizeAction'" in capsys.readouterr().err
    assert ROWS  # nothing ran


def test_without_the_extra_one_clear_line(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "datahub_actions.pipeline.pipeline", None)  # import fails as if not installed
    assert main(["datahub-actions", "-c", str(tmp_path / "pipeline.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "provisioner: configuration error: the DataHub plugin needs the datahub extra: "
        "pip install 'provisioner[datahub]'"
    ]


def test_the_core_install_carries_no_kafka_azure_or_msk() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for name in ("datahub", "kafka", "azure", "msk"):
        assert name not in core
    assert any(d.startswith("acryl-datahub-actions") for d in project["optional-dependencies"]["datahub"])
    # `make test` installs the extra: the Makefile names the extras it installs (through .ci/install-venv).
    install = re.search(r"^\t\.ci/install-venv \S+ \S+ (\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert install and "datahub" in install.group(1).split(",")


def test_shipped_pipelines_are_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    from datahub.configuration.config_loader import load_config_file
    from datahub_actions.pipeline.pipeline_config import FailureMode, PipelineConfig
    from datahub_actions.plugin.source.kafka.kafka_event_source import KafkaEventSourceConfig
    from datahub_actions.plugin.source.pgqueue.pg_queue_event_source import PgQueueEventSourceConfig

    from provisioner.datahub.worker import pipeline_parts

    monkeypatch.setenv("DATAHUB_PGQUEUE_PASSWORD", "example")
    sources = {"kafka": KafkaEventSourceConfig, "pg_queue": PgQueueEventSourceConfig}
    for name in ("pipeline-kafka.yaml", "pipeline-pg-queue.yaml"):
        raw = load_config_file(ROOT / "deploy" / "datahub" / name)
        config = PipelineConfig.model_validate(raw)
        sources[config.source.type].model_validate(config.source.config)
        parts = pipeline_parts(raw)
        assert parts.action.tenants and config.options is not None
        assert config.options.failure_mode == FailureMode.THROW  # an event that cannot be queued is not acknowledged
