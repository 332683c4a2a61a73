"""The template's output-port mapping without S3: which mart goes to which folder, and folder names that agree
with the provisioner's (a disagreement would publish where no grant can read)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from provisioner.names import Namespace
from provisioner.settings import default_template

PROJECT = default_template() / "{{cookiecutter.namespace}}"
SAMPLES = Path(__file__).parents[1] / "data" / "contract-samples" / "portal-namespaces.json"


@pytest.fixture(scope="module")
def modules() -> Iterator[tuple[ModuleType, ModuleType]]:
    """The template's duckdb_s3 and publish modules, imported from the template folder itself."""
    sys.path.insert(0, str(PROJECT))
    try:
        loaded = []
        for name in ("duckdb_s3", "publish"):
            spec = importlib.util.spec_from_file_location(name, PROJECT / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            loaded.append(module)
        yield loaded[0], loaded[1]
    finally:
        sys.path.remove(str(PROJECT))
        for name in ("duckdb_s3", "publish"):
            sys.modules.pop(name, None)


def test_port_folders_are_the_provisioners_store_names(modules: tuple[ModuleType, ModuleType]) -> None:
    duckdb_s3, _ = modules
    samples = json.loads(SAMPLES.read_text())
    ports = [p["namespace"] for p in samples["output_ports"]] + [p["namespace"] for p in samples["data_products"]]
    odd = ["internal+eu", "a.b", "-x-", "_lead", "trail_", "x@y=z,w", ".a", "a" * 64, "9" * 64 + "", "ok-1_2"]
    for port in ports + odd:
        assert duckdb_s3.port_folder(port) == Namespace(port).store_name, port


def test_the_default_mapping_publishes_every_mart_to_the_default_port(
    modules: tuple[ModuleType, ModuleType], tmp_path: Path
) -> None:
    _, publish = modules
    ports = publish.output_ports(PROJECT / "output_ports.yaml")
    assert ports == {"default": "*"}
    assert publish.plan(["customer_orders", "revenue"], ports) == {
        "customer_orders": ["default"],
        "revenue": ["default"],
    }
    assert publish.output_ports(tmp_path / "absent.yaml") == {"default": "*"}


def test_marts_go_to_the_ports_that_list_them(modules: tuple[ModuleType, ModuleType], tmp_path: Path) -> None:
    _, publish = modules
    path = tmp_path / "output_ports.yaml"
    path.write_text("customer_segments_weekly: [customer_orders]\nall+eu: '*'\n")
    plan = publish.plan(["customer_orders", "revenue", "staging_only"], publish.output_ports(path))
    eu = Namespace("all+eu").store_name
    assert plan == {
        "customer_orders": sorted(["customer_segments_weekly", eu]),
        "revenue": [eu],
        "staging_only": [eu],
    }
    path.write_text("weekly: [revenue]\n")
    assert publish.plan(["customer_orders", "revenue"], publish.output_ports(path))["customer_orders"] == []


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("weekly: [custmer_orders]\n", "lists custmer_orders, not a model"),
        ("Weekly Port: '*'\n", "is not a portal namespace"),
        ("weekly: customer_orders\n", "must list marts"),
        ("- weekly\n", "must map output ports"),
    ],
)
def test_a_wrong_mapping_stops_before_anything_is_written(
    modules: tuple[ModuleType, ModuleType], tmp_path: Path, text: str, message: str
) -> None:
    duckdb_s3, publish = modules
    path = tmp_path / "output_ports.yaml"
    path.write_text(text)
    with pytest.raises(duckdb_s3.ProjectConfigError, match=message):
        publish.plan(["customer_orders"], publish.output_ports(path))
