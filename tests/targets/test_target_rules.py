"""Issue 18's rules that need no server: BigQuery names and labels, the schema change rule, the settings checked at the
edge, and a core install that works without google-cloud-bigquery."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from provisioner.errors import InvalidName, SettingsError
from provisioner.names import Namespace, bigquery_dataset_id, bigquery_label
from provisioner.settings import Settings, kinds
from provisioner.targets import TARGET_NAMES
from provisioner.targets.bigquery_schema import Column, plan_change


@pytest.mark.parametrize(
    ("namespace", "dataset"),
    [
        ("sales", "dp_sales"),
        ("customer_segmentation", "dp_customer_segmentation"),
        ("sales-eu", "dp_sales_eu_" + Namespace("sales-eu").sql_name[-8:]),
        ("com.example@x", "dp_" + Namespace("com.example@x").sql_name),
    ],
)
def test_dataset_ids_come_from_the_namespace_and_keep_to_bigquerys_rule(namespace: str, dataset: str) -> None:
    got = bigquery_dataset_id("dp", Namespace(namespace))
    assert got == dataset
    assert got.replace("_", "").isalnum() and got.isascii() and len(got) <= 1024


def test_a_bad_dataset_prefix_is_refused() -> None:
    with pytest.raises(InvalidName, match="BigQuery dataset prefix"):
        bigquery_dataset_id("1-bad", Namespace("sales"))


def test_label_values_are_lowercase_short_and_distinct() -> None:
    assert bigquery_label("sales_eu-1") == "sales_eu-1"
    a, b = bigquery_label("Com.Example@X"), bigquery_label("com.example@x")
    assert a != b
    for value in (a, b, bigquery_label("x" * 200)):
        assert len(value) <= 63 and value == value.lower()
        assert set(value) <= set("abcdefghijklmnopqrstuvwxyz0123456789_-")


def _cols(*spec: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(n, t, m) for n, t, m in spec)


def test_the_schema_rule_applies_only_additive_nullable_columns() -> None:
    existing = _cols(("id", "INTEGER", "REQUIRED"), ("name", "STRING", "NULLABLE"), ("tags", "STRING", "REPEATED"))
    wanted = _cols(
        ("id", "INT64", "REQUIRED"),  # the standard SQL name of the same type: unchanged
        ("name", "STRING", "REQUIRED"),  # tightening
        ("extra", "STRING", "NULLABLE"),  # additive
        ("more", "STRING", "REPEATED"),  # additive
        ("must", "STRING", "REQUIRED"),  # a new REQUIRED column
    )
    change = plan_change("t", existing, wanted)
    assert [c.name for c in change.added] == ["extra", "more"]
    assert change.refused == [
        "t.tags: dropping a column is not applied",
        "t.name: changing mode NULLABLE to REQUIRED is not applied",
        "t.must: a new REQUIRED column is not applied (make it NULLABLE)",
    ]


def test_targets_and_principals_are_checked_at_the_edge() -> None:
    assert set(TARGET_NAMES) == set(kinds._TARGETS)
    ok = Settings.from_env(
        {
            "PROVISIONER_TARGETS": "s3, BigQuery",
            "PROVISIONER_BIGQUERY_PROJECT": "proj",
            "PROVISIONER_BIGQUERY_PRINCIPALS": "sales=group:sales@example.com,ops=serviceAccount:ops@p.example.com",
        }
    )
    assert ok.targets == ("s3", "bigquery")
    assert dict(ok.bigquery_principals)["sales"] == "group:sales@example.com"
    for env, message in (
        ({"PROVISIONER_TARGETS": "bigquery"}, "s3 must be one of the targets"),
        ({"PROVISIONER_TARGETS": "s3,gcs"}, "unknown target"),
        ({"PROVISIONER_TARGETS": "s3,bigquery"}, "PROVISIONER_BIGQUERY_PROJECT is required"),
        ({"PROVISIONER_BIGQUERY_PRINCIPALS": "sales=sales@example.com"}, "must be group:<email>"),
        ({"PROVISIONER_BIGQUERY_PRINCIPALS": "Sales=group:a@example.com"}, "<product namespace>=<principal>"),
        ({"PROVISIONER_BIGQUERY_ENDPOINT": "not a url"}, "PROVISIONER_BIGQUERY_ENDPOINT"),
        ({"PROVISIONER_BIGQUERY_DATASET_PREFIX": "data-products"}, "BigQuery dataset prefix"),
    ):
        with pytest.raises(SettingsError, match=message):
            Settings.from_env(env)


def test_the_core_install_needs_no_google_library() -> None:
    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "google.cloud.bigquery" or name.startswith("google.cloud.bigquery."):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import provisioner.site, provisioner.cli, provisioner.targets.bigquery
        from provisioner.settings import Settings
        from provisioner.errors import SettingsError
        provisioner.site.extra_targets(Settings.from_env({}))  # s3 alone: nothing to import
        try:
            provisioner.site.extra_targets(
                Settings.from_env({"PROVISIONER_TARGETS": "s3,bigquery", "PROVISIONER_BIGQUERY_PROJECT": "p"})
            )
        except SettingsError as exc:
            print(exc)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "pip install 'provisioner[bigquery]'" in done.stdout
