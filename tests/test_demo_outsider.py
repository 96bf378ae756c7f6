"""`make demo` as a newcomer uses it: again and again, in a terminal that goes away, twice at
once, with its directory deleted under it.

Each test runs the real demo (``make demo`` in a terminal of its own, a pty, or
``scripts/demo.py`` as ``make demo`` runs it) on throw-away ports and a temporary directory,
and looks for what is left afterwards: a process carrying the run's marker in its
environment (every child inherits it, gunicorn's workers too) or a port still answering.
"""

from __future__ import annotations

import contextlib
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from test_supervisor import MARKER, ROOT, _marked, _port_block, _Reader, _refused

DEMO = ROOT / "scripts" / "demo.py"
#: How long the demo may take to start (CI runs two of these tests at once on 2 cores).
READY_TIMEOUT = 90
#: How long everything may take to be gone once the demo was told to stop.
GONE_TIMEOUT = 20

pytestmark = pytest.mark.slow


def _env(marker: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SRCORE_CONFIG", "MAKEFLAGS", "PYTHONUNBUFFERED", "NO_COLOR")
    }
    env[MARKER] = marker
    return env


class _Terminal:
    """The terminal side of a pty: what was written to it, and a window that can close."""

    def __init__(self, primary: int) -> None:
        self.text = ""
        self._fd = primary
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closing.is_set():
            if not select.select([self._fd], [], [], 0.1)[0]:
                continue
            try:
                chunk = os.read(self._fd, 65536)
            except OSError:  # EIO once nothing has the terminal open any more
                return
            if not chunk:
                return
            self.text += chunk.decode(errors="replace")

    def wait_for(self, pattern: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text, re.M):
            assert time.monotonic() < deadline, f"{pattern!r} not shown:\n{self.text[-4000:]}"
            time.sleep(0.05)

    def close(self) -> None:
        """The window closes: its end of the pty goes (the kernel hangs the terminal up)."""
        if not self._closing.is_set():
            self._closing.set()
            self._thread.join(timeout=10)
            os.close(self._fd)


