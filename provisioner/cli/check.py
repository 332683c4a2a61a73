"""`provisioner check`: a doctor to run first. One line per check, exit 0 when every check passes, else 1.

A check is a name and a function returning one line (it passed) or raising (it failed, the exception's message
is the line; ``Skipped`` says it does not apply). ``build_checks`` lists them in order:

* settings valid (checked first: without settings nothing else can run);
* database reachable and at the latest migration (``db.probe``);
* the store admin key can manage users, policies and keys (``storage.probe``, a throwaway user cleaned up);
* the portal answers, takes the API key and allows finalizer and status writes (``PortalClient.probe``: the writes
  are refused by the portal before they change anything);
* the template renders (``scaffold.probe_template``, into a temporary folder);
* each provisioning target beside S3 (``PROVISIONER_TARGETS``) answers: the target's own ``probe()``;
* each tenant connects with the privileges tokenization needs (``tokenize.probe``);
* the webhook URLs to paste into the portal (their token masked: ``provisioner webhook-url`` prints it).

More checks plug in as more ``Check`` entries (a provisioning target's ``probe()``, which returns one line, is
one: ``Check(f"target {name}", target.probe)``).

On embedded defaults it works beside a running service: the embedded PostgreSQL of the data dir is taken over as
every command does, and a SeaweedFS the service started for the data dir is used
(``storage.embedded.running_store``) rather than a second one started on its busy port. Secrets never appear: every
line is redacted, and the values of the secret settings are masked wherever they would show.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

from provisioner import db, scaffold
from provisioner.errors import ProvisionerError, SettingsError, StorageUnavailable, TargetUnavailable
from provisioner.logs import REDACTED, redact_text
from provisioner.portal import PortalClient
from provisioner.settings import Settings
from provisioner.site import database_conninfo, extra_targets, tenants, tokenize_options
from provisioner.storage import build_store
from provisioner.storage.probe import probe_admin
from provisioner.web.auth import url_token

if TYPE_CHECKING:
    from provisioner.targets.base import Target
    from provisioner.tokenize import PolicyFile, Tenants


class Skipped(Exception):
    """A check that does not apply here; its message says why."""


@dataclass(frozen=True)
class Check:
    """One named check: ``run`` returns the line to show when it passes and raises when it fails."""

    name: str
    run: Callable[[], str]


@dataclass(frozen=True)
class Outcome:
    """What one check said: ``ok``, ``FAIL`` or ``skip``, and its one line."""

    name: str
    status: str
    line: str


def register(subparsers: Any) -> None:
    """Add `check`."""
    p = subparsers.add_parser(
        "check",
        help="check the settings, database, store, portal, template, tenants; print the webhook URLs",
        description="A doctor to run first: one line per check, exit 0 when all pass, 1 otherwise. It writes "
        "nothing that stays: the store probe's user is deleted, the portal's write probes are refused before they "
        "change anything, the template renders into a temporary folder. It works beside a running service.",
    )
    p.add_argument(
        "--base",
        help="the provisioner's address as the portal reaches it, for the webhook URLs "
        "(default: http://<this host>:<PROVISIONER_PORT>)",
    )
    p.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    out = sys.stdout
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        _show(out, Outcome("settings", "FAIL", redact_text(str(exc))), ())
        return 1
    secrets = _secret_values(settings)
    # The probes' own log events (a store started, a database taken over) are not the doctor's output.
    logger = logging.getLogger("provisioner")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with ExitStack() as stack:
            failed = False
            for outcome in run_checks(build_checks(settings, stack, base=args.base)):
                _show(out, outcome, secrets)
                failed = failed or outcome.status == "FAIL"
    finally:
        logger.setLevel(level)
    return 1 if failed else 0


def run_checks(checks: Iterable[Check]) -> Iterator[Outcome]:
    """Run each check in turn (a failing one never stops the next) and say how it went."""
    for check in checks:
        try:
            line = check.run()
        except Skipped as exc:
            yield Outcome(check.name, "skip", str(exc))
        except Exception as exc:  # every failure becomes its line; the doctor never ends in a traceback
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            yield Outcome(check.name, "FAIL", message or type(exc).__name__)
        else:
            yield Outcome(check.name, "ok", line)


def build_checks(settings: Settings, stack: ExitStack, *, base: str | None = None) -> list[Check]:
    """The checks of this site, in order; what they open (database, store) is closed by ``stack``."""
    checks = [
        Check("settings", lambda: _settings_line(settings)),
        Check("database", lambda: _database(settings)),
        Check("store", lambda: _store(settings, stack)),
        Check("portal", lambda: _portal(settings)),
        Check("template", lambda: scaffold.probe_template(settings.template.resolve())),
    ]
    checks.extend(target_checks(settings))
    checks.extend(_tenant_checks(settings))
    checks.extend(_webhook_checks(settings, base))
    return checks


# -- the checks ------------------------------------------------------------------------------------------------------


def _settings_line(settings: Settings) -> str:
    database = "embedded PostgreSQL" if settings.embedded_database else "configured database"
    store = "embedded store" if settings.embedded_store else f"store {settings.s3_endpoint or 'AWS'}"
    return f"valid (data dir {settings.data_dir}; {database}; {store}; portal {settings.portal_url})"


def _database(settings: Settings) -> str:
    if not settings.embedded_database:
        return db.probe(database_conninfo(settings))  # with its Lakebase login when it has one
    # Takes over the running server of the data dir, as every command does, or starts it. Its pending migrations
    # are no fault: the database is the provisioner's own, and every command applies them at start.
    return "embedded, " + db.probe(db.start_embedded(settings.data_dir / "postgres").url, pending_ok=True)


def _store(settings: Settings, stack: ExitStack) -> str:
    if settings.embedded_store:
        endpoint, access, secret, where = _embedded_store(settings, stack)
        kind = "aws-iam"
    else:
        assert settings.s3_access_key is not None and settings.s3_secret_key is not None
        endpoint, access, secret = settings.s3_endpoint or "", settings.s3_access_key, settings.s3_secret_key
        kind, where = settings.store_kind, settings.s3_endpoint or "AWS"
    store = build_store(
        kind, endpoint=endpoint, access_key=access, secret_key=secret, region=settings.s3_region, max_attempts=1
    )
    return f"{where}: {probe_admin(store, settings.s3_bucket)}"


def _embedded_store(settings: Settings, stack: ExitStack) -> tuple[str, str, str, str]:
    """The embedded store to probe: the one a running service started for this data dir, or one started now."""
    from provisioner.storage.embedded import _port_free, running_store, start_seaweedfs

    data_dir, port = settings.data_dir / "s3", settings.s3_embedded_port
    running = running_store(data_dir)
    if running is not None:
        return running.endpoint, running.access_key, running.secret_key, f"embedded store (running) {running.endpoint}"
    if not _port_free(port):
        raise StorageUnavailable(
            f"127.0.0.1:{port} is in use by something that is not this data dir's store ({data_dir}): stop it, or "
            "set PROVISIONER_S3_EMBEDDED_PORT"
        )
    # SeaweedFS only: moto's in-memory fallback would pass the probe and prove nothing about the real store.
    started = start_seaweedfs(data_dir, port)
    stack.callback(started.stop)
    return started.endpoint, started.access_key, started.secret_key, f"embedded store (started) {started.endpoint}"


def _portal(settings: Settings) -> str:
    with PortalClient(
        settings.portal_url, api_key=settings.portal_api_key, timeout=settings.portal_timeout_seconds, retries=0
    ) as portal:
        return portal.probe()


def _tenant_checks(settings: Settings) -> list[Check]:
    try:
        configured = tenants(settings)
    except Exception as exc:  # a tenant's settings that cannot be read: one failing line, the others still run
        return [Check("tenants", _fail(str(exc)))]
    policies = None
    if settings.tokenize_policy is not None:
        from provisioner.tokenize import load_policy_file

        try:
            policies = load_policy_file(settings.tokenize_policy)
        except Exception as exc:  # the policy's own line; the tenants are still checked for connecting
            return [Check("tokenize policy", _fail(str(exc))), *_tenant_lines(settings, configured, None, ())]
    wanted = sorted({e.tenant for e in policies.entries if e.tokenize}) if policies is not None else []
    return _tenant_lines(settings, configured, policies, wanted)


def _tenant_lines(
    settings: Settings, configured: Tenants, policies: PolicyFile | None, wanted: Iterable[str]
) -> list[Check]:
    """A line per configured tenant, and a failing one per tenant the policy file names without settings."""
    names = sorted([*configured.connectors, *configured.executors])
    checks = [
        Check(f"tenant {name}", _no_settings(name, str(settings.tokenize_policy)))
        for name in wanted
        if name not in names
    ]
    if not names and not checks:
        return [Check("tenants", _skip("none configured (PROVISIONER_TENANT_<ID>_DSN): tokenization has no target"))]
    checks.extend(Check(f"tenant {name}", _tenant_probe(settings, configured, policies, name)) for name in names)
    return checks


def _tenant_probe(settings: Settings, configured: Tenants, policies: PolicyFile | None, name: str) -> Callable[[], str]:
    def probe() -> str:
        if name in configured.executors:
            raise Skipped("a Databricks warehouse: not checked here (its runs say what it refuses)")
        from provisioner.tokenize.policy import TableTarget
        from provisioner.tokenize.probe import probe_tenant

        tables: dict[str, TableTarget] = {}
        for policy in policies.policies(name) if policies is not None else []:
            for table in policy.tables:
                known = tables.get(table.name)
                columns = tuple(dict.fromkeys([*(known.columns if known else ()), *table.columns]))
                tables[table.name] = TableTarget(table.schema, table.table, columns)
        fmt = tokenize_options(settings, settings.tokenize_key).format
        return probe_tenant(configured.connectors[name], tuple(tables.values()), fmt)

    return probe


def _no_settings(name: str, source: str) -> Callable[[], str]:
    def fail() -> str:
        var = f"PROVISIONER_TENANT_{name.upper()}"
        raise SettingsError(f"{source} tokenizes in tenant {name!r}, which has no connection settings: set {var}_DSN")

    return fail


def target_checks(settings: Settings) -> list[Check]:
    """One check per provisioning target beside S3 (S3 is the store check above): the target's ``probe()``."""
    others = [name for name in settings.targets if name != "s3"]
    if not others:
        return []
    try:
        scoped = extra_targets(settings)  # a target whose client library is missing fails here, with the pip line
    except ProvisionerError as exc:
        return [Check(f"target {name}", _fail(str(exc))) for name in others]
    return [Check(f"target {s.target.name}", _target_probe(s.target)) for s in scoped]


