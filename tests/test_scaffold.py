"""provisioner.scaffold with the real cookiecutter and the real template (templates/sqlmesh)."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from provisioner import scaffold
from provisioner.errors import InvalidName, ScaffoldError
from provisioner.names import Namespace
from provisioner.scaffold import (
    ENV_KEYS,
    archive_project,
    env_values,
    raw_seed_files,
    read_env,
    render_project,
    write_env,
)
from provisioner.settings import default_template

TEMPLATE = default_template()
SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def context(namespace: str = "sales", **extra: str) -> dict[str, str]:
    return {
        "namespace": namespace,
        "product_id": "3f1c0c8e-5d7a-4a57-9a4e-2b8c1d0e9f10",
        "product_name": "Sales",
        "description": "Orders and customers of the sales team.",
        "bucket": "data-products",
        "s3_endpoint": "http://127.0.0.1:9000",
        "region": "eu-west-1",
        **extra,
    }


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under root: (mtime_ns, inode, content)."""
    return {
        p.relative_to(root).as_posix(): (p.stat().st_mtime_ns, p.stat().st_ino, p.read_bytes())
        for p in root.rglob("*")
        if p.is_file()
    }


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh HOME and TMPDIR, so anything cookiecutter leaves behind is visible."""
    home = tmp_path / "home"
    tmpdir = tmp_path / "tmpdir"
    home.mkdir()
    tmpdir.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.delenv("COOKIECUTTER_CONFIG", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    yield home


@pytest.fixture
def project(tmp_path: Path) -> Path:
    dest = tmp_path / "products" / "sales"
    render_project(TEMPLATE, dest, context())
    return dest


# --- rendering -------------------------------------------------------------------------------------


def test_render_adds_the_project_files_issue_3_asks_for(tmp_path: Path) -> None:
    dest = tmp_path / "products" / "sales"
    added = render_project(TEMPLATE, dest, context())
    for expected in (
        "README.md",
        ".gitignore",
        "config.py",
        "requirements.txt",
        "Makefile",
        "publish.py",
        "consume.py",
        "models/staging/stg_orders.sql",
        "models/marts/customer_orders.sql",
        "tests/test_customer_orders.yaml",
        "audits/assert_positive.sql",
        "seed/raw/orders.csv",
    ):
        assert expected in added
        assert (dest / expected).is_file()
    assert sorted(added) == sorted(snapshot(dest))
    assert ".env" not in added  # credentials come from write_env, never from the template
    readme = (dest / "README.md").read_text()
    assert "# Sales" in readme
    assert "s3://data-products/sales/published/<output port>/<model>.parquet" in readme
    ignored = (dest / ".gitignore").read_text().split()
    assert {".env", "*.duckdb", "logs/", ".cache/"} <= set(ignored)


def test_requirements_pin_duckdb_and_its_httpfs_wheel_to_the_same_version(project: Path) -> None:
    pins = (project / "requirements.txt").read_text().split()
    assert f"duckdb=={duckdb.__version__}" in pins
    assert f"duckdb-extension-httpfs=={duckdb.__version__}" in pins
    assert any(p.startswith("sqlmesh") for p in pins)


def test_rerender_adds_nothing_and_rewrites_nothing(project: Path) -> None:
    before = snapshot(project)
    assert render_project(TEMPLATE, project, context()) == []
    assert snapshot(project) == before


def test_a_user_edit_survives_and_a_deleted_file_comes_back(project: Path) -> None:
    model = project / "models" / "marts" / "customer_orders.sql"
    model.write_text("-- our own mart\nSELECT 1 AS x\n")
    (project / "Makefile").unlink()
    (project / "models" / "marts" / "our_model.sql").write_text("SELECT 2 AS y\n")

    added = render_project(TEMPLATE, project, context(description="changed in the portal"))

    assert added == ["Makefile"]
    assert model.read_text() == "-- our own mart\nSELECT 1 AS x\n"
    assert (project / "models" / "marts" / "our_model.sql").read_text() == "SELECT 2 AS y\n"
    assert "publish:" in (project / "Makefile").read_text()


def test_rendering_leaves_nothing_in_home_or_tmp_and_no_secret_anywhere(isolated_home: Path, tmp_path: Path) -> None:
    dest = tmp_path / "products" / "sales"
    render_project(TEMPLATE, dest, context())
    write_env(dest / ".env", {"S3_ACCESS_KEY": "AKIAEXAMPLE", "S3_SECRET_KEY": SECRET})
    render_project(TEMPLATE, dest, context())

    assert list(isolated_home.iterdir()) == []  # no ~/.cookiecutter_replay, no ~/.cookiecutters
    assert list((tmp_path / "tmpdir").iterdir()) == []
    holders = [p for p in dest.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert holders == [dest / ".env"]


def test_a_secret_in_the_template_context_is_refused(tmp_path: Path) -> None:
    dest = tmp_path / "sales"
    with pytest.raises(ScaffoldError, match="looks like a secret") as refused:
        render_project(TEMPLATE, dest, context(s3_secret_key=SECRET))
    assert SECRET not in str(refused.value)
    with pytest.raises(ScaffoldError, match="credentials"):
        render_project(TEMPLATE, dest, context(s3_endpoint=f"http://admin:{SECRET}@127.0.0.1:9000"))
    assert not dest.exists()


def test_portal_text_is_never_evaluated_as_a_template(tmp_path: Path) -> None:
    dest = tmp_path / "sales"
    name = "Sales {{ 7 * 7 }}"
    description = "{% for x in range(3) %}{{ x }}{% endfor %} {{ cookiecutter.__class__ }} {# note #} {% raw %}"
    render_project(TEMPLATE, dest, context(product_name=name, description=description))
    readme = (dest / "README.md").read_text()
    assert f"# {name}\n" in readme
    assert description in readme


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_shared_compiled_templates_render_the_same_bytes(tmp_path: Path) -> None:
    import jinja2
    from cookiecutter.environment import StrictEnvironment

    compiled = scaffold.CompiledTemplates()
    for ns in ("sales", "hr", "finance"):
        render_project(TEMPLATE, tmp_path / "cached" / ns, context(ns, product_name=f"P {ns}"), compiled)
        render_project(TEMPLATE, tmp_path / "plain" / ns, context(ns, product_name=f"P {ns}"))
        assert _tree(tmp_path / "cached" / ns) == _tree(tmp_path / "plain" / ns)
        assert f"# P {ns}\n" in (tmp_path / "cached" / ns / "README.md").read_text()
    assert compiled.hits > 0, "later renders reuse what the first compiled"
    assert StrictEnvironment.compile is jinja2.Environment.compile, "cookiecutter's own compile is back"


def test_compiled_templates_follow_a_changed_template(tmp_path: Path) -> None:
    import shutil

    template = tmp_path / "template"
    shutil.copytree(TEMPLATE, template)
    compiled = scaffold.CompiledTemplates()
    render_project(template, tmp_path / "one" / "sales", context(), compiled)
    readme = template / "{{cookiecutter.namespace}}" / "README.md"
    readme.write_text("Changed: {{ cookiecutter.namespace }}\n")
    render_project(template, tmp_path / "two" / "sales", context(), compiled)
    assert (tmp_path / "two" / "sales" / "README.md").read_text() == "Changed: sales\n"


def test_an_unsafe_namespace_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    for bad in ("../escape", "Sales", "a/b", "", "a\x00b"):
        with pytest.raises(InvalidName):
            render_project(TEMPLATE, tmp_path / "dest", context(namespace=bad))
    with pytest.raises(InvalidName):
        archive_project(tmp_path, "../products")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("raw", ["customer_segmentation", ".hidden", "com.example@sales+eu=1,2"])
def test_any_portal_namespace_renders_into_its_own_safe_folder(tmp_path: Path, raw: str) -> None:
    ns = Namespace(raw)
    products = tmp_path / "products"
    dest = products / ns.folder
    render_project(TEMPLATE, dest, context(namespace=raw))
    assert [p.name for p in products.iterdir()] == [ns.folder]  # nothing beside it, nothing hidden
    readme = (dest / "README.md").read_text()
    assert f"| namespace | `{raw}` |" in readme  # as the portal shows it
    assert f"s3://data-products/{ns.prefix}raw/" in readme  # the real prefix
    assert f"ATTACH 'product.duckdb' AS {ns.sql_name} (READ_ONLY)" in readme
    assert duckdb.connect().execute(f"SELECT 1 AS {ns.sql_name}").fetchall() == [(1,)]  # an unquoted SQL name
    values = env_values(endpoint="http://s3", bucket="data-products", namespace=ns, region="r")
    assert values["S3_PREFIX"] == ns.prefix
    archived = archive_project(products, ns, now=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert archived == products / ".archive" / f"{ns.folder}-20300102T030405Z"
    assert not dest.exists()


def test_a_missing_template_is_a_scaffold_error(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="not a cookiecutter template"):
        render_project(tmp_path / "nowhere", tmp_path / "sales", context())


def test_raw_seed_files_are_the_rendered_example_data(project: Path, tmp_path: Path) -> None:
    files = raw_seed_files(project)
    assert files == [("orders.csv", (project / "seed" / "raw" / "orders.csv").read_bytes())]
    assert files[0][1].startswith(b"order_id,customer,order_date,amount\n")
    assert raw_seed_files(tmp_path / "empty") == []


# --- .env ------------------------------------------------------------------------------------------


def test_write_env_creates_a_0600_file_even_with_a_permissive_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        assert write_env(tmp_path / ".env", {"S3_SECRET_KEY": SECRET}) is True
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE((tmp_path / ".env").stat().st_mode) == 0o600
    assert read_env(tmp_path / ".env") == {"S3_SECRET_KEY": SECRET}


def test_write_env_file_is_0600_and_complete_before_it_gets_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[tuple[int, str]] = []
    real_replace = os.replace

    def observing_replace(src: str | Path, dst: str | Path) -> None:
        seen.append((stat.S_IMODE(os.stat(src).st_mode), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(scaffold.os, "replace", observing_replace)
    write_env(tmp_path / ".env", {"S3_ACCESS_KEY": "AKIAEXAMPLE", "S3_SECRET_KEY": SECRET})
    assert len(seen) == 1
    mode, content = seen[0]
    assert mode == 0o600
    assert content == (tmp_path / ".env").read_text()


def test_write_env_keeps_user_lines_updates_ours_and_appends_new_keys(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text(
        "# my notes\n"
        "MY_TOKEN=abc  # keep me\n"
        "export S3_BUCKET=old-bucket\n"
        "\n"
        "S3_REGION=us-east-1\n"
        "S3_REGION=shadowing-duplicate\n"
        "DEBUG='1 2 3'\n"
    )
    values = env_values(
        endpoint="http://127.0.0.1:9000",
        bucket="data-products",
        namespace=Namespace("sales"),
        access_key="AKIAEXAMPLE",
        secret_key=SECRET,
        region="eu-west-1",
        read_prefixes=[
            "data-products/marketing/published/segments/",
            "data-products/finance/published/ledger/",
            "data-products/marketing/published/segments/",
        ],
    )
    assert write_env(path, values) is True
    text = path.read_text()
    lines = text.splitlines()
    assert lines[:4] == ["# my notes", "MY_TOKEN=abc  # keep me", "S3_BUCKET=data-products", ""]
    assert lines[4:6] == ["S3_REGION=eu-west-1", "DEBUG='1 2 3'"]
    assert text.count("S3_REGION") == 1
    env = read_env(path)
    assert env["MY_TOKEN"] == "abc"
    assert env["DEBUG"] == "1 2 3"
    assert {k: env[k] for k in ENV_KEYS} == values
    assert env["S3_PREFIX"] == "sales/"
    assert env["S3_READ_PREFIXES"] == (
        "data-products/finance/published/ledger/,data-products/marketing/published/segments/"
    )
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_env_does_not_rewrite_an_unchanged_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    values = {"S3_ACCESS_KEY": "AKIAEXAMPLE", "S3_SECRET_KEY": SECRET}
    assert write_env(path, values) is True
    with path.open("a") as f:
        f.write("MINE=1\n")
    before = path.stat()
    assert write_env(path, values) is False
    after = path.stat()
    assert (after.st_mtime_ns, after.st_ino) == (before.st_mtime_ns, before.st_ino)
    assert write_env(path, {**values, "S3_SECRET_KEY": "rotated"}) is True
    assert read_env(path) == {"S3_ACCESS_KEY": "AKIAEXAMPLE", "S3_SECRET_KEY": "rotated", "MINE": "1"}


def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / ".env"
    write_env(path, {"S3_SECRET_KEY": "old"})
    old = path.read_bytes()

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scaffold.os, "fsync", failing_fsync)
    with pytest.raises(ScaffoldError, match="No space left") as failed:
        write_env(path, {"S3_SECRET_KEY": SECRET})
    assert SECRET not in str(failed.value)
    assert path.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == [".env"]


def test_write_env_refuses_values_a_dot_env_cannot_hold_without_echoing_them(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="S3_SECRET_KEY") as refused:
        write_env(tmp_path / ".env", {"S3_SECRET_KEY": "line1\nline2'"})
    assert "line1" not in str(refused.value)
    with pytest.raises(ScaffoldError):
        write_env(tmp_path / ".env", {"BAD KEY": "x"})
    assert not (tmp_path / ".env").exists()


def test_read_env_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_env(tmp_path / ".env") == {}


@pytest.mark.parametrize(
    "prefix",
    ["../admin", "b/sales/", "b/sales/published/../", "b/sales/published/orders", "b/a,b/published/x/", "b/s/p/x/\n"],
)
def test_env_values_refuses_an_unsafe_read_prefix(prefix: str) -> None:
    with pytest.raises(InvalidName):
        env_values(
            endpoint="http://s3",
            bucket="b",
            namespace=Namespace("sales"),
            access_key="a",
            secret_key="s",
            region="r",
            read_prefixes=[prefix],
        )


# --- archive ---------------------------------------------------------------------------------------


def test_archive_moves_the_project_aside_with_a_utc_timestamp(project: Path) -> None:
    products = project.parent
    write_env(project / ".env", {"S3_SECRET_KEY": SECRET})
    moment = datetime(2026, 11, 22, 10, 30, 5, tzinfo=UTC)

    first = archive_project(products, Namespace("sales"), now=moment)

    assert first == products / ".archive" / "sales-20261122T103005Z"
    assert not project.exists()
    assert (first / "models" / "marts" / "customer_orders.sql").is_file()
    assert (first / ".env").read_text() == f"{scaffold._ENV_HEADER}S3_SECRET_KEY={SECRET}\n"
    assert archive_project(products, Namespace("sales"), now=moment) is None

    render_project(TEMPLATE, project, context())  # the namespace is reused: a fresh project
    second = archive_project(products, Namespace("sales"), now=moment)
    assert second == products / ".archive" / "sales-20261122T103005Z-1"
    assert first.is_dir()
