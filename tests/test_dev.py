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
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from srcore import dev
from srcore.cli import _add_commands, cli
from srcore.process_groups import group_members
from srcore.supervisor import Program, Supervisor
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


def test_plan_has_a_development_server_per_service_then_the_workers(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    plan = dev.build_plan(
        {"meta": "http://127.0.0.1:5000", "todo": "http://localhost:5001"},
        config_path=config,
        srcore=("srcore",),
    )
    assert [c.label for c in plan] == ["meta", "todo", "meta worker", "todo worker"]
    assert plan[1].argv == (
        "srcore", "--config", str(config), "serve", "todo", "--debug", "--no-reload",
        "--bind", "127.0.0.1:5001",
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
        "srcore",
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


def _refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return True
    return False


#: The start of every line: the time, as honcho's printer writes it.
T = r"^\d\d:\d\d:\d\d "


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


@pytest.mark.slow
def test_dev_runs_the_network_in_one_log_restarts_it_on_changes_and_ctrl_c_stops_it_all(
    tmp_path: Path,
) -> None:
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
        start_new_session=True,
    )
    output = _Output(process)
    started = rf"{T}dev +\| started (.+?) \(pid (\d+)\)$"
    try:
        output.wait_for(
            rf"{T}dev +\| migrated 2 service\(s\) \(meta, todo\) in [0-9.]+ s$", timeout=120
        )
        output.wait_for(rf"{T}dev +\| meta is up: ", timeout=90)
        output.wait_for(rf"{T}dev +\| todo is up: ", timeout=90)
        output.wait_for(rf"{T}dev +\| ready: 2 of 2 services up", timeout=30)
        # Each service answered /healthz, as its own prefixed access-log line shows.
        output.wait_for(rf'{T}meta +\| .*"GET /healthz.*" 200', timeout=10)
        output.wait_for(rf'{T}todo +\| .*"GET /healthz.*" 200', timeout=10)
        output.wait_for(rf"{T}todo worker \| srcore worker: todo ", timeout=60)
        output.wait_for(rf"{T}meta worker \| srcore worker: meta ", timeout=60)
        pids = dict(re.findall(started, output.text, re.M))
        assert set(pids) == {"meta", "todo", "meta worker", "todo worker"}
        text = output.text
        assert "\x1b" not in text  # not a terminal: no colour, the children's stripped too
        for line in output.lines:
            assert re.match(rf"{T}(meta|todo|meta worker|todo worker|dev) +\| ", line), line
        width = len("00:00:00 todo worker")
        assert all(line[width : width + 3] == " | " for line in output.lines)
        assert f"http://127.0.0.1:{meta_port}/" in text and f"http://127.0.0.1:{todo_port}/" in text

        # A change to the config (watched, as the code is) restarts every process.
        config.write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
        output.wait_for(rf"{T}dev +\| config\.ini changed: restarting 4 process\(es\)$", timeout=30)
        deadline = time.monotonic() + 90
        while len(re.findall(started, output.text, re.M)) < 8:
            assert time.monotonic() < deadline, output.text[-4000:]
            time.sleep(0.1)
        while not (_healthy(meta_port) and _healthy(todo_port)):
            assert time.monotonic() < deadline, output.text[-4000:]
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            for _label, pid in re.findall(started, output.text, re.M):
                _signal(int(pid))
            process.wait()
            raise
        finally:
            output.close()
    assert process.returncode == 0, output.text[-5000:]
    assert re.search(rf"{T}dev +\| stopping \(SIGINT\): ", output.text, re.M)
    assert re.search(rf"{T}dev +\| stopped 4 process\(es\) in [0-9.]+ s$", output.text, re.M), (
        output.text[-3000:]
    )
    assert "killed" not in output.lines[-1]
    every = [int(pid) for _label, pid in re.findall(started, output.text, re.M)]
    assert len(every) == 8
    assert all(group_members(pid) == [] for pid in every), every
    assert _refused(meta_port) and _refused(todo_port)


def _signal(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


# -- restarting on changes ----------------------------------------------------------------


def test_code_paths_are_the_packages_directories_and_the_config(tmp_path: Path) -> None:
    config = tmp_path / "config.ini"
    paths = dev.code_paths(["srcore", "no_such_package_here"], config)
    assert paths == [Path(dev.__file__).parent, config]


def test_a_changed_python_file_restarts_every_child(tmp_path: Path) -> None:
    out = io.StringIO()
    code = "import time; print('up', flush=True); time.sleep(600)"
    with Supervisor(out, name="dev") as supervisor:
        children = [supervisor.start(Program(n, (sys.executable, "-c", code))) for n in "ab"]
        first = [child.pid for child in children]
        for child in children:
            supervisor.wait_for_line(child, "^up$", timeout=20)
        thread = dev.restart_on_changes(supervisor, children, [tmp_path])
        time.sleep(0.5)  # the watcher is set up
        (tmp_path / "notes.txt").write_text("not watched")
        (tmp_path / "module.py").write_text("X = 1\n")
        deadline = time.monotonic() + 30
        while [child.pid for child in children] == first or any(
            not child.lines for child in children
        ):
            assert time.monotonic() < deadline, out.getvalue()
            time.sleep(0.1)
        assert all(group_members(pid) == [] for pid in first)
        supervisor.request_stop()
        thread.join(timeout=10)
        assert not thread.is_alive()
    assert "dev | module.py changed: restarting 2 process(es)" in out.getvalue()
    assert "notes.txt" not in out.getvalue()