def _target_probe(target: Target) -> Callable[[], str]:
    def probe() -> str:
        line = target.probe()  # one line, never raises: "ok: …" or what is wrong
        if not line.startswith("ok: "):
            raise TargetUnavailable(line)
        return line.removeprefix("ok: ")

    return probe


def _fail(message: str) -> Callable[[], str]:
    def fail() -> str:
        raise SettingsError(message)

    return fail


def _skip(reason: str) -> Callable[[], str]:
    def skip() -> str:
        raise Skipped(reason)

    return skip


def _webhook_checks(settings: Settings, base: str | None) -> list[Check]:
    if base is None:
        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else socket.gethostname()
        base = f"http://{host}:{settings.port}"
    base = base.rstrip("/")
    if settings.webhook_secret is None:
        off = " (authentication off: set PROVISIONER_WEBHOOK_SECRET)"
        return [
            Check("webhook v2", lambda: f"WEBHOOK_V2_URL={base}/webhooks/portal/v2{off}"),
            Check("webhook v1", lambda: f"WEBHOOK_URL={base}/webhooks/portal{off}"),
        ]
    secret = settings.webhook_secret
    return [
        Check(
            "webhook v2",
            lambda: (
                f"WEBHOOK_V2_URL={base}/webhooks/portal/v2?token={_masked(url_token(secret))} (the token: "
                f"`provisioner webhook-url --base {base}`)"
            ),
        ),
        Check(
            "webhook v1",
            lambda: f"WEBHOOK_URL={base}/webhooks/portal with WEBHOOK_SECRET = PROVISIONER_WEBHOOK_SECRET",
        ),
    ]


# -- output ----------------------------------------------------------------------------------------------------------


def _masked(token: str) -> str:
    return REDACTED if token else token


def _secret_values(settings: Settings) -> tuple[str, ...]:
    """The values of every secret setting, to mask wherever a message would quote one."""
    values = [
        settings.portal_api_key,
        settings.s3_secret_key,
        settings.webhook_secret,
        settings.status_token,
        settings.tokenize_key,
    ]
    for fields in settings.tenants.values():
        values.extend(v for k, v in fields.items() if k.upper() in ("PASSWORD", "DSN", "CLIENT_SECRET", "TOKEN"))
    # Short values would mask ordinary words; a secret that short is refused elsewhere or weak anyway.
    return tuple(v for v in values if v and len(v) >= 6)


def _show(out: TextIO, outcome: Outcome, secrets: Iterable[str]) -> None:
    line = redact_text(outcome.line)
    for value in secrets:
        line = line.replace(value, REDACTED)
    print(f"{outcome.status:<4}  {outcome.name}: {line}", file=out, flush=True)
