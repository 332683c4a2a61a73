import re
from pathlib import Path

import pytest

from provisioner.cli import main
from provisioner.errors import SettingsError
from provisioner.settings import DOCUMENTED, TENANT_FIELDS, Settings, shown_value
from provisioner.settings import reference as settings_reference
from provisioner.settings.declare import variables

ROOT = Path(__file__).resolve().parent.parent
#: The configuration reference: generated from the declarations (it left the README for docs/, issue 15).
REFERENCE = ROOT / "docs" / "configuration.md"


def test_defaults_need_no_environment() -> None:
    s = Settings.from_env({})
    assert s.port == 8090
    assert s.embedded_database and s.embedded_store
    assert s.products_dir == Path(".provisioner/products")
    assert s.s3_bucket == "data-products"


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("PROVISIONER_PORT", "99999"),
        ("PROVISIONER_S3_BUCKET", "Not_A_Bucket"),
        ("PROVISIONER_DELETE_DATA", "maybe"),
        ("PROVISIONER_STORE_KIND", "gcs"),
        ("PROVISIONER_DATABASE_URL", "not a url"),
        ("PROVISIONER_TENANT_X_FAVOURITE_COLOUR", "blue"),
    ],
)
def test_bad_values_name_the_variable(var: str, value: str) -> None:
    with pytest.raises(SettingsError, match=var.split("_X_")[0]):
        Settings.from_env({var: value})


def test_endpoint_requires_admin_key() -> None:
    with pytest.raises(SettingsError, match="PROVISIONER_S3_ACCESS_KEY"):
        Settings.from_env({"PROVISIONER_S3_ENDPOINT": "http://127.0.0.1:9000"})


def test_tenant_ids_may_contain_underscores() -> None:
    s = Settings.from_env({"PROVISIONER_TENANT_SALES_EU_DSN": "postgresql:///x", "PROVISIONER_TENANT_HR_USER": "u"})
    assert s.tenants == {"sales_eu": {"DSN": "postgresql:///x"}, "hr": {"USER": "u"}}


def test_every_settings_field_is_documented() -> None:
    names = {f"PROVISIONER_{f.upper()}" for f in Settings.__dataclass_fields__ if f != "tenants"}
    assert names <= set(DOCUMENTED)


