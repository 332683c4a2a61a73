"""SQLMesh configuration: a local DuckDB gateway that reads and writes this product's S3 prefix.

SQLMesh loads ``.env`` from this folder before importing this file. The DuckDB file (models and SQLMesh
state) stays in this folder; S3 access uses the product's own key through DuckDB's httpfs extension,
loaded from the ``duckdb-extension-httpfs`` wheel (see duckdb_s3.py).
"""

from __future__ import annotations

from duckdb_s3 import DATABASE, ROOT, duckdb_settings, load_env, namespace, s3_secret, s3_url
from sqlmesh.core.config import (
    Config,
    DuckDBConnectionConfig,
    GatewayConfig,
    ModelDefaultsConfig,
)

_env = load_env(ROOT)

config = Config(
    gateways={
        "local": GatewayConfig(
            connection=DuckDBConnectionConfig(
                database=str(DATABASE),
                connector_config=duckdb_settings(ROOT),
                secrets={"product_s3": s3_secret(_env)},
            ),
        ),
    },
    default_gateway="local",
    # SQLMesh sends anonymized usage events to its vendor unless told not to: a product project never phones home.
    # (The Makefile also exports SQLMESH__DISABLE_ANONYMIZED_ANALYTICS=true, which holds before this file is read.)
    disable_anonymized_analytics=True,
    model_defaults=ModelDefaultsConfig(dialect="duckdb", start="2024-01-01", cron="@daily"),
    variables={
        # Where the provisioner put the example raw data; drop your own files next to it.
        "raw_prefix": s3_url(_env, namespace(_env), "raw"),
    },
)
