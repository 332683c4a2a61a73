"""Runs bqemulator (a real BigQuery REST server on DuckDB, from PyPI) for tests and benchmarks, offline.

bqemulator pins sqlglot apart from sqlmesh (the dev extra), so it lives in a virtualenv of its own beside the
project's: ``<venv>-bqemulator`` (``make install`` creates it from ``tests/fixtures/bqemulator.txt``), or the one
``BQEMULATOR_VENV`` names.

At start it runs ``INSTALL spatial`` (and ``avro``), which would download from extensions.duckdb.org. The extension
binaries come from PyPI instead (``duckdb-extension-spatial`` and ``-avro`` wheels, pinned to DuckDB's version in the
same file): they are linked into ``<home>/.duckdb/extensions/<version>/<platform>/``, DuckDB's default extension
directory under the ``HOME`` the emulator runs with, where ``INSTALL`` finds them present and downloads nothing.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

START_SECONDS = 60.0


class EmulatorMissing(RuntimeError):
    """bqemulator's virtualenv is not installed."""


@dataclass
class Emulator:
    """A running bqemulator: its REST endpoint and default project."""

    endpoint: str
    project: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Stop the emulator and wait for it."""
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def emulator_venv() -> Path:
    """Where bqemulator is installed: ``BQEMULATOR_VENV``, else beside the running virtualenv."""
    named = os.environ.get("BQEMULATOR_VENV")
    return Path(named) if named else Path(f"{sys.prefix}-bqemulator")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline_home(venv: Path, home: Path) -> Path:
    """A HOME whose DuckDB extension directory holds the extension binaries of the venv's PyPI wheels."""
    python = venv / "bin" / "python"
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import duckdb; print(duckdb.__version__, duckdb.execute('PRAGMA platform').fetchone()[0])",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": str(home)},
    )
    version, platform = probe.stdout.split()
    folder = home / ".duckdb" / "extensions" / f"v{version}" / platform
    folder.mkdir(parents=True, exist_ok=True)
    found = list(venv.glob(f"lib/python*/site-packages/duckdb_extension_*/extensions/v{version}/*.duckdb_extension"))
    if not any(p.name == "spatial.duckdb_extension" for p in found):
        raise EmulatorMissing(
            f"no duckdb-extension-spatial=={version} wheel in {venv}: see tests/fixtures/bqemulator.txt"
        )
    for binary in found:
        link = folder / binary.name
        if not link.exists():
            link.symlink_to(binary)
    return home


def start_emulator(workdir: Path, project: str = "test-project") -> Emulator:
    """Start bqemulator on free ports (ephemeral, in memory) and wait until it answers ``/healthz``."""
    venv = emulator_venv()
    command = venv / "bin" / "bqemulator"
    if not command.exists():
        raise EmulatorMissing(
            f"bqemulator is not installed at {venv}: run `make install` (tests/fixtures/bqemulator.txt)"
        )
    home = offline_home(venv, workdir / "home")
    port = _free_port()
    log = workdir / "bqemulator.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(command),
                "start",
                "--rest-port",
                str(port),
                "--grpc-port",
                str(_free_port()),
                "--project",
                project,
                "--log-level",
                "warning",
                "--ephemeral",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "HOME": str(home)},
            cwd=workdir,
        )
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"bqemulator exited with {process.returncode}: {log.read_text(errors='replace')[-2000:]}"
            )
        try:
            if httpx.get(f"{endpoint}/healthz", timeout=1.0).status_code == 200:
                return Emulator(endpoint, project, process, log)
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"bqemulator did not answer within {START_SECONDS:.0f} s: see {log}")
        time.sleep(0.1)  # polling a process that is starting: there is no event to wait for