def _gone(marker: str, ports: list[int]) -> bool:
    """Wait (bounded) until no process of the run is left and no port answers."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while time.monotonic() < deadline:
        if not _marked(marker) and all(_refused(port) for port in ports):
            return True
        time.sleep(0.2)
    return False


def _kill_marked(marker: str) -> None:
    """What a failed test left behind, so that it does not hold ports for the next one."""
    for line in _marked(marker):
        pid = int(line.split(":", 1)[0])
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


def _demo(var: Path, first: int, marker: str, *extra: str) -> tuple[subprocess.Popen[str], _Reader]:
    """``scripts/demo.py`` as ``make demo`` runs it, without a terminal."""
    process = subprocess.Popen(
        [sys.executable, str(DEMO), "--var", str(var), "--first-port", str(first), *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(marker),
        start_new_session=True,
    )
    assert process.stdout is not None
    return process, _Reader(process.stdout)


def _finish(process: subprocess.Popen[str], output: _Reader, marker: str) -> None:
    """Ctrl-C for a demo still running; then make sure nothing of it is left."""
    try:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        output.close()
        _kill_marked(marker)


def test_closing_the_terminal_of_make_demo_stops_everything(tmp_path: Path) -> None:
    """The terminal window running ``make demo`` is closed.

    The kernel hangs the terminal up: its shell gets SIGHUP and goes, and the group in the
    terminal's foreground (the demo's own, since it took the terminal for its Ctrl-C) gets
    SIGHUP in turn. The demo has to stop its servers and workers then, as for a Ctrl-C:
    they run in process groups of their own, so nothing else stops them, and they would
    hold the ports (a later ``make demo`` refusing to start) with no terminal to stop them
    from. Writing to a hung-up terminal fails (EIO), which must not stop the stopping.
    """
    first = _port_block()
    ports = [first, first + 1, first + 2]
    marker = uuid.uuid4().hex
    primary, secondary = pty.openpty()
    command = (
        "make --no-print-directory -o .venv/.srcore-installed demo "
        f"BIN={Path(sys.executable).parent} "
        f"DEMO_ARGS='--var {tmp_path} --first-port {first}'; true"  # a shell that stays
    )
    process = subprocess.Popen(
        ["setsid", "-c", "bash", "--norc", "--noprofile", "-c", command],
        cwd=ROOT,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=_env(marker),
    )
    os.close(secondary)
    terminal = _Terminal(primary)
    try:
        terminal.wait_for(r"Ctrl-C stops everything", timeout=READY_TIMEOUT)
        assert len(_marked(marker)) > 6  # make, the demo, servers, their workers, workers
        terminal.close()
        assert _gone(marker, ports), f"left after the terminal closed: {_marked(marker)}"
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        terminal.close()
        _kill_marked(marker)
    # The next `make demo` finds its network as it was: no port held, no lock left.
    again, said = _demo(tmp_path, first, marker, "--exit-when-ready")
    try:
        again.wait(timeout=READY_TIMEOUT)
        assert again.returncode == 0, said.text[-4000:]
        assert "(kept; delete" in said.text and "0 migrations applied" in said.text, said.text
    finally:
        _finish(again, said, marker)


def test_a_second_demo_on_the_same_directory_says_where_the_first_one_runs(
    tmp_path: Path,
) -> None:
    """``make demo`` typed in a second terminal while the first one starts, and again once
    it runs: the second says that a demo runs already, which (its pid, since when) and
    where it serves, and exits 1 at once, touching nothing. Before, it rewrote nothing
    only by luck (``srcore init`` refused the config the first had just written, with a
    usage error about --force); a bit later it migrated the databases the first one was
    migrating, started servers that failed to bind, and found the first one's servers
    answering its health checks: "demo ready" over a network it did not run."""
    first = _port_block()
    marker = uuid.uuid4().hex
    process, output = _demo(tmp_path, first, marker)
    try:
        output.wait_for(r"^demo \[1/5\]", timeout=READY_TIMEOUT)
        for stage in ("starting", "running"):
            second, said = _demo(tmp_path, first, marker)
            try:
                second.wait(timeout=30)
            finally:
                _finish(second, said, uuid.uuid4().hex)
            assert second.returncode == 1, said.text
            assert "Cannot start: another demo runs already on" in said.text, said.text
            assert f"make demo (pid {process.pid}, since " in said.text, said.text
            assert "demo [1/5]" not in said.text, said.text  # not even the config step
            if stage == "running":
                assert f"meta http://127.0.0.1:{first}/" in said.text, said.text
                assert f"todo http://127.0.0.1:{first + 1}/" in said.text, said.text
            else:  # the first one comes up unharmed
                output.wait_for(r"Ctrl-C stops everything", timeout=READY_TIMEOUT)
                assert "exited with status" not in output.text, output.text[-4000:]
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
        assert process.returncode == 0, output.text[-4000:]
        assert _gone(marker, [first, first + 1, first + 2]), _marked(marker)
    finally:
        _finish(process, output, marker)


def test_deleting_the_demo_directory_while_it_runs_stops_it_and_says_why(
    tmp_path: Path,
) -> None:
    """``rm -rf var`` while the demo runs, to "start over" as the README says (it meant:
    after stopping). The servers kept their deleted SQLite files open: every page still
    answered and /healthz said ok, every account made from then on was gone at the next
    start, silently. The demo now stops within a few seconds, says why, and leaves nothing
    behind; the next run starts a fresh network in the same place."""
    first = _port_block()
    ports = [first, first + 1, first + 2]
    var = tmp_path / "var"
    marker = uuid.uuid4().hex
    process, output = _demo(var, first, marker)
    try:
        output.wait_for(r"Ctrl-C stops everything", timeout=READY_TIMEOUT)
        shutil.rmtree(var)
        output.wait_for(r"deleted while the demo ran: stopping", timeout=GONE_TIMEOUT)
        process.wait(timeout=GONE_TIMEOUT)
        assert process.returncode == 1, output.text[-4000:]
        assert re.search(r"\| stopped \d+ process\(es\)", output.text), output.text[-4000:]
        assert _gone(marker, ports), _marked(marker)
    finally:
        _finish(process, output, marker)
    again, said = _demo(var, first, marker, "--exit-when-ready")
    try:
        again.wait(timeout=READY_TIMEOUT)
        assert again.returncode == 0, said.text[-4000:]
        assert "with fresh secrets" in said.text, said.text[:2000]
    finally:
        _finish(again, said, marker)
