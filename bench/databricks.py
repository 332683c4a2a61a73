"""Benchmark: the Databricks executor's token expression over 1M rows on local Spark, against a plain sha2 projection.

    .venv/bin/python bench/databricks.py [--rows 1000000] [--repeat 3]

Same session, same rows (a cached view of ``user<N>@example.com`` values), each query aggregated with ``max`` so
every value is computed and nothing large is collected. Reports the best of ``--repeat`` runs after one warm-up:

* ``sha2``: ``sha2(CAST(v AS BINARY), 256)``, one hash per value (the baseline);
* ``token (hmac)``: the executor's ``CASE WHEN <guard> THEN <token> ELSE v END`` with ``hmac()``;
* ``token (sha2 fallback)``: the same with the two ``sha2`` calls over the RFC 2104 pads (runtimes before hmac()).

Needs the spark extra and a Java runtime (``make install``).
"""

from __future__ import annotations

import argparse
import os
import time

from provisioner.tokenize import TokenFormat
from provisioner.tokenize import databricks_statements as dsql

KEY = b"bench-key-0123456789abcdef"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from pyspark.sql import SparkSession
    from pyspark.sql.types import BinaryType, StructField, StructType

    spark = (
        SparkSession.builder.master("local[2]")
        .appName("provisioner-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    spark.createDataFrame([(KEY,)], StructType([StructField("key", BinaryType())])).createOrReplaceTempView(
        dsql.KEY_VIEW
    )
    rows = spark.sql(f"SELECT concat('user', id, '@example.com') AS v FROM range({args.rows})")
    rows.cache().createOrReplaceTempView("bench")
    spark.sql("SELECT count(*) FROM bench").collect()  # materialise the cache before timing

    fmt = TokenFormat()
    queries = {
        "sha2": "SELECT max(sha2(CAST(`v` AS BINARY), 256)) FROM bench",
        "token (hmac)": f"SELECT max({dsql.new_value('v', fmt, dsql.SessionViewKey(), 'hmac')}) FROM bench",
        "token (sha2 fallback)": f"SELECT max({dsql.new_value('v', fmt, dsql.SessionViewKey(), 'sha2')}) FROM bench",
    }
    print(f"rows={args.rows:,} repeat={args.repeat} cores={os.cpu_count()} spark={spark.version} (local[2])")
    best: dict[str, float] = {}
    for name, query in queries.items():
        spark.sql(query).collect()  # warm-up: code generation, JIT
        times = []
        for _ in range(args.repeat):
            clock = time.perf_counter()
            spark.sql(query).collect()
            times.append(time.perf_counter() - clock)
        best[name] = min(times)
        print(
            f"{name:<22} best {best[name]:6.2f} s  {args.rows / best[name] / 1000:8.0f}k rows/s  "
            f"x{best[name] / best['sha2']:.2f} of sha2  (runs: {', '.join(f'{t:.2f}' for t in times)})"
        )
    spark.stop()


if __name__ == "__main__":
    main()
