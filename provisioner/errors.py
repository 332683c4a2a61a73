"""The exception tree: every error the provisioner raises on purpose is a ProvisionerError.

Each class says, once, how the outside world should see it: the HTTP status for the web layer and
whether a job should be retried (temporary) or failed for good (permanent), as kopf's
TemporaryError/PermanentError do.
"""

from __future__ import annotations


class ProvisionerError(Exception):
    """Base of every deliberate error; its message is meant for a person to act on."""

    http_status: int = 500
    temporary: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class SettingsError(ProvisionerError):
    """A configuration value is missing or invalid; the message names the variable."""


class AuthenticationFailed(ProvisionerError):
    """A webhook failed its authentication check; the message says which check."""

    http_status = 401


class TemporaryError(ProvisionerError):
    """Something outside failed in a way that may pass (timeouts, 5xx): retry with backoff."""

    temporary = True
    http_status = 503


class PermanentError(ProvisionerError):
    """Retrying cannot help until a person changes something."""


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


class TokenizeError(PermanentError):
    """A tokenization run failed; nothing was written (its transaction rolled back)."""


class DatabaseUnavailable(TemporaryError):
    """The provisioner's own PostgreSQL could not be reached."""
