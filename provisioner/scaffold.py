"""Project scaffolding: render the cookiecutter template, write the project's ``.env``, archive a project.

Rendering never overwrites: a re-render adds only files missing from the project, so a data team's
edits survive and a file the template gained (or the team deleted) appears. Secrets never pass through
the template context (cookiecutter keeps a replay copy of it); they go to ``.env`` through ``write_env``,
which writes atomically with mode 0600 from the first byte.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from provisioner.errors import InvalidName, ScaffoldError
from provisioner.logs import log_event
from provisioner.names import Namespace

logger = logging.getLogger(__name__)

ENV_KEYS = ("S3_ENDPOINT", "S3_BUCKET", "S3_PREFIX", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION", "S3_READ_PREFIXES")
ARCHIVE_DIR = ".archive"
# cookiecutter os.chdir()s into its output while rendering: the working directory is per process, so workers
# running reconciles in threads must render one at a time (the one process-wide lock, for that reason only).
_RENDER_LOCK = threading.Lock()
SEED_DIR = Path("seed") / "raw"

_SECRET_KEY = re.compile(r"secret|password|passwd|token|credential|access_key|api_key|private", re.IGNORECASE)
_READ_PREFIX = re.compile(r"[a-z0-9][a-z0-9.-]*/(?:[a-z0-9][a-z0-9._-]*/){3}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_LINE = re.compile(r"\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=\s*(?P<value>.*)")
_BARE_VALUE = re.compile(r"[A-Za-z0-9_./:@,+=%-]*")
_ENV_HEADER = (
    "# Written by the provisioner for this data product. Its keys (S3_*) are updated on every\n"
    "# provisioning; lines you add are kept. Never commit this file: it holds the product's secret key.\n"
)


class CompiledTemplates:
    """Jinja code compiled by earlier renders, reused by later ones (owned by a long-lived reconciler).

    cookiecutter builds a new Jinja environment per render and compiles every variable, file name and file
    anew: ~30 compilations, three quarters of a render's CPU. The compiled code depends only on the source
    and the environment's syntax settings, which are both part of the key, so a changed template or
    ``_jinja2_env_vars`` compiles afresh. Least recently used entries go first (each product's own values
    are compiled once and never again); used only while ``_RENDER_LOCK`` is held.
    """

    def __init__(self, max_entries: int = 512) -> None:
        self._code: OrderedDict[tuple[object, ...], object] = OrderedDict()
        self._max_entries = max_entries
        self.hits = 0

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Route cookiecutter's compilations through this cache for the duration of one render."""
        from cookiecutter.environment import StrictEnvironment

        compile_uncached = StrictEnvironment.compile
        own = StrictEnvironment.__dict__.get("compile")  # None: inherited from jinja2.Environment

        def compile_cached(
            env: Any,
            source: Any,
            name: str | None = None,
            filename: str | None = None,
            raw: bool = False,
            defer_init: bool = False,
        ) -> Any:
            if raw or not isinstance(source, str):
                return compile_uncached(env, source, name, filename, raw, defer_init)
            key = (_syntax_of(env), source, name, filename, defer_init)
            code = self._code.get(key)
            if code is None:
                code = self._code[key] = compile_uncached(env, source, name, filename, raw, defer_init)
                if len(self._code) > self._max_entries:
                    self._code.popitem(last=False)
            else:
                self._code.move_to_end(key)
                self.hits += 1
            return code

        StrictEnvironment.compile = compile_cached
        try:
            yield
        finally:
            if own is None:
                del StrictEnvironment.compile
            else:
                StrictEnvironment.compile = own


def _syntax_of(env: Any) -> tuple[object, ...]:
    """Every environment setting that changes what Jinja compiles a source into."""
    return (
        type(env),
        env.block_start_string,
        env.block_end_string,
        env.variable_start_string,
        env.variable_end_string,
        env.comment_start_string,
        env.comment_end_string,
        env.line_statement_prefix,
        env.line_comment_prefix,
        env.trim_blocks,
        env.lstrip_blocks,
        env.newline_sequence,
        env.keep_trailing_newline,
        tuple(sorted(env.extensions)),
        env.optimized,
        env.autoescape,
        env.finalize,
        env.is_async,
    )


