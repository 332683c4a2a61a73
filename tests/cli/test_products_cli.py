"""The product commands end to end: provision, status, rotate, resync, grants (real DB, moto, stand-in portal)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from provisioner.cli import main
from provisioner.scaffold import read_env
from tests.cli.test_serve import as_url
from tests.fixtures.s3 import S3Server


@pytest.fixture
def cli_env(
    monkeypatch: pytest.MonkeyPatch, pg_url: str, portal: Any, moto_server: S3Server, unique_name: str, tmp_path: Path
) -> Path:
    for name, value in {
        "PROVISIONER_DATABASE_URL": as_url(pg_url),
        "PROVISIONER_PORTAL_URL": portal.url,
        "PROVISIONER_S3_ENDPOINT": moto_server.endpoint,
        "PROVISIONER_S3_ACCESS_KEY": moto_server.access_key,
        "PROVISIONER_S3_SECRET_KEY": moto_server.secret_key,
        "PROVISIONER_S3_BUCKET": unique_name,
        "PROVISIONER_PRODUCTS_DIR": str(tmp_path / "products"),
        "COLUMNS": "200",
    }.items():
        monkeypatch.setenv(name, value)
    return tmp_path / "products"


def test_provision_status_rotate_resync(
    cli_env: Path, portal: Any, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ns = f"{unique_name}-cli"
    product = portal.state.create_product("Cli Product", ns, notify=False)

    assert main(["provision", product.id]) == 0
    assert "success" in capsys.readouterr().out
    key = read_env(cli_env / ns / ".env")["S3_ACCESS_KEY"]

    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert ns in out and key in out and "provisioned" in out
    assert read_env(cli_env / ns / ".env")["S3_SECRET_KEY"] not in out

    assert main(["rotate", ns]) == 0
    new_key = read_env(cli_env / ns / ".env")["S3_ACCESS_KEY"]
    assert new_key != key and new_key in capsys.readouterr().out

    assert main(["status", ns]) == 0
    out = capsys.readouterr().out
    assert "rotate" in out and "key_rotated" in out

    assert main(["resync"]) == 0
    assert "resync: 0 reconcile(s), 0 failed" in capsys.readouterr().err

    assert main(["provision", ns]) == 0  # by namespace too
    assert main(["grants"]) == 0


def test_rotate_of_an_unknown_namespace_fails_clearly(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rotate", "nobody-here"]) == 1
    assert "not provisioned here" in capsys.readouterr().err


def test_provision_of_a_bad_namespace_exits_1(cli_env: Path, portal: Any, capsys: pytest.CaptureFixture[str]) -> None:
    product = portal.state.create_product("Bad", "Not A Slug", notify=False, check_namespace=False)
    assert main(["provision", product.id]) == 1
    assert "not one the portal accepts" in capsys.readouterr().err


def test_resync_repairs_a_missed_approval_and_grants_shows_it(
    cli_env: Path, portal: Any, unique_name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROVISIONER_TOKENIZE_REQUIRE_POLICY", "false")  # no policy file: grant untokenized
    producer = portal.state.create_product("Producer", f"{unique_name}-p", notify=False)
    consumer = portal.state.create_product("Consumer", f"{unique_name}-c", notify=False)
    port = portal.state.create_output_port(producer.id, "Orders", namespace="orders", notify=False)
    portal.state.request_access(consumer.id, port.id, notify=False)
    portal.state.approve(port.id, consumer.id, notify=False)  # every webhook was lost

    assert main(["resync"]) == 0  # provisions both products, then converges the consumer's grant
    assert "0 failed" in capsys.readouterr().err
    env = read_env(cli_env / f"{unique_name}-c" / ".env")
    assert env["S3_READ_PREFIXES"] == f"{unique_name}/{unique_name}-p/published/orders/"

    assert main(["grants", f"{unique_name}-c"]) == 0
    out = capsys.readouterr().out
    assert f"{unique_name}-c" in out and f"{unique_name}-p/published/orders/" in out
    assert "untokenized" in out and "not granted yet" not in out

    # What the consumer reads, in `status`, comes from its grant decisions (one source since migration 012).
    assert main(["status", f"{unique_name}-c"]) == 0
    assert f"{unique_name}/{unique_name}-p/published/orders/" in capsys.readouterr().out.replace("\n", "")


def test_grants_says_why_an_approved_port_waits(
    cli_env: Path, portal: Any, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 §3: by default a restricted port without a tokenization decision waits, and `grants` says why."""
    producer = portal.state.create_product("Producer", f"{unique_name}-p", notify=False)
    consumer = portal.state.create_product("Consumer", f"{unique_name}-c", notify=False)
    port = portal.state.create_output_port(producer.id, "Customers", namespace="customers", notify=False)
    portal.state.request_access(consumer.id, port.id, notify=False)
    portal.state.approve(port.id, consumer.id, notify=False)

    assert main(["resync"]) == 0
    capsys.readouterr()
    assert read_env(cli_env / f"{unique_name}-c" / ".env")["S3_READ_PREFIXES"] == ""

    assert main(["grants", f"{unique_name}-p"]) == 0
    out = capsys.readouterr().out
    assert "1 approved output port(s) not granted yet" in out
    assert f"{unique_name}-c waits for {unique_name}-p/customers" in out
    assert "no tokenization decision for restricted output port" in out and "tokenize: none" in out


def test_status_shows_a_parked_product_and_provision_tries_it_again(
    cli_env: Path, portal: Any, unique_name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 12 §7: a permanent failure is parked, shown with its reason, and retried by hand."""
    ns = f"{unique_name}-shared"
    owner = portal.state.create_product("Owner", ns, notify=False)
    claimant = portal.state.create_product("Claimant", ns, notify=False)
    assert main(["provision", owner.id]) == 0
    assert main(["provision", claimant.id]) == 1  # NamespaceConflict: parked
    capsys.readouterr()

    assert main(["resync"]) == 0  # a parked product is not retried by resync
    assert "resync: 0 reconcile(s), 0 failed" in capsys.readouterr().err
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "Parked" in out and claimant.id in out and "NamespaceConflict" in out and "already" in out
    assert main(["status", ns]) == 0  # the namespace's owner, and the product parked on it
    assert claimant.id in capsys.readouterr().out

    portal.state.products[claimant.id].namespace = f"{unique_name}-own"  # the team picks another namespace
    assert main(["provision", "--parked"]) == 0
    assert f"{claimant.id}: success" in capsys.readouterr().out.replace("\n", " ")
    assert main(["status"]) == 0
    assert "Parked" not in capsys.readouterr().out
