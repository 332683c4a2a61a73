"""DuckDB + S3 for this project: one place that config.py, publish.py and consume.py share.

The httpfs extension comes from the PyPI package ``duckdb-extension-httpfs`` (same version as ``duckdb``),
never from ``INSTALL httpfs``, so nothing is downloaded at run time. The S3 secret is built from the
project's ``.env`` (written by the provisioner; the values in ``.env`` win over the process environment,
exactly as SQLMesh loads it).
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

import duckdb
from dotenv import dotenv_values

ROOT = Path(__file__).resolve().parent
DATABASE = ROOT / "product.duckdb"
ENV_KEYS = ("S3_ENDPOINT", "S3_BUCKET", "S3_PREFIX", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_REGION", "S3_READ_PREFIXES")


# The portal's rule for namespaces (data products and output ports alike).
PORTAL_NAMESPACE = re.compile(r"[a-z0-9+=,.@_-]{1,64}")
_PLAIN = re.compile(r"[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?")


class ProjectConfigError(RuntimeError):
    """The project's .env or Python packages are not what this project needs."""


def load_env(root: Path = ROOT) -> dict[str, str]:
    """The S3 settings: ``.env`` in ``root`` first, then the process environment for keys it lacks."""
    values = {k: v for k, v in dotenv_values(root / ".env").items() if v is not None}
    merged = {key: values.get(key, os.environ.get(key, "")) for key in ENV_KEYS}
    missing = [k for k in ("S3_ENDPOINT", "S3_BUCKET", "S3_PREFIX", "S3_ACCESS_KEY", "S3_SECRET_KEY") if not merged[k]]
    if missing:
        raise ProjectConfigError(
            f"{', '.join(missing)} missing from {root / '.env'}: the provisioner writes this file when the "
            "product is provisioned; ask your platform team if it is absent"
        )
    return merged


def namespace(env: dict[str, str]) -> str:
    """This product's namespace (its S3 prefix without slashes)."""
    return env["S3_PREFIX"].strip("/")


def read_prefixes(env: dict[str, str]) -> list[str]:
    """The output port folders this product may read, one per approved access request.

    S3_READ_PREFIXES lists them comma-separated as <bucket>/<producer>/published/<output port>/.
    """
    return [p.strip().strip("/") + "/" for p in env.get("S3_READ_PREFIXES", "").split(",") if p.strip().strip("/")]


def port_folder(port: str) -> str:
    """The folder of output port port under published/, as the provisioner names it.

    Most namespaces are their own folder (customer_segments_weekly). One with other characters than a-z, 0-9,
    _ and - inside, or starting or ending with _ or -, gets a readable part, . and 16 hex digits
    of its SHA-256 (the provisioner's rule, provisioner/names.py; the template tests check they agree).
    """
    if not PORTAL_NAMESPACE.fullmatch(port):
        raise ProjectConfigError(
            f"output port {port!r} is not a portal namespace (1 to 64 of a-z, 0-9 and + = , . @ _ -)"
        )
    if _PLAIN.fullmatch(port):
        return port
    readable = re.sub(r"[^a-z0-9_-]", "-", port).strip("-_")[:44].rstrip("-_") or "ns"
    return f"{readable}.{hashlib.sha256(port.encode()).hexdigest()[:16]}"


def s3_url(env: dict[str, str], *parts: str) -> str:
    """``s3://<bucket>/<parts joined by '/'>``."""
    return "s3://" + "/".join([env["S3_BUCKET"], *(p.strip("/") for p in parts)])


def s3_secret(env: dict[str, str]) -> dict[str, str]:
    """The fields of DuckDB's ``CREATE SECRET (TYPE s3, ...)`` for this product's own key."""
    endpoint = urlsplit(env["S3_ENDPOINT"] if "://" in env["S3_ENDPOINT"] else "https://" + env["S3_ENDPOINT"])
    return {
        "TYPE": "s3",
        "KEY_ID": env["S3_ACCESS_KEY"],
        "SECRET": env["S3_SECRET_KEY"],
        "REGION": env.get("S3_REGION") or "us-east-1",
        "ENDPOINT": endpoint.netloc,
        "URL_STYLE": "path",
        "USE_SSL": "true" if endpoint.scheme == "https" else "false",
    }


def httpfs_extension_file() -> Path:
    """The httpfs binary shipped by the ``duckdb-extension-httpfs`` wheel for the installed duckdb."""
    try:
        import duckdb_extension_httpfs
    except ImportError as exc:
        raise ProjectConfigError(
            "the Python package duckdb-extension-httpfs is missing: run `pip install -r requirements.txt`"
        ) from exc
    base = Path(duckdb_extension_httpfs.__file__).resolve().parent / "extensions"
    path = base / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    if not path.is_file():
        shipped = ", ".join(sorted(p.name for p in base.glob("v*"))) or "none"
        raise ProjectConfigError(
            f"duckdb {duckdb.__version__} has no matching httpfs in duckdb-extension-httpfs (it ships {shipped}): "
            "install the same version of both, e.g. `pip install -r requirements.txt`"
        )
    return path


def extension_directory(root: Path = ROOT) -> Path:
    """A project-local DuckDB extension directory holding a link to the PyPI httpfs binary.

    DuckDB looks for ``<dir>/v<version>/<platform>/httpfs.duckdb_extension`` and autoloads it when an S3
    secret or URL needs it, so nothing is installed into ``~/.duckdb`` and nothing is downloaded.
    """
    source = httpfs_extension_file()
    platform = duckdb.execute("PRAGMA platform").fetchone()[0]  # type: ignore[index]
    directory = root / ".duckdb" / "extensions"
    target = directory / f"v{duckdb.__version__}" / platform / "httpfs.duckdb_extension"
    if (target.is_symlink() and target.resolve() == source) or (target.is_file() and not target.is_symlink()):
        return directory
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        staging.symlink_to(source)
    except OSError:  # no symlinks (some Windows setups): copy the binary instead
        staging.write_bytes(source.read_bytes())
    os.replace(staging, target)
    return directory


def duckdb_settings(root: Path = ROOT) -> dict[str, str]:
    """DuckDB settings that load httpfs from the project-local extension directory, never from the network."""
    return {
        "extension_directory": str(extension_directory(root)),
        "autoinstall_known_extensions": "false",
        "autoload_known_extensions": "true",
    }


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def connect(
    root: Path = ROOT, *, database: str | Path = ":memory:", read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection with httpfs loaded and this product's S3 secret defined (in memory only)."""
    env = load_env(root)
    con = duckdb.connect(str(database), read_only=read_only)
    for name, value in duckdb_settings(root).items():
        con.execute(f"SET {name} = {_quote(value)}")
    con.execute(f"LOAD {_quote(str(httpfs_extension_file()))}")
    fields = ", ".join(
        f"{k} {v}" if k in ("TYPE", "USE_SSL") else f"{k} {_quote(v)}" for k, v in s3_secret(env).items()
    )
    con.execute(f"CREATE OR REPLACE TEMPORARY SECRET product_s3 ({fields})")
    return con
