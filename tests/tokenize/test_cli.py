"""``provisioner tokenize`` and ``provisioner runs`` end to end, with tenants and keys from the environment."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest

from provisioner.cli import main
from tests.tokenize.conftest import KEY, column, create_people

POLICY = """
policies:
  - producer: sales
    output_port: customers
    tenant: sales
    tables:
      - {schema: public, table: people, columns: [email, phone]}
"""


def as_url(conninfo: str) -> str:
    """The fixtures give ``key=value`` strings; Settings wants a URL."""
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    return f"postgresql://{params['user']}@/{params['dbname']}?host={quote(str(params['host']), safe='')}"


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, pg_url: str, pg_empty_url: str, tmp_path: Path) -> Path:
    monkeypatch.setenv("PROVISIONER_DATABASE_URL", as_url(pg_url))
    monkeypatch.setenv("PROVISIONER_TENANT_SALES_DSN", pg_empty_url)
    monkeypatch.setenv("PROVISIONER_TOKENIZE_KEY", KEY)
    monkeypatch.setenv("PROVISIONER_TOKENIZE_ALLOW_SHORT_KEY", "true")  # a short test key
    create_people(pg_empty_url, [("alice@example.com", "1"), ("bob@example.org", None)])
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_dry_run_then_run_then_list(env: Path, pg_empty_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tokenize", "--policy", str(env), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "public.people would change 2 rows" in out and "SUCCESS" in out
    assert column(pg_empty_url, "email")[0] == "alice@example.com"

    assert main(["tokenize", "--policy", str(env), "--tenant", "sales"]) == 0
    out = capsys.readouterr().out
    assert "[1/1] public.people changed 2 rows" in out and "public.people.phone: 1 values" in out
    assert str(column(pg_empty_url, "email")[0]).startswith("tok_")

    assert main(["runs", "--last", "5"]) == 0
    listing = capsys.readouterr().out.splitlines()
    assert len(listing) == 3  # header + 2 runs, newest first
    assert "COMPLETE" in listing[1] and " no " in listing[1] and " yes " in listing[2]


def test_failure_exits_1(env: Path, pg_empty_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    env.write_text(POLICY.replace("[email, phone]", "[email, ghost]"))
    assert main(["tokenize", "--policy", str(env)]) == 1
    assert "FAILURE" in capsys.readouterr().out
    assert column(pg_empty_url, "email")[0] == "alice@example.com"


def test_missing_key_exits_1_with_a_clear_line(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("PROVISIONER_TOKENIZE_KEY")
    assert main(["tokenize", "--policy", str(env)]) == 1
    assert "PROVISIONER_TOKENIZE_KEY is not set" in capsys.readouterr().err


def test_batch_pages_setting_reaches_the_engine(
    env: Path, pg_empty_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    create_people(pg_empty_url, [(f"user{i}@example.com", f"+32 {i}") for i in range(1000)], table="many")
    env.write_text(POLICY.replace("table: people", "table: many"))
    monkeypatch.setenv("PROVISIONER_TOKENIZE_BATCH_PAGES", "2")
    assert main(["tokenize", "--policy", str(env)]) == 0
    # The default (256 pages) would rewrite this small table in one UPDATE, and print no batches.
    assert re.search(r"public\.many changed 1,000 rows in [0-9.]+s \(\d+ batches\)", capsys.readouterr().out)


def test_reading_run_records_that_cannot_be_reached_says_read_not_write() -> None:
    # `provisioner runs` only reads; its error used to say "cannot write the tokenization run record".
    from datetime import UTC, datetime

    from provisioner.tokenize import RecorderError, RunRecorder

    unreachable = RunRecorder("postgresql://nobody@127.0.0.1:1/none?connect_timeout=2")
    with pytest.raises(RecorderError, match=r"^cannot read the tokenization run records: "):
        unreachable.last(5)
    with pytest.raises(RecorderError, match=r"^cannot read the tokenization run records: "):
        unreachable.get("00000000-0000-0000-0000-000000000000")
    with pytest.raises(RecorderError, match=r"^cannot write the tokenization run record: "):
        unreachable.start(run_id="r", tenant="t", policy="p", dry_run=True, tables=[], started_at=datetime.now(UTC))
