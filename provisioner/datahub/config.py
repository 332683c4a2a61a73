"""The plugin's configuration (the ``action.config`` block of a pipeline YAML) and the dataset → tenant mapping.

Example::

    action:
      type: "provisioner.datahub:TokenizeAction"
      config:
        tenants:                      # first rule that matches the dataset urn wins
          - {platform: postgres, database: shop, schema: public, tenant: sales}
          - {platform: postgres, platform_instance: eu, tenant: sales_eu}
        dry_run: false                # count what would change, write nothing
        max_columns: 20               # at most this many columns per run (and PROVISIONER_TOKENIZE_MAX_COLUMNS)
        external_url_base: https://provisioner.example.com/runs   # the run's link: <base>/<run id>
        scan_seconds: 3600            # lost-event repair every hour (0: off)

A dataset urn ``urn:li:dataset:(urn:li:dataPlatform:postgres,[instance.]db.schema.table,PROD)`` names the
platform, the platform instance (when the ingestion set one, it prefixes the name), the database, the schema and
the table. A rule leaves out what it does not care about; a dataset no rule matches fails its run with a message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from datahub.configuration.common import ConfigModel
from datahub.metadata.urns import DatasetUrn
from pydantic import Field, field_validator

from provisioner.errors import InvalidInput, PermanentError

TOKENIZE_TAG = "urn:li:tag:tokenize-now"
_TENANT = re.compile(r"[a-z0-9][a-z0-9_]{0,62}")


class UnmappedDataset(PermanentError):
    """No tenant rule matches the dataset: the run fails with the dataset's parts, so a rule can be added."""


@dataclass(frozen=True)
class DatasetName:
    """A dataset urn taken apart: ``[platform_instance.]database.schema.table`` on a platform."""

    urn: str
    platform: str
    platform_instance: str | None
    database: str | None
    schema: str
    table: str
    env: str

    @classmethod
    def parse(cls, urn: str) -> DatasetName:
        """Parse a dataset urn; InvalidInput when it is not one or names no table."""
        try:
            parsed = DatasetUrn.from_string(urn)
        except Exception as exc:  # the SDK raises InvalidUrnError, ValueError or AssertionError
            raise InvalidInput(f"{urn!r} is not a dataset urn ({type(exc).__name__})") from None
        parts = parsed.name.split(".")
        if len(parts) < 2 or not all(parts):
            raise InvalidInput(f"dataset {urn} does not name a schema and a table (schema.table)")
        return cls(
            urn=urn,
            platform=parsed.get_data_platform_urn().platform_name,
            platform_instance=".".join(parts[:-3]) or None,
            database=parts[-3] if len(parts) >= 3 else None,
            schema=parts[-2],
            table=parts[-1],
            env=parsed.env,
        )

    def describe(self) -> str:
        """The parts a tenant rule matches, for error messages."""
        return (
            f"platform={self.platform}, platform_instance={self.platform_instance or '-'}, "
            f"database={self.database or '-'}, schema={self.schema}"
        )


class TenantRule(ConfigModel):
    """Datasets matching every given part belong to ``tenant`` (PROVISIONER_TENANT_<ID>_* holds its connection)."""

    tenant: str
    platform: str | None = None
    platform_instance: str | None = None
    database: str | None = None
    schema_: str | None = Field(default=None, alias="schema")

    @field_validator("tenant")
    @classmethod
    def _tenant_id(cls, value: str) -> str:
        if not _TENANT.fullmatch(value.lower()):
            raise ValueError(f"tenant must be a tenant id (letters, digits, '_'), got {value!r}")
        return value.lower()

    def matches(self, name: DatasetName) -> bool:
        """True when every part this rule names equals the dataset's."""
        wanted = (
            (self.platform, name.platform),
            (self.platform_instance, name.platform_instance),
            (self.database, name.database),
            (self.schema_, name.schema),
        )
        return all(want is None or want == got for want, got in wanted)


class TokenizeActionConfig(ConfigModel):
    """What the action and its worker need besides the provisioner's own settings (PROVISIONER_*)."""

    tenants: list[TenantRule] = Field(min_length=1)
    tag: str = TOKENIZE_TAG
    dry_run: bool = False
    max_columns: int | None = Field(default=None, ge=1)
    external_url_base: str | None = None
    #: The lost-event scan: every this many seconds, datasets tagged ``tag`` with no run since are queued (0: off).
    scan_seconds: int = Field(default=0, ge=0)
    #: Cluster of the DataFlow the runs belong to (``urn:li:dataFlow:(tokenize,provisioner,<env>)``).
    env: str = "PROD"
    #: The provisioner's PostgreSQL (queue and run records); default PROVISIONER_DATABASE_URL.
    database_url: str | None = None
    #: PostgreSQL's synchronous_commit for act()'s session. "on": a request is on disk before the event is
    #: acknowledged. "off" spares act() the WAL flush (a few ms on a busy disk); a server crash may then lose the
    #: last ~0.6 s of requests after their events were acknowledged, which only the lost-event scan recovers.
    synchronous_commit: Literal["on", "off"] = "on"
    #: Attempts at posting a run's report before the job is retried later (it is never dropped).
    emit_attempts: int = Field(default=3, ge=1)

    @field_validator("tag")
    @classmethod
    def _tag_urn(cls, value: str) -> str:
        if not value.startswith("urn:li:tag:") or len(value) == len("urn:li:tag:"):
            raise ValueError(f"tag must be a tag urn (urn:li:tag:<name>), got {value!r}")
        return value

    def tenant_for(self, name: DatasetName) -> str:
        """The tenant of a dataset: the first rule that matches; UnmappedDataset otherwise."""
        for rule in self.tenants:
            if rule.matches(name):
                return rule.tenant
        raise UnmappedDataset(
            f"no tenant rule of the plugin config matches dataset {name.urn} ({name.describe()}): "
            "add one under action.config.tenants"
        )
