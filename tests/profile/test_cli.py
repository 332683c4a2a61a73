"""``provisioner profile`` end to end, with the tenant from the environment, as tokenization's CLI tests do."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest
from rich.console import Console

from provisioner.cli import main
from provisioner.cli.profile import _progress
from provisioner.profile import ProfileProgress
from provisioner.tokenize import RunRecorder, load_policy_file
from tests.profile.conftest import PEOPLE, create_table, people
from tests.tokenize.test_cli import as_url


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, pg_url: str, pg_empty_url: str) -> str:
    monkeypatch.setenv("PROVISIONER_DATABASE_URL", as_url(pg_url))
    monkeypatch.setenv("PROVISIONER_TENANT_SALES_DSN", pg_empty_url)
    monkeypatch.setenv("PROVISIONER_TOKENIZE_KEY", "cli-test-key")
    monkeypatch.setenv("PROVISIONER_TOKENIZE_ALLOW_SHORT_KEY", "true")  # a short test key
    create_table(pg_empty_url, "people", PEOPLE, people(600))
    return pg_url


def test_json_output(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--tenant", "sales", "--table", "public.people", "--json", "--sample", "300"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)
    (table,) = doc["tables"]
    assert table["table"] == "public.people" and table["rows"] == 600 and table["sampled_rows"] <= 300
    columns = {c["name"]: c for c in table["columns"]}
    assert list(columns) == ["id", "email", "tier", "notes", "age"]
    for c in columns.values():
        assert {"name", "type", "nulls", "distinct_estimate", "proposed_tags", "score", "evidence"} <= set(c)
    assert columns["email"]["proposed_tags"] == ["pii-email"] and columns["email"]["nulls"] == 60
    assert columns["tier"]["proposed_tags"] == [] and columns["tier"]["distinct_estimate"] == 3
    assert {"check": {"function": "is_not_null", "arguments": {"column": "id"}}, "name": "id_is_null",
            "criticality": "error"} in table["checks"]  # fmt: skip
    assert "@example.com" not in out and "@mail.nl" not in out, "masked evidence only"
    assert "p***@e***.com" in out
    record = RunRecorder(env).get(doc["run_id"])
    assert record is not None and record.kind == "profile" and record.result == "SUCCESS"


def test_table_output_for_a_person(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--tenant", "SALES", "--table", "people"]) == 0
    captured = capsys.readouterr()
    assert "public.people: 600 rows" in captured.out
    assert "pii-email" in captured.out and "p***@e***.com" in captured.out
    assert "DQX checks suggested" in captured.out and "tier: is_in_list (3 values)" in captured.out
    assert "@example.com" not in captured.out
    assert "run " in captured.err  # the summary goes to stderr; no progress bar without a terminal
    assert "\x1b[" not in captured.err


def test_proposed_policy_is_a_policy_file_tokenize_can_run(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "proposed.yaml"
    assert main(["profile", "--tenant", "sales", "--table", "public.people", "--propose-policy", str(target)]) == 0
    assert "proposed policy written" in capsys.readouterr().err
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    text = target.read_text()
    assert "Nothing was applied" in text and "score 1.00" in text
    (policy,) = load_policy_file(target).policies()
    assert policy.tenant == "sales"
    assert [(t.name, t.columns) for t in policy.tables] == [("public.people", ("email", "notes"))]
    # The proposal runs as it is (a dry run: nothing is applied here either).
    assert main(["tokenize", "--policy", str(target), "--dry-run"]) == 0
    assert "public.people would change" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--table", "public.people.x"], "table 'public.people.x' is invalid: give schema.table"),
        (["--table", "public.1x"], "table 'public.1x' is invalid"),
        (["--table", "people", "--table", "public.people"], "table public.people is given twice"),
        (["--table", "people", "--sample", "0"], "--sample must be 1 to 1,000,000"),
        (
            ["--table", "people", "--propose-policy", "/nonexistent/dir/p.yaml"],
            "folder /nonexistent/dir does not exist",
        ),
    ],
)
def test_bad_arguments_stop_before_anything_runs(
    env: str, argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["profile", "--tenant", "sales", *argv]) == 1
    assert message in capsys.readouterr().err
    assert RunRecorder(env).last(5) == [], "no run was started"


def test_an_existing_policy_file_is_never_overwritten(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "reviewed.yaml"
    target.write_text("hand-written\n")
    assert main(["profile", "--tenant", "sales", "--table", "people", "--propose-policy", str(target)]) == 1
    assert "exists; write the proposal to a new file" in capsys.readouterr().err
    assert target.read_text() == "hand-written\n"


def test_unknown_tenant_and_missing_table(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--tenant", "hr", "--table", "people"]) == 1
    assert "PROVISIONER_TENANT_HR_DSN" in capsys.readouterr().err
    assert main(["profile", "--tenant", "sales", "--table", "ghost", "--json"]) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["status"] == "FAILURE"
    assert "FAILURE" in captured.err and "table public.ghost does not exist" in captured.err


def test_progress_shows_on_a_terminal_only() -> None:
    sink = io.StringIO()
    terminal = Console(file=sink, force_terminal=True, width=100)
    with _progress(terminal, 2) as show:
        assert show is not None
        show(ProfileProgress(1, 2, "public.people", "started"))
        show(ProfileProgress(1, 2, "public.people", "sampled", 0.1))
        show(ProfileProgress(2, 2, "public.orders", "finished", 0.2))
    assert "public" in sink.getvalue()
    with _progress(Console(file=io.StringIO()), 2) as show:
        assert show is None


def test_runs_lists_profile_runs_with_their_kind(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["profile", "--tenant", "sales", "--table", "people", "--json"]) == 0
    run_id = json.loads(capsys.readouterr().out)["run_id"]
    assert main(["runs", "--last", "5"]) == 0
    (line,) = [row for row in capsys.readouterr().out.splitlines() if run_id in row]
    assert "[profile] profile" in line and "SUCCESS" in line and "600" in line
