"""The one error policy: what each kind of failure means for the web, the job queues and the run records."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import provisioner
from provisioner import errors
from provisioner.errors import (
    AuthenticationFailed,
    DatabaseUnavailable,
    InvalidInput,
    InvalidName,
    PayloadTooLarge,
    PermanentError,
    PortalError,
    PortalUnavailable,
    ProvisionerError,
    RequestTimeout,
    ScaffoldError,
    SettingsError,
    StorageError,
    StorageUnavailable,
    TemporaryError,
    TokenizeError,
    UnsupportedMediaType,
    classify,
)

# error -> (HTTP status, a job runs again, run status, declared temporary, declared permanent)
TABLE: list[tuple[BaseException, int, bool, str, bool, bool]] = [
    (TemporaryError("x"), 503, True, "failure", True, False),
    (PortalUnavailable("x"), 503, True, "failure", True, False),
    (StorageUnavailable("x"), 503, True, "failure", True, False),
    (DatabaseUnavailable("x"), 503, True, "failure", True, False),
    (PermanentError("x"), 500, False, "failure", False, True),
    (PortalError("x"), 500, False, "failure", False, True),
    (StorageError("x"), 500, False, "failure", False, True),
    (ScaffoldError("x"), 500, False, "failure", False, True),
    (TokenizeError("x"), 500, False, "failure", False, True),
    (InvalidInput("x"), 400, False, "failure", False, True),
    (InvalidName("x"), 400, False, "failure", False, True),
    (PayloadTooLarge("x"), 413, False, "failure", False, True),
    (RequestTimeout("x"), 408, False, "failure", False, True),
    (UnsupportedMediaType("x"), 415, False, "failure", False, True),
    # Neither declared: a job tries again, as with any failure not known to be permanent.
    (ProvisionerError("x"), 500, True, "failure", False, False),
    (SettingsError("x"), 500, True, "failure", False, False),
    (AuthenticationFailed("x"), 401, True, "failure", False, False),
    (RuntimeError("x"), 500, True, "failure", False, False),
    (ConnectionResetError("x"), 500, True, "failure", False, False),
]


@pytest.mark.parametrize(
    ("exc", "status", "retry", "run_status", "temporary", "permanent"),
    TABLE,
    ids=[type(row[0]).__name__ for row in TABLE],
)
def test_each_kind_of_failure_has_one_status_retry_and_run_result(
    exc: BaseException, status: int, retry: bool, run_status: str, temporary: bool, permanent: bool
) -> None:
    d = classify(exc)
    assert (d.http_status, d.retry, d.run_status, d.temporary, d.permanent) == (
        status,
        retry,
        run_status,
        temporary,
        permanent,
    )


def test_the_message_is_the_errors_own_or_names_an_unexpected_one() -> None:
    assert classify(PortalUnavailable("the portal answered 503 after 3 attempts")).message == (
        "the portal answered 503 after 3 attempts"
    )
    assert classify(KeyError("product_id")).message == "unexpected error: KeyError: 'product_id'"


def test_a_job_runs_again_only_while_attempts_remain() -> None:
    temporary, permanent = classify(TemporaryError("down")), classify(PermanentError("bad"))
    assert [temporary.retries(attempt, 3) for attempt in (1, 2, 3)] == [True, True, False]
    assert [permanent.retries(attempt, 3) for attempt in (1, 2, 3)] == [False, False, False]


def test_the_temporary_flag_decides_not_the_class_it_derives_from() -> None:
    """A class that declares itself permanent is permanent wherever it sits in the tree, and the other way round."""

    class Declared(ProvisionerError):
        temporary = False

    class Passes(PermanentError):
        temporary = True

    assert classify(Declared("x")).retry is False and classify(Declared("x")).permanent
    assert classify(Passes("x")).retry is True and classify(Passes("x")).temporary


def _all_error_classes() -> set[type[ProvisionerError]]:
    for module in pkgutil.walk_packages(provisioner.__path__, "provisioner."):
        if module.name.endswith("__main__"):  # runs the command line
            continue
        # The optional extras (DataHub's SDK, Databricks' connector, pyspark) may be absent: their errors are
        # declared in modules of their own that import nothing optional, so skipping what fails to import is enough.
        try:
            importlib.import_module(module.name)
        except ImportError:
            continue
    found: set[type[ProvisionerError]] = set()
    todo: list[type[ProvisionerError]] = [ProvisionerError]
    while todo:
        cls = todo.pop()
        found.add(cls)
        todo.extend(cls.__subclasses__())
    return found


def test_every_error_class_in_the_product_says_what_its_base_says() -> None:
    """The flag and the tree agree: a TemporaryError never declares itself permanent, nor a PermanentError temporary."""
    classes = {c for c in _all_error_classes() if c.__module__.startswith("provisioner.")}
    assert len(classes) > 30  # the walk found the product's errors, not only this module's
    for cls in classes:
        if issubclass(cls, TemporaryError):
            assert cls.temporary is True, cls
        elif issubclass(cls, PermanentError):
            assert cls.temporary is False, cls
        else:
            assert cls.temporary is None, cls
    assert errors.RUN_FAILURE == "failure"
