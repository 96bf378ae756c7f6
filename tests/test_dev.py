"""`srcore dev`: every service and its worker on 127.0.0.1, one prefixed log, Ctrl-C stops all."""

from __future__ import annotations

import contextlib
import io
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore import dev
from srcore.cli import _add_commands, cli
from srcore.testing import free_port

BIN = Path(sys.executable).parent


def _write_network(path: Path, ports: dict[str, int], *, extra: str = "") -> Path:
    """meta and todo on *ports*, SQLite beside *path*: the sections as write_config has them."""
    text = "[global]\nsite-name = srcore dev test\nenvironment = development\n\n"
    for service, port in ports.items():
        text += (
            f"[{service}]\n"
            f"origin = http://127.0.0.1:{port}\n"
            f"database-url = sqlite:///{path.parent / (service + '.db')}\n"
            f"secret-key = {secrets.token_urlsafe(48)}\n"
        )
        if service != "meta":
            text += f"oauth-client-id = {service}\n"
            text += f"oauth-client-secret = {secrets.token_urlsafe(48)}\n"
        text += "\n"
    path.write_text(text + extra, encoding="utf-8")
    return path


def _two_ports() -> tuple[int, int]:
    first = free_port()
    second = free_port()
    while second == first:
        second = free_port()
    return first, second


# -- the plain parts ----------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_without_no_color() -> None:
    assert dev.use_colour(_Tty(), {}) is True
    assert dev.use_colour(io.StringIO(), {}) is False
    assert dev.use_colour(_Tty(), {"NO_COLOR": "1"}) is False
    # no-color.org: an empty NO_COLOR does not count.
    assert dev.use_colour(_Tty(), {"NO_COLOR": ""}) is True


def test_prefixes_pad_labels_and_give_each_service_its_colour() -> None:
    labels = [("meta", "meta"), ("todo", "todo"), ("meta worker", "meta"), ("todo worker", "todo")]
    plain = dev.prefixes(["meta", "todo"], labels, colour=False)
    assert plain["meta"] == "meta        | "
    assert plain["todo worker"] == "todo worker | "
    assert plain[dev.DEV_LABEL] == "dev         | "
    assert not any("\x1b" in p for p in plain.values())

    coloured = dev.prefixes(["meta", "todo"], labels, colour=True)
    meta_code = re.match(r"\x1b\[(\d+)m", coloured["meta"])
    todo_code = re.match(r"\x1b\[(\d+)m", coloured["todo"])
    assert meta_code and todo_code
    assert meta_code.group(1) != todo_code.group(1)
    assert coloured["meta worker"].startswith(meta_code.group(0))
    assert coloured["todo worker"].startswith(todo_code.group(0))
    assert coloured["meta"].endswith("\x1b[0m | ")


def test_merged_log_prefixes_whole_lines_and_strips_colour_when_asked() -> None:
    out = io.StringIO()
    log = dev.MergedLog(out, {"todo": "todo | "}, strip_ansi=True)
    log.line("todo", "\x1b[31m\x1b[1mWARNING\x1b[0m: dev server")
    log.dev("hello")
    assert out.getvalue() == "todo | WARNING: dev server\ndev | hello\n"


def test_merged_log_pump_copies_a_pipe_line_by_line() -> None:
    out = io.StringIO()
    log = dev.MergedLog(out, {"meta": "meta | "})
    log.pump("meta", io.BytesIO(b"one\r\ntwo\nthree, no newline"))
    assert out.getvalue() == "meta | one\nmeta | two\nmeta | three, no newline\n"


