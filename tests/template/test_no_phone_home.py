"""A scaffolded project never sends SQLMesh's anonymized usage analytics (sqlmesh plan contacted the vendor)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from provisioner.names import Namespace
from provisioner.scaffold import env_values, render_project, write_env
from provisioner.settings import default_template

# Loads the project the way `sqlmesh plan` does (a Context on the folder, its config.py) and prints what SQLMesh
# decided: the config's flag and the dispatcher its analytics collector sends events through.
PROBE = """
from sqlmesh import Context
from sqlmesh.core import analytics
context = Context(paths=".", load=False)
print(context.config.disable_anonymized_analytics, type(analytics.collector._dispatcher).__name__)
"""


def test_a_scaffolded_project_turns_sqlmesh_analytics_off(tmp_path: Path) -> None:
    project = tmp_path / "sales"
    render_project(
        default_template(),
        project,
        {
            "namespace": "sales",
            "product_id": "3f1c0c8e-5d7a-4a57-9a4e-2b8c1d0e9f10",
            "product_name": "Sales",
            "description": "Orders.",
            "bucket": "data-products",
            "s3_endpoint": "http://127.0.0.1:9",
            "region": "us-east-1",
        },
    )
    write_env(
        project / ".env",
        env_values(
            endpoint="http://127.0.0.1:9",
            bucket="data-products",
            namespace=Namespace("sales"),
            access_key="AKIAEXAMPLE",
            secret_key="not-a-real-secret",
            region="us-east-1",
            read_prefixes=[],
        ),
    )
    # Without the variable in the environment: the project's own config must be enough.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQLMESH__", "S3_", "AWS_", "PROVISIONER_"))}
    env["HOME"] = str(tmp_path)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=project, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split()[-2:] == ["True", "NoopEventDispatcher"]
    # `make plan` and friends export the variable too, which holds from SQLMesh's first import on.
    makefile = (project / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^export SQLMESH__DISABLE_ANONYMIZED_ANALYTICS\s*:?=\s*true$", makefile, re.MULTILINE)