def test_cli_bad_setting_exits_1_with_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from provisioner.cli import build_parser

    def fail(_args: object) -> int:
        Settings.from_env()
        return 0

    monkeypatch.setenv("PROVISIONER_PORT", "abc")
    parser = build_parser()
    parser.set_defaults(func=fail)
    monkeypatch.setattr("provisioner.cli.build_parser", lambda: parser)
    assert main([]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "PROVISIONER_PORT" in err[0]


def test_the_reference_documents_every_setting() -> None:
    reference = REFERENCE.read_text()
    missing = [name for name in DOCUMENTED if f"`{name}`" not in reference]
    assert missing == []


def test_the_reference_is_generated_from_the_declarations() -> None:
    # Fails (CI fails) when a setting is added, changed or removed without `python -m provisioner.settings
    # --write docs/configuration.md`, or when someone edits the generated tables by hand.
    text = REFERENCE.read_text(encoding="utf-8")
    assert settings_reference.with_reference(text) == text, (
        "run: python -m provisioner.settings --write docs/configuration.md"
    )


def test_reference_check_fails_on_a_hand_edited_table_and_write_repairs_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "config.md"
    doc.write_text(REFERENCE.read_text(encoding="utf-8").replace("| `8090` |", "| `8091` |", 1), encoding="utf-8")
    assert settings_reference.main(["--check", str(doc)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert settings_reference.main(["--write", str(doc)]) == 0
    assert doc.read_text(encoding="utf-8") == REFERENCE.read_text(encoding="utf-8")
    assert settings_reference.main(["--check", str(doc)]) == 0


def test_reference_without_markers_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    doc = tmp_path / "plain.md"
    doc.write_text("# nothing generated here\n", encoding="utf-8")
    assert settings_reference.main(["--check", str(doc)]) == 1
    assert "markers" in capsys.readouterr().err


def test_defaults_are_declared_once() -> None:
    # The dataclass default is the default from_env applies: one value (the template path used to differ).
    assert Settings.from_env({}) == Settings()
    assert Settings().template.is_dir()


def test_every_setting_documents_its_meaning_in_one_line() -> None:
    for var in variables(Settings):
        assert var.declared.doc.strip() and "\n" not in var.declared.doc, var.name
        assert var.declared.kind.accepts, var.name


def test_secret_settings_stay_out_of_repr_and_errors() -> None:
    secrets = {var.name: var.attribute for var in variables(Settings) if var.declared.secret}
    assert "PROVISIONER_WEBHOOK_SECRET" in secrets and "PROVISIONER_TOKENIZE_KEY" in secrets
    for name, attribute in secrets.items():
        assert shown_value(name, "hunter2-hunter2-hunter2") == "'****'", name
        settings = Settings(**{attribute: "hunter2-hunter2-hunter2"})  # type: ignore[arg-type]
        assert "hunter2" not in repr(settings), name


def test_every_tenant_field_the_tokenize_package_reads_is_declared() -> None:
    # tokenize reads the fields from the mapping the settings build; a field it reads but the settings refuse
    # (or do not document) could never be set.
    source = "\n".join(p.read_text(encoding="utf-8") for p in (ROOT / "provisioner" / "tokenize").glob("*.py"))
    read = set(re.findall(r'(?:upper|fields)(?:\.get\(|\[)"([A-Z_]+)"', source))
    assert read and read <= TENANT_FIELDS, read - TENANT_FIELDS


@pytest.mark.parametrize(
    ("var", "value", "secret"),
    [
        ("PROVISIONER_DATABASE_URL", "host=db user=prov password=hunter2", "hunter2"),
        ("PROVISIONER_DATABASE_URL", "host=db sslpassword='pass phrase' user=prov", "pass phrase"),
        ("PROVISIONER_PORTAL_URL", "portal.internal?token=tok-123", "tok-123"),
        ("PROVISIONER_S3_ENDPOINT", "admin:hunter2@minio:9000", "hunter2"),
        ("PROVISIONER_STATUS_TOKEN", "short-tok", "short-tok"),
    ],
)
def test_rejected_settings_do_not_echo_secrets(var: str, value: str, secret: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({var: value})
    message = str(caught.value)
    assert var in message  # still names the variable at fault
    assert secret not in message.replace(var, "")


def test_rejected_harmless_values_stay_readable() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"PROVISIONER_DATABASE_URL": "db.internal/provisioner"})
    assert "PROVISIONER_DATABASE_URL='db.internal/provisioner' is invalid" in str(caught.value)


def test_cli_masks_secrets_in_any_error_it_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from provisioner.cli import build_parser
    from provisioner.errors import DatabaseUnavailable

    def fail(_args: object) -> int:
        raise DatabaseUnavailable("cannot reach PostgreSQL at host=db user=prov password=hunter2 dbname=p")

    parser = build_parser()
    parser.set_defaults(func=fail)
    monkeypatch.setattr("provisioner.cli.build_parser", lambda: parser)
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "hunter2" not in err and "password=****" in err


def test_allow_embedded_false_needs_an_external_database_and_store() -> None:
    external = {
        "PROVISIONER_ALLOW_EMBEDDED": "false",
        "PROVISIONER_DATABASE_URL": "postgresql://p@db/p",
        "PROVISIONER_S3_ENDPOINT": "http://store:9000",
        "PROVISIONER_S3_ACCESS_KEY": "admin",
        "PROVISIONER_S3_SECRET_KEY": "admin-secret",
    }
    assert Settings.from_env(external).allow_embedded is False
    for missing in ("PROVISIONER_DATABASE_URL", "PROVISIONER_S3_ENDPOINT"):
        env = {k: v for k, v in external.items() if k != missing}
        if missing == "PROVISIONER_S3_ENDPOINT":
            env = {k: v for k, v in env.items() if not k.startswith("PROVISIONER_S3_")}
        with pytest.raises(SettingsError, match=f"^{missing} must be set: PROVISIONER_ALLOW_EMBEDDED=false"):
            Settings.from_env(env)
    assert Settings.from_env({}).allow_embedded is True  # a single local process starts its own
