"""Plain values and small protocols the reconcilers take (entry points build them from Settings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from provisioner.names import BucketName


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


@dataclass(frozen=True)
class TokenizeOutcome:
    """The result of tokenizing an output port before a grant, in the terms reconcile decides on."""

    status: str  # SUCCESS | FAILURE
    run_id: str | None
    rows_changed: int
    error: str | None = None
    retryable: bool = False  # a passing failure (lock timeout, unreachable tenant): retry soon

    @property
    def ok(self) -> bool:
        """True when the grant may go ahead."""
        return self.status == "SUCCESS"


class Tokenizer(Protocol):
    """Tokenizes a producer's output port; returns None when no policy covers the port."""

    def __call__(
        self, producer_namespace: str, output_port_namespace: str, tags: Sequence[str]
    ) -> TokenizeOutcome | None: ...


def no_tokenizer(producer_namespace: str, output_port_namespace: str, tags: Sequence[str]) -> TokenizeOutcome | None:
    """The tokenizer used when no tokenization policy is configured: nothing to do."""
    del producer_namespace, output_port_namespace, tags
    return None