def render_project(
    template: Path, dest: Path, context: Mapping[str, str], compiled: CompiledTemplates | None = None
) -> list[str]:
    """Render ``template`` and copy into ``dest`` only the files it lacks; return the relative paths added.

    ``dest`` is the project folder itself (``<products_dir>/<namespace folder>``). Existing files are never
    touched, so a re-render of an unchanged template returns ``[]``. ``context`` must hold the portal's
    ``namespace`` and never a secret: cookiecutter records its context. ``compiled`` lets renders share
    Jinja's compiled code (same output, a quarter of the CPU).

    The template sees the names derived from the namespace (provisioner/names.py), never the raw namespace in
    a path: ``namespace`` is its store name (the prefix without ``/``, also the rendered folder's name),
    ``portal_namespace`` the namespace as the portal shows it, ``sql_name`` a SQL-safe name.
    """
    namespace = Namespace(context.get("namespace"))
    _check_context(context)
    context = {
        **context,
        "namespace": namespace.store_name,
        "portal_namespace": str(namespace),
        "sql_name": namespace.sql_name,
    }
    # Absolute paths: cookiecutter changes the process's working directory while it renders.
    template, dest = Path(template).resolve(), Path(dest).resolve()
    if not (template / "cookiecutter.json").is_file():
        raise ScaffoldError(f"{template} is not a cookiecutter template (no cookiecutter.json)")
    from cookiecutter.exceptions import CookiecutterException
    from cookiecutter.main import cookiecutter

    with tempfile.TemporaryDirectory(prefix="provisioner-render-") as tmp:
        work = Path(tmp)
        # A private config keeps cookiecutter's replay file (a copy of the context) and its template cache
        # inside this temporary folder, not in the home directory; a user's ~/.cookiecutterrc is ignored.
        config = work / "cookiecutter.yaml"
        config.write_text(f'replay_dir: "{work / "replay"}"\ncookiecutters_dir: "{work / "cache"}"\n')
        with _RENDER_LOCK, compiled.installed() if compiled else contextlib.nullcontext():
            try:
                rendered = Path(
                    cookiecutter(
                        str(template),
                        no_input=True,
                        extra_context={key: _literal(str(value)) for key, value in context.items()},
                        output_dir=str(work / "out"),
                        config_file=str(config),
                        accept_hooks=False,
                    )
                )
            except (CookiecutterException, OSError, ValueError) as exc:
                raise ScaffoldError(f"rendering {template} for namespace {namespace} failed: {exc}") from exc
        added = _copy_missing(rendered, Path(dest))
    log_event(logger, "scaffold.rendered", namespace=str(namespace), dest=str(dest), added=len(added))
    return added


def probe_template(template: Path) -> str:
    """One line when ``template`` renders for a sample product (into a temporary folder, then deleted)."""
    with tempfile.TemporaryDirectory(prefix="provisioner-check-") as tmp:
        try:
            added = _render_sample(template, Path(tmp))
        except ScaffoldError:
            raise
        except Exception as exc:  # a Jinja syntax error escapes render_project untyped: name the template here
            raise ScaffoldError(f"{template} does not render: {type(exc).__name__}: {exc}") from exc
    if not added:
        raise ScaffoldError(f"{template} rendered no file")
    return f"{template} renders ({len(added)} files)"


def _render_sample(template: Path, tmp: Path) -> list[str]:
    return render_project(
        template,
        tmp / "project",
        {
            "namespace": "provisioner-check",
            "product_id": "00000000-0000-0000-0000-000000000000",
            "product_name": "Provisioner check",
            "description": "rendered by provisioner check",
            "bucket": "provisioner-check",
            "s3_endpoint": "http://127.0.0.1:9000",
            "region": "us-east-1",
        },
    )


