"""Stand-ins for servers that cannot run here (a Databricks SQL warehouse, the Lakebase credential API).

Used by tests, the demo and benchmarks; production modules never import this package.
"""
