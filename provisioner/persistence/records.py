"""The typed rows of the provisioner's own tables, as the rest of the provisioner sees them.

Only ids and outcomes live in these tables: access key ids, never secrets (a secret goes only into a project's .env).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class ProductRecord:
    """One row of ``provisioner_products``: what a data product was converged to.

    What it may read is not here: its grant decisions (``GrantRecord``) are the one source of that (migration 012).
    """

    product_id: str
    namespace: str
    name: str
    state: str
    access_key_id: str | None
    seeded: bool
    fingerprint: str | None
    verified_at: datetime | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True)
class GrantRecord:
    """A grant decision (``provisioner_grants``): the consumer may read this output port's folder of the producer
    (tokenized first if the policy says so). The store policy is computed from the portal's approvals *and* these
    rows, never from the rows alone, so a row can only narrow access (see reconcile/grants.py)."""

    consumer_id: str
    output_port_id: str
    producer_id: str
    producer_namespace: str
    output_port_namespace: str = ""
    tokenize_run_id: str | None = None
    tokenize_note: str = ""


@dataclass(frozen=True)
class GrantWait:
    """An approved output port that is not granted, and why (``provisioner_grant_waits``)."""

    consumer_id: str
    output_port_id: str
    producer_id: str
    producer_namespace: str
    output_port_namespace: str
    reason: str
    since: datetime | None = None


@dataclass(frozen=True)
class Parked:
    """One parked product and why (``provisioner_parked``): it failed permanently; reconcile/parking.py decides
    when it is tried again."""

    product_id: str
    namespace: str
    fingerprint: str
    reason: str
    error: str
    parked_at: datetime | None = None


@dataclass(frozen=True)
class DatahubRun:
    """One row of ``provisioner_datahub_runs``: a tokenization requested from DataHub, and its report."""

    dataset_urn: str
    stamp: int
    actor: str | None
    fields: tuple[str, ...] | None
    origin: str
    state: str
    result: str | None
    retryable: bool
    run_id: str | None
    dpi_urn: str | None
    detail: Mapping[str, Any] = field(default_factory=dict)
    reported: bool = False


@dataclass(frozen=True)
class TargetState:
    """One row of ``provisioner_target_state``: a target's last outcome for one product and aspect."""

    target: str
    product_id: str
    aspect: str  # resources | grants
    state: str  # converged | failed | deleted | waiting | skipped
    detail: Mapping[str, Any] = field(default_factory=dict)
    updated_at: datetime | None = None


@dataclass(frozen=True)
class TargetGrantRecord:
    """One row of ``provisioner_target_grants``: ``principal`` (the consumer's) may read ``resource`` (the
    producer's), granted by ``target``."""

    target: str
    consumer_id: str
    producer_id: str
    resource: str
    principal: str
