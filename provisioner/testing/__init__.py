"""Stand-ins for servers that cannot run here (the Data Product Portal, DataHub's GMS, a Databricks SQL warehouse,
the Lakebase credential API).

Used by tests, the demo and benchmarks; production modules never import this package
(an import-linter contract in ``.importlinter`` checks it; only ``provisioner.cli.demo`` may).
"""
