"""The one interface every provisioning target implements, and the plain values it is given.

A target converges one product at a time and is idempotent: each call reads what exists and changes only what
differs. It never decides access: ``converge_grants`` is handed the complete set of reads a consumer should hold
now (the portal's approvals intersected with the grant decisions, tokenized first) and what this target recorded
granting before, and makes the store match: adds what is missing, removes what is extra.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from provisioner.names import Namespace


@dataclass(frozen=True)
class TargetGrant:
    """One read the consumer should hold: the producer's output port (the producer's resource, in this target)."""

    producer_id: str
    producer_namespace: Namespace
    output_port_namespace: Namespace


@dataclass(frozen=True)
class TargetProduct:
    """A data product as a target needs to know it (taken from the portal, validated)."""

    product_id: str
    namespace: Namespace
    name: str = ""
    description: str = ""
    project_dir: Path | None = None  # the product's project folder (schema files live there)
    #: The reads the product holds now, for a target that attaches them to the product's own identity (S3: the
    #: store user's policy) rather than to the producer's resource.
    reads: tuple[TargetGrant, ...] = ()
    #: Never provisioned before (no record): a target may write without looking first.
    first_time: bool = False


@dataclass(frozen=True)
class HeldGrant:
    """A read this target granted earlier, as recorded: where (``resource``) and to whom (``principal``)."""

    producer_id: str
    resource: str
    principal: str


@dataclass
class TargetOutcome:
    """What one call changed (``steps``), what the run record should show (``detail``), the grants now held, and
    the values the product's project ``.env`` should carry for this target."""

    steps: list[str] = field(default_factory=list)
    detail: dict[str, Any] = field(default_factory=dict)
    held: list[HeldGrant] | None = None  # converge_grants: the complete set held afterwards (None: unchanged)
    env: dict[str, str] = field(default_factory=dict)
    waiting: list[str] = field(default_factory=list)  # grants that cannot be written yet, and why

    def step(self, name: str) -> None:
        """Record that ``name`` changed something."""
        self.steps.append(name)


#: Called by ``converge_grants`` with the complete set of grants about to be held, before any is added.
Remember = Callable[[Sequence[HeldGrant]], None]


class Target(Protocol):
    """A place a data product is provisioned in."""

    #: As ``PROVISIONER_TARGETS`` names it.
    name: str

    def ensure(self, product: TargetProduct) -> TargetOutcome:
        """Create the product's resources if missing; never overwrite or destroy what exists."""
        ...

    def converge_grants(
        self,
        consumer: TargetProduct,
        grants: Sequence[TargetGrant],
        held: Sequence[HeldGrant],
        remember: Remember,
    ) -> TargetOutcome:
        """Make the consumer hold exactly ``grants``: remove the ones in ``held`` not wanted, then add the missing.

        Removals come first; before the first addition the target calls ``remember`` with everything it will hold,
        so a crash part-way never leaves a grant the caller does not know of (and so could not revoke). The
        outcome's ``held`` is what it holds afterwards.
        """
        ...

    def clean_up(self, product: TargetProduct, *, delete_data: bool, held: Sequence[HeldGrant]) -> TargetOutcome:
        """The product is deleted: remove every access to its resources (``held``: the grants on them); keep its
        data unless ``delete_data``."""
        ...

    def report(self, product: TargetProduct) -> Mapping[str, Any]:
        """What exists for the product in this target (for status and drift), without changing anything."""
        ...

    def probe(self) -> str:
        """One line for a person: ``ok: …`` when the target answers, otherwise what is wrong. Never raises."""
        ...
