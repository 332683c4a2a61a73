"""Golden tokens: one key over 10,000 generated Unicode values gives the same tokens in Python, PostgreSQL and Spark.

The PostgreSQL side is the real engine run over a real table; the Spark side is the Databricks executor's own
SQL (the CASE expression its UPDATE sets, and its guard) on a local Spark session, with the key in a session
view loaded from a DataFrame (no SQL text), through ``hmac()`` and through the ``sha2`` fallback.
"""

from __future__ import annotations

import random
from typing import Any

import psycopg
import pytest

from provisioner.tokenize import TokenFormat, TokenizeOptions, Tokenizer, plan, run
from provisioner.tokenize import databricks_statements as dsql
from tests.tokenize.conftest import column

pytestmark = [pytest.mark.spark, pytest.mark.databricks]

KEY = "golden-Kq2v9w8X1mZ4+/eR5tY7uI0oP3aS6dF8gH1jK4lZ7xC="
COUNT = 10_000
# Code point ranges to draw from: ASCII, Latin-1 and Latin Extended, Greek/Cyrillic, combining marks, CJK,
# Hangul, private use, and supplementary planes (emoji, CJK extension B). No surrogates (not text) and no NUL
# (PostgreSQL text cannot hold it).
RANGES = [
    (0x01, 0x7F),
    (0x80, 0x24F),
    (0x370, 0x4FF),
    (0x300, 0x36F),
    (0x4E00, 0x9FFF),
    (0xAC00, 0xD7A3),
    (0xE000, 0xF8FF),
    (0xFF00, 0xFFFD),
    (0x1F300, 0x1FAFF),
    (0x20000, 0x2A6DF),
]


def generated_values(n: int = COUNT, seed: int = 17) -> list[str]:
    """``n`` deterministic Unicode strings of 0 to 40 code points, with a few tokens and near-tokens mixed in."""
    rng = random.Random(seed)
    reference = Tokenizer(TokenFormat(), KEY)
    values = []
    for i in range(n):
        if i % 97 == 0:
            values.append(reference.token(f"already {i}"))  # a token: left alone
        elif i % 89 == 0:
            values.append("tok_" + "".join(rng.choice("aZ09_-+/=é") for _ in range(22)) + "_poc")  # near-token
        else:
            lo, hi = rng.choice(RANGES)
            values.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(0, 40))))
    return values


def spark_values(spark: Any, values: list[str], key: bytes, view: str = "golden") -> None:
    from pyspark.sql.types import BinaryType, IntegerType, StringType, StructField, StructType

    schema = StructType([StructField("id", IntegerType()), StructField("v", StringType())])
    spark.createDataFrame(list(enumerate(values)), schema, verifySchema=False).createOrReplaceTempView(view)
    key_schema = StructType([StructField("key", BinaryType())])
    spark.createDataFrame([(key,)], key_schema).createOrReplaceTempView(dsql.KEY_VIEW)


def spark_tokens(spark: Any, fmt: TokenFormat, mac: dsql.MacFunction, view: str = "golden") -> list[str | None]:
    # new_value() is exactly the expression the executor's UPDATE sets the column to.
    query = f"SELECT id, {dsql.new_value('v', fmt, dsql.SessionViewKey(), mac)} FROM {view}"
    return [r[1] for r in sorted(spark.sql(query).collect())]  # sorted here: no shuffle in Spark


def test_python_postgres_and_spark_give_the_same_tokens(spark: Any, pg_empty_url: str) -> None:
    values = generated_values()
    fmt = TokenFormat()
    expected = [Tokenizer(fmt, KEY).tokenize(v) for v in values]
    assert len(set(expected)) > COUNT * 0.9  # the sample is varied, not 10,000 copies of one value

    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE golden (id int PRIMARY KEY, v text)")
        with conn.cursor() as cur, cur.copy("COPY golden (id, v) FROM STDIN") as copy:
            for i, v in enumerate(values):
                copy.write_row((i, v))
    policy = {"tenant": "t1", "schema": "public", "table": "golden", "columns": ["v"]}
    result = run(plan(policy, TokenizeOptions(format=fmt, key=KEY)), connect=pg_empty_url)
    assert result.ok, result.error
    postgres = [r for r in _ordered(pg_empty_url)]
    assert postgres == expected

    spark_values(spark, values, KEY.encode())
    assert spark_tokens(spark, fmt, "hmac") == expected  # the sha2 form: test_other_formats_and_a_long_key...

    # The guard: Spark counts what Python would tokenize, and finds nothing left among the tokens it computed.
    needs = sum(1 for v in values if v != "" and not Tokenizer(fmt, KEY).is_token(v))
    assert spark.sql(dsql.count_statement("golden", ["v"], fmt)).collect()[0][0] == needs == result.total_rows
    tokens = f"(SELECT {dsql.new_value('v', fmt, dsql.SessionViewKey(), 'hmac')} AS v FROM golden) AS tokens"
    assert spark.sql(dsql.count_statement(tokens, ["v"], fmt)).collect()[0][0] == 0  # a rerun changes nothing


def _ordered(url: str) -> list[str | None]:
    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute("SELECT v FROM golden ORDER BY id")]


@pytest.mark.parametrize(
    "fmt",
    [
        TokenFormat(),
        TokenFormat(length=43),
        TokenFormat(length=23, prefix="pii:", suffix=""),
        TokenFormat(mode="base64"),
        TokenFormat(mode="base64", prefix="b64~", suffix="=="),
    ],
    ids=["default", "length-43", "prefix-only", "base64", "base64-odd-suffix"],
)
def test_other_formats_and_a_long_key_match_the_reference(spark: Any, fmt: TokenFormat) -> None:
    values = generated_values(300, seed=5)
    key = "k" * 100  # longer than a SHA-256 block: RFC 2104 hashes it first
    reference = Tokenizer(fmt, key if fmt.mode == "hmac" else None)
    # Tokens of this format and near-tokens of it, so the guard is tried on both sides of every check.
    values += [reference.token(v) for v in values[:50]] + [reference.token(v)[:-1] + "=" for v in values[50:80]]
    spark_values(spark, values, key.encode())
    expected = [reference.tokenize(v) for v in values]
    macs: list[dsql.MacFunction] = ["hmac", "sha2"] if fmt.mode == "hmac" else ["hmac"]
    for mac in macs:
        assert spark_tokens(spark, fmt, mac) == expected


def test_the_update_statement_parses_as_one_update_in_spark(spark: Any) -> None:
    # Local Spark has no Delta: its parser (a subset of Databricks') still has to read the UPDATE as one statement.
    parser = spark._jsparkSession.sessionState().sqlParser()
    for mac in ("hmac", "sha2"):
        statement = dsql.update_statement(
            dsql.table_ref("main", "sales", "customers"),
            ["email", "phone"],
            TokenFormat(),
            dsql.SecretScopeKey("tok", "key"),
            mac,  # type: ignore[arg-type]
        )
        assert parser.parsePlan(statement).getClass().getSimpleName() == "UpdateTable"


def test_the_postgres_helper_reads_the_same_rows(pg_empty_url: str) -> None:
    # A guard against the golden test comparing a table with itself: the helper reads the table it names.
    with psycopg.connect(pg_empty_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, email text)")
        conn.execute("INSERT INTO people VALUES (1, 'x')")
    assert column(pg_empty_url, "email") == ["x"]
