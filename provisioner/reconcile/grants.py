"""The read grants a product holds right now: approved in the portal now, and decided here.

A grant decision (a ``provisioner_grants`` row) is written by the access reconcile once the output port's
tokenization decision holds (tokenized, ``tokenize: none``, or open access), *before* the store policy that uses
it. The store policy is always computed from the portal's current approvals intersected with those decisions, never
from the rows alone: a row can only narrow access, so a row left behind by a crash, a revocation the access job has
not seen yet, or a producer that is gone never keeps a consumer reading (issue 12 §4).
"""

from __future__ import annotations

from collections.abc import Iterable

from provisioner.errors import InvalidName
from provisioner.names import BucketName, Namespace
from provisioner.persistence.records import GrantRecord
from provisioner.persistence.state import StateStore
from provisioner.portal import PortalClient
from provisioner.storage.policy import ReadGrant
from provisioner.targets.base import TargetGrant

APPROVED = "approved"


def current_grants(portal: PortalClient, state: StateStore, consumer_id: str) -> list[ReadGrant]:
    """The grants ``consumer_id``'s store policy must hold now (sorted); no portal call when it decided none."""
    return sorted(
        {ReadGrant(g.producer_namespace, g.output_port_namespace) for g in current_reads(portal, state, consumer_id)}
    )


def current_reads(portal: PortalClient, state: StateStore, consumer_id: str) -> list[TargetGrant]:
    """The reads ``consumer_id`` holds now, with their producers, as every target is given them (sorted)."""
    decided = state.grants_of(consumer_id)
    if not decided:
        return []
    approved = {p.output_port_id: p for p in portal.input_ports(consumer_id) if p.status == APPROVED}
    grants: set[TargetGrant] = set()
    for row in decided:
        port = approved.get(row.output_port_id)
        if port is None:
            continue
        grant = _still_valid(state, row, port.output_port.namespace)
        if grant is not None:
            grants.add(grant)
    return sorted(grants, key=lambda g: (g.producer_namespace, g.output_port_namespace, g.producer_id))


def as_target_grant(row: GrantRecord) -> TargetGrant | None:
    """A grant decision as targets are given it (None when its names are outside the rule: never granted)."""
    try:
        return TargetGrant(row.producer_id, Namespace(row.producer_namespace), Namespace(row.output_port_namespace))
    except InvalidName:
        return None


def _still_valid(state: StateStore, row: GrantRecord, port_namespace: str) -> TargetGrant | None:
    # A decision was taken for one producer and one port name; another name is another folder, decided afresh.
    producer = state.product(row.producer_id)
    if producer is None or producer.state != "provisioned":
        return None
    if (producer.namespace, port_namespace) != (row.producer_namespace, row.output_port_namespace):
        return None
    try:
        return TargetGrant(producer.product_id, Namespace(producer.namespace), Namespace(port_namespace))
    except InvalidName:
        return None


def readable_prefixes(bucket: BucketName, grants: Iterable[ReadGrant]) -> list[str]:
    """What a project's ``S3_READ_PREFIXES`` lists: ``<bucket>/<producer>/published/<port>/`` per grant, sorted."""
    return sorted({g.location(bucket) for g in grants})
