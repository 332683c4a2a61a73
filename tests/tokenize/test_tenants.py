"""Tenant connections: fields to connectors, credential providers, redaction, unknown tenants."""

from __future__ import annotations

import sys

import psycopg
import pytest

from provisioner.tokenize import (
    CommandPassword,
    RdsIamToken,
    TenantConnector,
    TenantError,
    Tenants,
    TenantUnavailable,
    TokenizeOptions,
    plan,
    run,
)
from tests.tokenize.conftest import KEY, column, create_people


def test_dsn_fields_connect_and_run(pg_empty_url: str) -> None:
    create_people(pg_empty_url, [("alice@example.com", "1")])
    tenants = Tenants.from_mapping({"SALES": {"DSN": pg_empty_url}})
    result = run(
        plan({"tenant": "sales", "table": "people", "columns": ["email"]}, TokenizeOptions(key=KEY)),
        connect=tenants,
    )
    assert result.ok and result.tenant == "sales"
    assert str(column(pg_empty_url, "email")[0]).startswith("tok_")


def test_host_fields_build_the_connection() -> None:
    connector = TenantConnector.from_fields(
        "eu", {"HOST": "db.internal", "PORT": "6543", "DBNAME": "crm", "USER": "tok", "PASSWORD": "pw-123"}
    )
    assert dict(connector.params) == {"host": "db.internal", "port": "6543", "dbname": "crm", "user": "tok"}
    assert connector.credentials({}) == "pw-123"
    assert "pw-123" not in connector.redacted and "pw-123" not in repr(connector)


def test_password_in_a_dsn_is_redacted_in_errors() -> None:
    connector = TenantConnector.from_fields("x", {"DSN": "postgresql://tok:hunter2@127.0.0.1:1/none?connect_timeout=2"})
    assert "hunter2" not in connector.redacted
    with pytest.raises(TenantUnavailable) as caught:
        connector.connect()
    assert "hunter2" not in str(caught.value) and "tenant x" in str(caught.value)


def test_unknown_tenant_names_the_variables() -> None:
    with pytest.raises(TenantError, match="PROVISIONER_TENANT_HR_DSN"):
        Tenants.from_mapping({"sales": {"DSN": "dbname=x"}})["hr"]


def test_unreachable_tenant_is_a_retryable_failure() -> None:
    tenants = Tenants.from_mapping({"t": {"DSN": "host=127.0.0.1 port=1 dbname=x user=u connect_timeout=2"}})
    result = run(
        plan({"tenant": "t", "table": "people", "columns": ["email"]}, TokenizeOptions(key=KEY)), connect=tenants
    )
    assert result.status == "FAILURE" and result.retryable
    assert "cannot connect to tenant t" in (result.error or "")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "has no connection settings"),
        ({"HOST": "h", "AUTH": "kerberos"}, "AUTH='kerberos' is unknown"),
        ({"HOST": "h", "AUTH": "command"}, "needs PROVISIONER_TENANT_T_COMMAND"),
    ],
)
def test_bad_fields_are_explained(fields: dict[str, str], message: str) -> None:
    with pytest.raises(TenantError, match=message):
        TenantConnector.from_fields("t", fields)


def test_command_provider_supplies_the_password_and_hides_its_output(pg_empty_url: str) -> None:
    printer = CommandPassword(f"{sys.executable} -c \"print('short-lived-token')\"")
    assert printer({}) == "short-lived-token"
    leaky = CommandPassword(f"{sys.executable} -c \"import sys; print('the-secret'); sys.exit(3)\"")
    with pytest.raises(TenantError, match="exited with 3") as caught:
        leaky({})
    assert "the-secret" not in str(caught.value)
    # Wired through the fields, the command runs for each connection (trust auth ignores the password).
    params = psycopg.conninfo.conninfo_to_dict(pg_empty_url)
    connector = TenantConnector.from_fields(
        "t",
        {
            "HOST": str(params["host"]),
            "USER": str(params["user"]),
            "DBNAME": str(params["dbname"]),
            "AUTH": "command",
            "COMMAND": f"{sys.executable} -c \"print('x')\"",
        },
    )
    with connector.connect() as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_rds_iam_provider_signs_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    # generate_db_auth_token presigns locally: no AWS call, no mock.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "example-secret")
    connector = TenantConnector.from_fields(
        "rds",
        {"HOST": "db.abc.eu-west-1.rds.amazonaws.com", "USER": "tokenizer", "AUTH": "rds-iam", "REGION": "eu-west-1"},
    )
    assert isinstance(connector.credentials, RdsIamToken)
    assert connector.params["sslmode"] == "require"
    token = connector.credentials(connector.params)
    assert token is not None
    assert token.startswith("db.abc.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=tokenizer")
    assert "X-Amz-Signature=" in token
