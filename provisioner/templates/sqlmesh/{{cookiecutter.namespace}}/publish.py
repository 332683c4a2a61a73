"""Publish this product's marts as Parquet, each into the folder of every output port it belongs to.

    s3://<bucket>/<namespace>/published/<output port>/<mart>.parquet

Which marts belong to which output port is written in ``output_ports.yaml`` (by default every mart goes to the port
``default``). A consumer whose access request to an output port was approved reads that port's folder and nothing
else of this product. Run it after `sqlmesh plan` (or `sqlmesh run`): `python publish.py` or `make publish`. It
reads the production views SQLMesh keeps in the local DuckDB file (schema ``marts``) and writes them with this
product's own key from ``.env``. It never deletes: a file published earlier stays readable until you delete it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import duckdb
import yaml
from duckdb_s3 import DATABASE, ROOT, ProjectConfigError, connect, load_env, namespace, port_folder, s3_url

MART_SCHEMA = "marts"
PORTS_FILE = ROOT / "output_ports.yaml"
EVERY_MART = "*"


def output_ports(path: Path = PORTS_FILE) -> dict[str, list[str] | str]:
    """The mapping of ``output_ports.yaml``: output port namespace -> list of marts, or ``"*"`` for every mart."""
    if not path.exists():
        return {"default": EVERY_MART}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ProjectConfigError(f"{path.name} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProjectConfigError(f"{path.name} must map output ports to lists of marts (or '*')")
    ports: dict[str, list[str] | str] = {}
    for port, marts in data.items():
        port_folder(str(port))  # refuses a name the portal cannot have, before anything is written
        if marts == EVERY_MART:
            ports[str(port)] = EVERY_MART
        elif isinstance(marts, list) and all(isinstance(m, str) for m in marts):
            ports[str(port)] = list(marts)
        else:
            raise ProjectConfigError(f"{path.name}: port {port!r} must list marts (e.g. [customer_orders]) or be '*'")
    return ports


def plan(marts: list[str], ports: dict[str, list[str] | str]) -> dict[str, list[str]]:
    """Mart -> the folders (under ``published/``) it is written to; a mart listed nowhere is not published."""
    unknown = sorted({m for listed in ports.values() if listed != EVERY_MART for m in listed} - set(marts))
    if unknown:
        raise ProjectConfigError(
            f"{PORTS_FILE.name} lists {', '.join(unknown)}, not a model of schema {MART_SCHEMA!r} "
            f"(there are: {', '.join(marts) or 'none'})"
        )
    return {
        mart: sorted(port_folder(p) for p, listed in ports.items() if listed == EVERY_MART or mart in listed)
        for mart in marts
    }


def publish() -> list[str]:
    """Write each mart of the ``marts`` schema into its output ports' folders; return the S3 URLs written."""
    if not DATABASE.exists():
        raise ProjectConfigError(f"{DATABASE.name} not found: run `sqlmesh plan` first to build the models")
    env = load_env(ROOT)
    ports = output_ports()
    con = connect(ROOT, database=DATABASE, read_only=True)
    try:
        marts = [
            row[0]
            for row in con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = ? ORDER BY table_name",
                [MART_SCHEMA],
            ).fetchall()
        ]
        if not marts:
            raise ProjectConfigError(f"no models in schema {MART_SCHEMA!r}: run `sqlmesh plan` first")
        written = []
        for mart, folders in plan(marts, ports).items():
            if not folders:
                print(f"not published: {mart} is listed under no output port in {PORTS_FILE.name}", file=sys.stderr)
            for folder in folders:
                url = s3_url(env, namespace(env), "published", folder, f"{mart}.parquet")
                con.execute(f"COPY (SELECT * FROM {MART_SCHEMA}.\"{mart}\") TO '{url}' (FORMAT parquet)")
                written.append(url)
        return written
    finally:
        con.close()


def main() -> int:
    try:
        for url in publish():
            print(f"published {url}")
    except (ProjectConfigError, duckdb.Error) as exc:
        print(f"publish failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
