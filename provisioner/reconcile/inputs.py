"""What the reconcilers are given: the site's plain values, and the port tokenizer with its decision and outcome.

The composition root (``provisioner.site``) builds these from Settings; nothing here reads the environment.
``PortTokenizer`` is the protocol the access flow calls before a grant (``reconcile/tokenizing.py`` implements it
over the tokenization engine). It is not the engine's ``Tokenizer`` (``provisioner.tokenize``), which turns one
value into its token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from provisioner.errors import ProvisionerError, TokenizeError
from provisioner.names import BucketName
from provisioner.reconcile.scope import Scope

# The portal's OutputPortAccessType (backend/app/data_products/output_ports/enums.py): public (deprecated alias of
# unrestricted), restricted, private, unrestricted. Only these two are open to everyone; any other value, an unknown
# one included, is restricted and needs a tokenization decision before a grant.
OPEN_ACCESS_TYPES = frozenset({"unrestricted", "public"})


@dataclass(frozen=True)
class ReconcileConfig:
    """What every reconcile needs to know about the site it runs in."""

    bucket: BucketName
    products_dir: Path
    template: Path
    s3_endpoint: str  # as written into project .env files (reachable by the data team)
    s3_region: str
    finalizer: str = "provisioner"
    delete_data: bool = False
    verify_seconds: int = 3600  # a resync re-checks a product against the store at least this often
    # PROVISIONER_ORPHAN_GRACE_SECONDS: resync removes a store user named like a product that belongs to no product
    # once it has been an orphan this long; None reports orphans and removes nothing.
    orphan_grace_seconds: int | None = 86400
    scope: Scope = Scope()  # which portal products are ours (PROVISIONER_SCOPE_*): all of them by default
    # PROVISIONER_TOKENIZE_REQUIRE_POLICY: a restricted output port is granted only when the tokenization policy has
    # an entry for it (tables to tokenize, or `tokenize: none`).
    tokenize_require_policy: bool = True


@dataclass(frozen=True)
class TokenizeDecision:
    """What the tokenization policy says about one output port, before anything runs.

    ``tokenize``: an entry lists tables to tokenize; ``none``: an entry says ``tokenize: none``; ``missing``: no entry;
    ``lookalike``: no entry of its own, but an entry differs from it only in separators (a typo, never a match).
    """

    kind: Literal["tokenize", "none", "missing", "lookalike"]
    detail: str = ""


@dataclass(frozen=True)
class TokenizeOutcome:
    """The result of tokenizing an output port before a grant, in the terms reconcile decides on."""

    status: str  # SUCCESS | FAILURE
    run_id: str | None
    rows_changed: int
    #: Why a FAILURE failed, typed: the error policy (``errors.classify``) says whether it may pass
    #: (TokenizeUnavailable: a lock timeout, an unreachable tenant; the grant's job retries soon) or needs a person
    #: (TokenizeError).
    failure: ProvisionerError | None = None

    @property
    def ok(self) -> bool:
        """True when the grant may go ahead."""
        return self.status == "SUCCESS"

    @property
    def error(self) -> str | None:
        """The failure's message, as the port's tokenization record keeps it."""
        return None if self.failure is None else str(self.failure)


class PortTokenizer(Protocol):
    """Looks up and runs the tokenization policy of a producer's output port (before a grant)."""

    def decide(self, producer_namespace: str, output_port_namespace: str) -> TokenizeDecision:
        """The policy's decision for the port; cheap (no tenant is contacted)."""
        ...

    def __call__(self, producer_namespace: str, output_port_namespace: str, tags: Sequence[str]) -> TokenizeOutcome:
        """Tokenize the port (only called when :meth:`decide` said ``tokenize``)."""
        ...


class NoPortTokenizer:
    """The port tokenizer used when no tokenization policy is configured: every port is ``missing``."""

    def decide(self, producer_namespace: str, output_port_namespace: str) -> TokenizeDecision:
        """No policy file, so no entry for any port."""
        del producer_namespace, output_port_namespace
        return TokenizeDecision("missing", "no tokenization policy is configured (PROVISIONER_TOKENIZE_POLICY)")

    def __call__(self, producer_namespace: str, output_port_namespace: str, tags: Sequence[str]) -> TokenizeOutcome:
        """Never called for a ``missing`` decision; fails closed if it is."""
        del tags
        return TokenizeOutcome(
            status="FAILURE",
            run_id=None,
            rows_changed=0,
            failure=TokenizeError(f"no tokenization policy covers {producer_namespace}/{output_port_namespace}"),
        )


no_port_tokenizer = NoPortTokenizer()
