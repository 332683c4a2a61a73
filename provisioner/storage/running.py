"""Find the embedded store a running provisioner started for a data directory, to use it instead of a second one.

Minimal on purpose (``provisioner check`` needs it): the store is ours when ``store.pid`` names a live SeaweedFS
process whose command line is the one recorded and whose S3 port is the one asked for, and something accepts
connections on that port. Its admin key is in ``s3.json`` beside it. A moto fallback keeps its key in memory only,
so it cannot be attached to. (Issue 15 item 1 builds the general attach logic for every command.)
"""

from __future__ import annotations

import json
import socket
from pathlib import Path

from provisioner.storage.embedded import PID_FILE, EmbeddedStore, _admin_identity, _cmdline


def running_store(data_dir: Path, port: int) -> EmbeddedStore | None:
    """The running embedded SeaweedFS of ``data_dir`` on 127.0.0.1:``port``, without a process handle; else None.

    The result's ``stop()`` does nothing: the store belongs to the process that started it.
    """
    try:
        saved = json.loads((data_dir / PID_FILE).read_text())
        pid, args = int(saved["pid"]), [str(a) for a in saved["args"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if _cmdline(pid) != args or f"-s3.port={port}" not in args or not any(a.endswith("weed") for a in args):
        return None
    if not (data_dir / "s3.json").is_file() or not _listening(port):
        return None
    access_key, secret_key = _admin_identity(data_dir / "s3.json")
    return EmbeddedStore(f"http://127.0.0.1:{port}", access_key, secret_key, backend="seaweedfs", data_dir=data_dir)


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0):
            return True
    except OSError:
        return False
