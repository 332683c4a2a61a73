"""Issue 18 end to end through the composition root: PROVISIONER_TARGETS=s3,bigquery builds the BigQuery target
(site.extra_targets), `provision` converges both, `status` shows each target's outcome and what exists."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.cli import main
from provisioner.names import Namespace
from provisioner.scaffold import read_env
from provisioner.testing.bqemulator import Emulator
from tests.cli.test_products_cli import cli_env  # noqa: F401  (the fixture)
from tests.fixtures.bigquery import PROJECT

pytestmark = pytest.mark.bigquery


def test_provision_and_status_with_s3_and_bigquery(
    cli_env: Path,  # noqa: F811
    portal: Any,
    unique_name: str,
    bq_emulator: Emulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = f"{unique_name}_bq".replace("-", "_")
    for name, value in {
        "PROVISIONER_TARGETS": "s3,bigquery",
        "PROVISIONER_BIGQUERY_PROJECT": PROJECT,
        "PROVISIONER_BIGQUERY_ENDPOINT": bq_emulator.endpoint,
        "PROVISIONER_BIGQUERY_PRINCIPALS": f"{ns}=group:{ns}@example.com",
    }.items():
        monkeypatch.setenv(name, value)
    product = portal.state.create_product("Two Targets", ns, notify=False)

    assert main(["provision", product.id]) == 0
    env = read_env(cli_env / ns / ".env")
    dataset = f"dp_{Namespace(ns).sql_name}"
    assert env["S3_ACCESS_KEY"] and env["BQ_DATASET"] == dataset
    capsys.readouterr()

    assert main(["status", ns]) == 0
    out = capsys.readouterr().out
    assert "bigquery" in out and "converged" in out
    assert f"dataset={PROJECT}.{dataset}" in out and "exists=True" in out
    assert f"{ns}@example.com" in out  # the team's WRITER entry, as BigQuery shows it


def test_check_has_one_line_per_target_beside_s3(bq_emulator: Emulator) -> None:
    from provisioner.cli.check import run_checks, target_checks
    from provisioner.settings import Settings

    assert target_checks(Settings.from_env({})) == []  # S3 alone: the store check covers it
    up = Settings.from_env(
        {
            "PROVISIONER_TARGETS": "s3,bigquery",
            "PROVISIONER_BIGQUERY_PROJECT": PROJECT,
            "PROVISIONER_BIGQUERY_ENDPOINT": bq_emulator.endpoint,
        }
    )
    [ok] = run_checks(target_checks(up))
    assert (ok.name, ok.status) == ("target bigquery", "ok")
    assert ok.line == f"bigquery project {PROJECT} answers at {bq_emulator.endpoint}"
    down = Settings.from_env(
        {
            "PROVISIONER_TARGETS": "s3,bigquery",
            "PROVISIONER_BIGQUERY_PROJECT": PROJECT,
            "PROVISIONER_BIGQUERY_ENDPOINT": "http://127.0.0.1:9",
        }
    )
    [failed] = run_checks(target_checks(down))
    assert failed.status == "FAIL" and failed.line.startswith(f"BigQuery: project {PROJECT} at http://127.0.0.1:9")