def test_plan_has_a_reloading_server_per_service_then_the_workers(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    plan = dev.build_plan(
        {"meta": "http://127.0.0.1:5000", "todo": "http://localhost:5001"},
        config_path=config,
        srcore=("srcore",),
    )
    assert [c.label for c in plan] == ["meta", "todo", "meta worker", "todo worker"]
    assert plan[1].argv == (
        "srcore", "--config", str(config), "serve", "todo", "--debug", "--bind", "127.0.0.1:5001"
    )  # fmt: skip
    assert plan[1].port == 5001 and plan[1].is_server
    assert plan[3].argv == ("srcore", "--config", str(config), "worker", "todo")
    assert not plan[3].is_server
    quiet = dev.build_plan(
        {"todo": "http://127.0.0.1"}, config_path=config, srcore=("srcore",), workers=False
    )
    assert [c.label for c in quiet] == ["todo"]
    assert quiet[0].port == 8000  # no port in the origin: what `srcore serve` binds


def test_port_free_sees_a_listening_socket() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        assert dev.port_free(port) is False
    assert dev.port_free(port) is True


def test_srcore_argv_prefers_the_console_script(tmp_path: Path) -> None:
    assert dev.srcore_argv(str(tmp_path / "python")) == (
        str(tmp_path / "python"),
        "-m",
        "srcore.dev",
    )
    (tmp_path / "srcore").write_text("#!/bin/sh\n")
    assert dev.srcore_argv(str(tmp_path / "python")) == (str(tmp_path / "srcore"),)


# -- refusing clearly ---------------------------------------------------------------------


def _invoke(*args: str) -> tuple[int, str]:
    _add_commands()
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output + (result.stderr or "")


def test_refuses_when_a_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        taken = sock.getsockname()[1]
        other = free_port()
        config = _write_network(tmp_path / "config.ini", {"meta": other, "todo": taken})
        code, output = _invoke("--config", str(config), "dev")
    assert code == 1
    assert f"port {taken} of todo (http://127.0.0.1:{taken}) is in use" in output
    assert "cannot start" in output
    assert not (tmp_path / "todo.db").exists()  # refused before migrating anything


def test_refuses_a_service_that_is_not_installed(tmp_path: Path) -> None:
    meta, todo = _two_ports()
    config = _write_network(
        tmp_path / "config.ini",
        {"meta": meta, "todo": todo},
        extra=f"[nosuch]\norigin = http://127.0.0.1:{free_port()}\n"
        f"database-url = sqlite:///{tmp_path / 'x.db'}\nsecret-key = {'k' * 40}\n"
        "oauth-client-id = nosuch\noauth-client-secret = s3cret\n",
    )
    code, output = _invoke("--config", str(config), "dev")
    assert code == 2
    assert "[nosuch]" in output and "not installed" in output


def test_refuses_a_service_not_in_the_config(tmp_path: Path) -> None:
    meta, todo = _two_ports()
    config = _write_network(tmp_path / "config.ini", {"meta": meta, "todo": todo})
    code, output = _invoke("--config", str(config), "dev", "paste")
    assert code == 2
    assert "not in" in output and "paste" in output


def test_a_bad_config_prints_every_problem(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    config.write_text("[todo]\norigin = nope\n", encoding="utf-8")
    code, output = _invoke("--config", str(config), "dev")
    assert code == 1
    assert "[todo] origin" in output and "[todo] database-url" in output


# -- the real thing -----------------------------------------------------------------------


class _Output:
    def __init__(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        self.lines: list[str] = []
        self._stream = process.stdout
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        for line in self._stream:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, pattern: str, *, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(pattern, self.text, re.MULTILINE)
            if found:
                return found
            time.sleep(0.05)
        raise AssertionError(f"{pattern!r} not printed within {timeout} s:\n{self.text[-6000:]}")

    def close(self) -> None:
        self._thread.join(timeout=10)
        self._stream.close()


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


@pytest.mark.slow
def test_dev_runs_the_network_in_one_log_and_ctrl_c_stops_it_all(tmp_path: Path) -> None:
    meta_port, todo_port = _two_ports()
    config = _write_network(tmp_path / "config.ini", {"meta": meta_port, "todo": todo_port})
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "SRCORE_CONFIG")}
    process = subprocess.Popen(
        [str(BIN / "srcore"), "--config", str(config), "dev"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    output = _Output(process)
    pids: dict[str, int] = {}
    try:
        output.wait_for(
            r"^dev +\| migrated 2 service\(s\) \(meta, todo\) in [0-9.]+ s$", timeout=120
        )
        output.wait_for(r"^dev +\| meta is up: ", timeout=90)
        output.wait_for(r"^dev +\| todo is up: ", timeout=90)
        output.wait_for(r"^dev +\| ready: 2 of 2 services up", timeout=30)
        # Each service answered /healthz, as its own prefixed access-log line shows.
        output.wait_for(r'^meta +\| .*"GET /healthz.*" 200', timeout=10)
        output.wait_for(r'^todo +\| .*"GET /healthz.*" 200', timeout=10)
        output.wait_for(r"^todo worker \| srcore worker: todo ", timeout=60)
        output.wait_for(r"^meta worker \| srcore worker: meta ", timeout=60)
        pids = {
            label: int(pid)
            for label, pid in re.findall(r"^dev +\| started (.+?) \(pid (\d+)\)", output.text, re.M)
        }
        assert set(pids) == {"meta", "todo", "meta worker", "todo worker"}
        text = output.text
        assert "\x1b" not in text  # not a terminal: no colour, the children's stripped too
        for line in output.lines:
            assert re.match(r"^(meta|todo|meta worker|todo worker|dev) +\| ", line), line
        width = len("todo worker")
        assert all(line[width : width + 3] == " | " for line in output.lines)
        assert f"http://127.0.0.1:{meta_port}/" in text and f"http://127.0.0.1:{todo_port}/" in text
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in pids.values():
                _signal(pid)
            process.kill()
            process.wait()
            raise
        finally:
            output.close()
    assert process.returncode == 0, output.text[-5000:]
    assert re.search(
        r"^dev +\| stopped 4 process\(es\) \(meta, todo and 2 worker\(s\)\) in [0-9.]+ s$",
        output.text,
        re.M,
    ), output.text[-3000:]
    assert "killed" not in output.lines[-1]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(_group_gone(p) for p in pids.values()):
        time.sleep(0.1)
    assert all(_group_gone(p) for p in pids.values()), pids
    assert _refused(meta_port) and _refused(todo_port)


def _signal(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@pytest.mark.slow
def test_sigterm_stops_it_too_and_kills_what_does_not_stop(tmp_path: Path) -> None:
    """A child ignoring SIGTERM is killed after --stop-timeout, and the summary says so."""
    stubborn = tmp_path / "stubborn.py"
    stubborn.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "print('ignoring SIGTERM', flush=True)\n"
        "time.sleep(600)\n",
        encoding="utf-8",
    )
    out = io.StringIO()
    log = dev.MergedLog(out, {})
    plan = [
        dev.ChildSpec("stubborn", "x", (sys.executable, str(stubborn))),
        dev.ChildSpec("polite", "y", (sys.executable, "-c", "import time; time.sleep(600)")),
    ]
    supervisor = dev.Supervisor(plan, log, dict(os.environ), stop_timeout=1.0)
    supervisor.start()
    try:
        deadline = time.monotonic() + 20
        while "ignoring SIGTERM" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
        supervisor.on_signal(signal.SIGTERM, None)
        assert supervisor.wait() == 0
    finally:
        started = time.monotonic()
        summary = supervisor.shutdown()
    assert time.monotonic() - started < 10
    assert summary.startswith("stopped 2 process(es)")
    assert "killed stubborn after 1 s" in summary
    assert "polite" not in summary.split("killed", 1)[1]
    assert all(item.process.poll() is not None for item in supervisor.running)