def env_values(
    *,
    endpoint: str,
    bucket: str,
    namespace: Namespace,
    region: str,
    read_prefixes: Iterable[str] = (),
    access_key: str | None = None,
    secret_key: str | None = None,
) -> dict[str, str]:
    """The ``.env`` values of a product project, keyed by ``ENV_KEYS`` (the key pair only when given).

    ``S3_PREFIX`` is the product's prefix (``<store name>/``); ``S3_READ_PREFIXES`` the comma-separated, sorted
    locations the product may read, one per granted output port: ``<bucket>/<producer>/published/<port>/``.
    """
    namespace = Namespace(namespace)
    readable = sorted({_read_prefix(str(p)) for p in read_prefixes})
    values = {
        "S3_ENDPOINT": endpoint,
        "S3_BUCKET": bucket,
        "S3_PREFIX": namespace.prefix,
        "S3_REGION": region,
        "S3_READ_PREFIXES": ",".join(readable),
    }
    if access_key is not None:
        values["S3_ACCESS_KEY"] = access_key
    if secret_key is not None:
        values["S3_SECRET_KEY"] = secret_key
    return values


def _read_prefix(value: str) -> str:
    # Built from store names (provisioner/names.py), so anything else is a bug upstream: refuse it, never write it.
    if not _READ_PREFIX.fullmatch(value) or any(part in (".", "..") for part in value.split("/")):
        raise InvalidName(f"read prefix {value[:80]!r} is not <bucket>/<producer>/published/<port>/")
    return value


def write_env(path: Path, values: Mapping[str, str]) -> bool:
    """Set ``values`` in the ``.env`` at ``path``, keeping every other line; True only if the file changed.

    The file is replaced atomically (temporary file in the same folder, fsync, rename) and is 0600
    from creation. Keys already present are updated in place; new keys are appended.
    """
    path = Path(path)
    rendered = {key: _env_assignment(key, value) for key, value in values.items()}
    try:
        old = path.read_text(encoding="utf-8") if path.exists() else None
    except OSError as exc:
        raise ScaffoldError(f"cannot read {path}: {exc.strerror}") from exc
    new = _merge_env(old, rendered)
    if new == old:
        if stat.S_IMODE(path.stat().st_mode) != 0o600:
            os.chmod(path, 0o600)
        log_event(logger, "scaffold.env_unchanged", path=str(path))
        return False
    _atomic_write(path, new.encode("utf-8"))
    log_event(logger, "scaffold.env_written", path=str(path), keys=sorted(values))
    return True


