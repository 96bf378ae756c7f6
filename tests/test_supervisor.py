"""srcore.supervisor: process groups, a bounded stop, Ctrl-C at any moment of a start-up.

The acceptance tests run ``scripts/demo.py`` (what ``make demo`` runs) on throw-away ports
and a temporary directory, interrupt it, and look for anything left: a process that
carries the run's marker in its environment (children inherit it, gunicorn's workers too)
or a port that still accepts connections.
"""

from __future__ import annotations

import io
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from srcore.process_groups import group_members
from srcore.supervisor import Program, Stopped, Supervisor

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "scripts" / "demo.py"
MARKER = "SRCORE_SUPERVISOR_TEST_RUN"


def _python(code: str) -> tuple[str, ...]:
    return (sys.executable, "-c", code)


# A parent that ignores SIGTERM and has a child that ignores it too, in its group.
_STUBBORN = (
    "import signal, subprocess, sys, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "child = subprocess.Popen([sys.executable, '-c', "
    "'import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    'print("grandchild up", flush=True); time.sleep(600)\'])\n'
    "time.sleep(600)\n"
)


def _wait_for(predicate: object, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_stop_kills_a_whole_group_that_ignores_sigterm_after_the_bound() -> None:
    out = io.StringIO()
    supervisor = Supervisor(out, name="sup", stop_timeout=1.0)
    stubborn = supervisor.start(Program("stubborn", _python(_STUBBORN)))
    polite = supervisor.start(Program("polite", _python("import time; time.sleep(600)")))
    _wait_for(lambda: "grandchild up" in out.getvalue())
    assert len(group_members(stubborn.pid)) == 2  # the child and its own child
    summary = supervisor.stop()
    assert summary.startswith("stopped 2 process(es) in ")
    assert summary.endswith("; killed stubborn after 1 s")
    assert group_members(stubborn.pid) == [] and group_members(polite.pid) == []
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"\d\d:\d\d:\d\d sup +\| stopping: stubborn, polite", lines[-2]), lines
    assert lines[-1].endswith(summary)


def test_children_lines_are_prefixed_and_uncoloured_off_a_terminal() -> None:
    out = io.StringIO()
    with Supervisor(out, name="sup", names=["printer"]) as supervisor:
        child = supervisor.start(
            Program("printer", _python("print('\\x1b[31mred\\x1b[0m plain', flush=True)"))
        )
        assert supervisor.wait_for_line(child, r"plain$", timeout=20) == "\x1b[31mred\x1b[0m plain"
        _wait_for(lambda: child.process.poll() is not None)
        child.reader.join(timeout=5)  # type: ignore[union-attr]
    text = out.getvalue()
    assert re.search(r"^\d\d:\d\d:\d\d printer \| red plain$", text, re.M), text
    assert re.search(r"^\d\d:\d\d:\d\d sup     \| started printer \(pid \d+\)$", text, re.M), text
    assert "\x1b" not in text


def test_a_stop_request_ends_every_wait_with_stopped() -> None:
    with Supervisor(io.StringIO()) as supervisor:
        child = supervisor.start(Program("sleeper", _python("import time; time.sleep(600)")))
        threading.Timer(0.3, supervisor.request_stop, args=("SIGINT",)).start()
        with pytest.raises(Stopped):
            supervisor.wait_for_line(child, "never", timeout=60)
        with pytest.raises(Stopped):
            supervisor.sleep(60)
        with pytest.raises(Stopped):
            supervisor.start(Program("late", _python("pass")))
    assert supervisor.children == []
    assert group_members(child.pid) == []


def test_signals_ask_for_a_stop_and_a_second_one_skips_the_grace() -> None:
    supervisor = Supervisor(io.StringIO())
    before = signal.getsignal(signal.SIGINT)
    with supervisor.handling_signals():
        os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(Stopped, match="SIGINT"):
            supervisor.sleep(30)
        assert not supervisor.force.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        supervisor.take_signals()
        assert supervisor.force.is_set()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_one_shot_program_asked_to_stop_is_let_finish() -> None:
    out = io.StringIO()
    supervisor = Supervisor(out, name="sup")

    def stop_once_half_way() -> None:
        _wait_for(lambda: "half ..." in out.getvalue())
        supervisor.request_stop("SIGTERM")

    threading.Thread(target=stop_once_half_way, daemon=True).start()
    code = "import time; print('half ...', end='', flush=True); time.sleep(1); print(' done')"
    with pytest.raises(Stopped):
        supervisor.run(Program("migrate", _python(code)))
    assert "half ...\n" in out.getvalue()  # the line in hand is ended first
    assert out.getvalue().endswith(" done\n")
    assert "letting migrate finish" in out.getvalue()


def test_watch_reports_an_exit_and_returns_1() -> None:
    out = io.StringIO()
    with Supervisor(out, name="sup") as supervisor:
        supervisor.start(Program("short", _python("import sys; sys.exit(3)")))
        supervisor.start(Program("long", _python("import time; time.sleep(600)")))
        assert supervisor.watch() == 1
    assert "sup   | short exited with status 3" in out.getvalue()


# -- the demo, interrupted ----------------------------------------------------------------


def _port_block() -> int:
    """Three free ports in a row, below the range the system hands out for port 0: the
    tests running beside this one take theirs there (free_port), and one could otherwise
    take a port of the block between two runs, which then "still answers"."""
    rng = random.Random()
    while True:
        first = rng.randrange(20000, 32000)
        if all(_free(first + i) for i in range(4)):
            return first


def _free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


def _marked(marker: str) -> list[str]:
    """The processes whose environment carries *marker* (zombies have none)."""
    needle = f"{MARKER}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                found.append(f"{entry.name}: {(entry / 'cmdline').read_bytes()!r}")
        except OSError:
            continue
    return found


class _Reader:
    def __init__(self, stream: io.TextIOBase | io.BufferedIOBase) -> None:
        self.text = ""
        self._stream = stream
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for line in self._stream:
                self.text += line if isinstance(line, str) else line.decode(errors="replace")
        except OSError:
            pass  # a pty's reading end answers EIO once the terminal's last user is gone

    def wait_for(self, pattern: str, *, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.text, re.M):
            assert time.monotonic() < deadline, f"{pattern!r} not printed:\n{self.text[-4000:]}"
            time.sleep(0.02)

    def close(self) -> None:
        self._thread.join(timeout=10)
        self._stream.close()


def _demo_command(tmp_path: Path, first: int) -> tuple[list[str], str, str]:
    """``scripts/demo.py`` on three ports from *first*: argv, its first line, its label."""
    argv = [sys.executable, str(DEMO), "--var", str(tmp_path), "--first-port", str(first)]
    return argv, r"^demo \[1/5\]", "demo"


def _dev_command(tmp_path: Path, first: int) -> tuple[list[str], str, str]:
    """``srcore dev`` for meta and todo (SQLite) on *first* and the next port."""
    import secrets

    config = tmp_path / "config.ini"
    if not config.exists():
        text = "[global]\nsite-name = supervisor test\nenvironment = development\n\n"
        for offset, service in enumerate(("meta", "todo")):
            text += (
                f"[{service}]\norigin = http://127.0.0.1:{first + offset}\n"
                f"database-url = sqlite:///{tmp_path / (service + '.db')}\n"
                f"secret-key = {secrets.token_urlsafe(48)}\n"
            )
            if service != "meta":
                text += f"oauth-client-id = {service}\n"
                text += f"oauth-client-secret = {secrets.token_urlsafe(48)}\n"
            text += "\n"
        config.write_text(text, encoding="utf-8")
    argv = [str(Path(sys.executable).parent / "srcore"), "--config", str(config), "dev"]
    return argv, r"^\S+ dev +\| ", "dev"


@pytest.mark.slow
@pytest.mark.parametrize("command", [_demo_command, _dev_command], ids=["demo", "dev"])
def test_ctrl_c_at_ten_random_moments_of_a_start_up_leaves_nothing(
    tmp_path: Path, command: Any
) -> None:
    """Ten runs of the demo (or ``srcore dev``); each is interrupted at a random moment
    after its first line (its signal handling is in place by then), within the few seconds
    its start-up takes: the config, the migrations, the servers starting, the health
    checks. The first run writes the config and migrates; the later ones get further."""
    first = _port_block()
    ports = [first, first + 1, first + 2]
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    for run in range(10):
        delay = rng.uniform(0, 5)
        argv, first_line, label = command(tmp_path, first)
        marker = uuid.uuid4().hex
        env = {k: v for k, v in os.environ.items() if k not in ("SRCORE_CONFIG", "NO_COLOR")}
        env[MARKER] = marker
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            start_new_session=True,  # no terminal of ours to take
        )
        assert process.stdout is not None
        output = _Reader(process.stdout)
        what = f"run {run + 1}/10, SIGINT {delay:.2f} s after the first line (seed {seed})"
        try:
            output.wait_for(first_line, timeout=60)
            time.sleep(delay)
            process.send_signal(signal.SIGINT)
            process.wait(timeout=60)
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
            output.close()
        assert process.returncode == 0, f"{what}:\n{output.text[-4000:]}"
        assert re.search(rf"^\S+ {label} +\| stopping \(SIGINT\)", output.text, re.M), (
            f"{what}:\n{output.text[-4000:]}"
        )
        assert re.search(rf"^\S+ {label} +\| stopped \d+ process\(es\)", output.text, re.M), what
        assert _marked(marker) == [], f"{what}: processes left"
        assert all(_refused(port) for port in ports), f"{what}: a port still answers"


@pytest.mark.slow
def test_ctrl_c_in_the_terminal_of_make_demo_prints_stopping_and_make_exits_0(
    tmp_path: Path,
) -> None:
    """``make demo`` in a terminal of its own (a pty); Ctrl-C typed once it is ready.

    The terminal sends SIGINT to its whole foreground group, make included: unless the demo
    takes the Ctrl-C for itself, make ends "Interrupt" with status 130, whatever the demo
    prints and returns.
    """
    import pty

    first = _port_block()
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("SRCORE_CONFIG", "MAKEFLAGS")}
    env[MARKER] = marker
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [
            "setsid",
            "-c",  # a new session whose controlling terminal is the pty
            "make",
            "--no-print-directory",
            "-o",
            ".venv/.srcore-installed",  # never (re)install from here
            "demo",
            f"BIN={Path(sys.executable).parent}",
            f"DEMO_ARGS=--var {tmp_path} --first-port {first}",
        ],
        cwd=ROOT,
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
    )
    os.close(secondary)
    output = _Reader(os.fdopen(primary, "rb", buffering=0))
    try:
        output.wait_for(r"Ctrl-C stops everything", timeout=120)
        os.write(primary, b"\x03")
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        output.close()
    text = output.text.replace("\r\n", "\n")
    assert re.search(r"^\S+ demo +\| stopping \(SIGINT\)", text, re.M), text[-4000:]
    assert "Interrupt" not in text and "Error" not in text, text[-2000:]
    assert process.returncode == 0, text[-4000:]
    assert _marked(marker) == []
    assert all(_refused(port) for port in (first, first + 1, first + 2))