def read_env(path: Path) -> dict[str, str]:
    """The assignments of a ``.env`` file (last one wins); ``{}`` when the file does not exist."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ScaffoldError(f"cannot read {path}: {exc.strerror}") from exc
    values: dict[str, str] = {}
    for line in text.splitlines():
        parsed = _parse_env_line(line)
        if parsed is not None:
            values[parsed[0]] = parsed[1]
    return values


def archive_project(products_dir: Path, namespace: Namespace, *, now: datetime | None = None) -> Path | None:
    """Move ``products_dir/<folder>`` to ``products_dir/.archive/<folder>-<UTC timestamp>``.

    ``<folder>`` is the namespace's folder name (provisioner/names.py; it never starts with ``.``, so no project
    is ever ``.archive``). Returns the archive path, or None when there is no project to archive (already
    archived or never made).
    """
    namespace = Namespace(namespace)
    folder = namespace.folder
    source = Path(products_dir) / folder
    if not source.exists():
        return None
    stamp = (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
    archive = Path(products_dir) / ARCHIVE_DIR
    target = archive / f"{folder}-{stamp}"
    counter = 1
    while target.exists():
        target = archive / f"{folder}-{stamp}-{counter}"
        counter += 1
    try:
        archive.mkdir(parents=True, exist_ok=True)
        os.rename(source, target)
    except OSError as exc:
        raise ScaffoldError(f"cannot archive {source} to {target}: {exc.strerror}") from exc
    log_event(logger, "scaffold.archived", namespace=str(namespace), archive=str(target))
    return target


def raw_seed_files(project_dir: Path) -> list[tuple[str, bytes]]:
    """Example raw files of a rendered project (``seed/raw/**``): (name relative to ``raw/``, content).

    The provisioner uploads them once, on first provisioning, to ``s3://<bucket>/<prefix>raw/<name>``.
    """
    root = Path(project_dir) / SEED_DIR
    if not root.is_dir():
        return []
    files = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if path.is_file() and not path.is_symlink() and not any(p.startswith(".") for p in relative.parts):
            files.append((relative.as_posix(), path.read_bytes()))
    return files


def _check_context(context: Mapping[str, str]) -> None:
    for key in context:
        if _SECRET_KEY.search(str(key)):
            raise ScaffoldError(
                f"template context key {key!r} looks like a secret: cookiecutter records its context, "
                "so secrets go to .env through write_env, never to the template"
            )
    endpoint = context.get("s3_endpoint")
    if endpoint and "@" in str(endpoint):  # user:password@host, possibly malformed by a '/' in the password
        raise ScaffoldError("s3_endpoint must not carry credentials (user:password@host); use write_env")


def _literal(value: str) -> str:
    # cookiecutter renders every context value as a Jinja template before use, and its environment is not
    # sandboxed: a product description such as "{{ ... }}" would run. Emit each brace through a Jinja string
    # expression so user text can never form a delimiter and renders back to itself.
    return "".join("{{ '{' }}" if c == "{" else "{{ '}' }}" if c == "}" else c for c in value)


def _copy_missing(rendered: Path, dest: Path) -> list[str]:
    added: list[str] = []
    for source in sorted(rendered.rglob("*")):
        relative = source.relative_to(rendered)
        target = dest / relative
        if source.is_dir():
            continue
        if target.exists() or target.is_symlink():
            continue
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            # "x" mode: if a user creates the same file meanwhile, theirs wins and we skip it.
            with source.open("rb") as src, target.open("xb") as dst:
                shutil.copyfileobj(src, dst)
            shutil.copymode(source, target)
        except FileExistsError:
            continue
        except OSError as exc:
            raise ScaffoldError(f"cannot write {target}: {exc.strerror}") from exc
        added.append(relative.as_posix())
    return added


def _env_assignment(key: str, value: str) -> str:
    if not _ENV_NAME.fullmatch(key):
        raise ScaffoldError(f".env key {key!r} is not a valid variable name")
    value = str(value)
    if _BARE_VALUE.fullmatch(value):
        return f"{key}={value}"
    if "'" in value or "\n" in value or "\r" in value:
        # The value itself is not echoed: it may be a secret.
        raise ScaffoldError(f".env value of {key} contains a quote or a line break, which .env cannot hold safely")
    return f"{key}='{value}'"


def _parse_env_line(line: str) -> tuple[str, str] | None:
    if line.lstrip().startswith("#"):
        return None
    match = _ENV_LINE.fullmatch(line)
    if match is None:
        return None
    value = match["value"].strip()
    if value[:1] in ("'", '"'):
        quote = value[0]
        end = value.find(quote, 1)
        value = value[1:end] if end > 0 else value[1:]
        if quote == '"':
            value = value.replace('\\"', '"').replace("\\\\", "\\")
    else:
        value = re.split(r"\s+#", value, maxsplit=1)[0].strip()
    return match["key"], value


def _merge_env(old: str | None, assignments: Mapping[str, str]) -> str:
    if old is None:
        return _ENV_HEADER + "".join(f"{line}\n" for line in assignments.values())
    lines = old.splitlines()
    seen: set[str] = set()
    merged: list[str] = []
    for line in lines:
        parsed = _parse_env_line(line)
        key = parsed[0] if parsed else None
        if key is not None and key in assignments:
            if key in seen:
                continue  # a later duplicate of one of our keys would shadow the value we set
            seen.add(key)
            merged.append(assignments[key])
        else:
            merged.append(line)
    merged.extend(line for key, line in assignments.items() if key not in seen)
    return "\n".join(merged) + "\n" if merged else ""


def _atomic_write(path: Path, data: bytes) -> None:
    directory = path.parent
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)  # created 0600
    except OSError as exc:
        raise ScaffoldError(f"cannot write {path}: {exc.strerror or exc}") from exc
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ScaffoldError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    with contextlib.suppress(OSError):  # make the rename durable; not all filesystems allow a directory fsync
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
