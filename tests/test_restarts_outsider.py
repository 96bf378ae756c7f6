"""Restarts under live traffic, as an operator does them: ``kill -HUP`` (``systemctl
reload``), ``kill -TERM`` (``systemctl stop``) and a worker killed outright, against todo
under gunicorn started as ``srcore serve`` starts it, with clients on ``http.client``.

What operators.md promises: a reload loses and doubles no request and no write, reads the
config file and the service's code again, and is refused (the running workers keep
serving) when new workers could not start; a stop refuses new connections at once and
finishes the requests in flight; a write cut short is never half done.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from test_db_pressure import _KEY_VARIABLE, Todo, make_todo

from srcore.supervisor import Child, Program, Supervisor, http_ok
from srcore.testing import free_port

pytestmark = pytest.mark.slow

#: Requests each client sends at most while the server is reloaded.
PER_CLIENT = 60
CLIENTS = 4
#: How long anything may take to happen (a worker start on a busy 2-core machine).
WITHIN = 90

#: todo trusting the test's key, with one hook: a request carrying ``X-Test-Hold: PATH``
#: waits before its commit (its rows written, not committed) until PATH exists.
_FACTORY = f'''
import json, os, time


def create_app():
    import flask
    from joserfc.jwk import KeySet, OKPKey
    from sqlalchemy import event
    from sqlalchemy.orm import Session

    import todo
    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.testing import TEST_ISSUER

    with open(os.environ["{_KEY_VARIABLE}"], encoding="utf-8") as file:
        key = OKPKey.import_key(json.load(file))
    keys = StaticKeySource(KeySet([key]))
    app = todo.create_app(
        token_verifier=TokenVerifier(keys=keys, issuer=TEST_ISSUER, audience="todo")
    )

    @event.listens_for(Session, "before_commit")
    def hold(session):
        if not flask.has_request_context():
            return
        path = flask.request.headers.get("X-Test-Hold")
        if path:
            open(path + ".reached", "w").close()
            deadline = time.monotonic() + 120
            while not os.path.exists(path) and time.monotonic() < deadline:
                time.sleep(0.05)

    @app.after_request
    def version(response):
        response.headers["X-Test-Version"] = VERSION
        return response

    return app


VERSION = "one"
'''


@dataclass
class Server:
    """todo under gunicorn: its supervised child (the master), URL and port."""

    child: Child
    url: str
    port: int
    todo: Todo
    factory: Path

    def hup(self) -> None:
        os.kill(self.child.pid, signal.SIGHUP)

    def request(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, bytes, dict[str, str]]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WITHIN)
        try:
            sent = {"Authorization": f"Bearer {self.todo.token}", **(headers or {})}
            if body is not None:
                sent["Content-Type"] = "application/json"
                connection.request(method, path, json.dumps(body), sent)
            else:
                connection.request(method, path, headers=sent)
            response = connection.getresponse()
            return response.status, response.read(), dict(response.getheaders())
        finally:
            connection.close()

    def titles(self) -> list[str]:
        from todo.models import Ticket

        with self.todo.app.extensions["srcore"].db.transaction() as session:
            return list(session.scalars(select(Ticket.title)))


def serve_argv(app: str, *, port: int, workers: int, threads: int) -> tuple[str, ...]:
    """gunicorn's command line as ``srcore serve`` builds it (its graceful timeout too:
    gunicorn's 30 s), for an app of the test's own."""
    from srcore.serving import gunicorn_options

    return (
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--name",
        "srcore-todo",
        "--no-control-socket",
        *gunicorn_options(threads=threads),
        "--logger-class",
        "srcore.gunicorn_logging.AccessLogger",
        app,
    )


@contextlib.contextmanager
def todo_server(tmp_path: Path, *, workers: int = 2, threads: int = 1) -> Iterator[Server]:
    service = make_todo(tmp_path, f"sqlite:///{tmp_path / 'todo.db'}")
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(service.key.as_dict(private=True)), encoding="utf-8")
    factory = tmp_path / "restarts_todo.py"
    factory.write_text(_FACTORY, encoding="utf-8")
    port = free_port()
    argv = serve_argv("restarts_todo:create_app()", port=port, workers=workers, threads=threads)
    env = dict(
        os.environ,
        SRCORE_CONFIG=str(service.config),
        PYTHONUNBUFFERED="1",
        PYTHONDONTWRITEBYTECODE="1",  # the factory is rewritten within one second
        PYTHONPATH=os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p),
        **{_KEY_VARIABLE: str(key_file)},
    )
    url = f"http://127.0.0.1:{port}"
    with (
        open(tmp_path / "server.log", "w+", encoding="utf-8") as log,
        Supervisor(log, name="restarts", stop_timeout=40) as supervisor,
    ):
        child = supervisor.start(Program("todo", argv, env))
        supervisor.wait_until(lambda: http_ok(url + "/healthz"), child, timeout=WITHIN)
        yield Server(child, url, port, service, factory)


def wait_for(condition: Any, what: str, server: Server) -> None:
    deadline = time.monotonic() + WITHIN
    while not condition():
        assert time.monotonic() < deadline, f"{what}:\n{server.child.tail()}"
        time.sleep(0.1)


@pytest.mark.parametrize("threads", [1, 4])
def test_reloads_under_load_lose_and_double_no_request_and_no_write(
    tmp_path: Path, threads: int
) -> None:
    outcomes: collections.Counter[str] = collections.Counter()
    created: list[str] = []
    done = threading.Event()
    with todo_server(tmp_path, threads=threads) as server:

        def client(number: int) -> None:
            for index in range(PER_CLIENT):
                if done.is_set() and index > 4:
                    return
                title = f"client {number} write {index}"
                try:
                    if index % 2:
                        status, _, _ = server.request("GET", "/api/trackers/bugs/tickets")
                    else:
                        body = {"title": title}
                        status, _, _ = server.request("POST", "/api/trackers/bugs/tickets", body)
                        if status == 201:
                            created.append(title)
                    outcomes[str(status)] += 1
                except OSError as exc:
                    outcomes[type(exc).__name__] += 1

        clients = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
        for thread in clients:
            thread.start()
        for _ in range(3):
            time.sleep(0.5)
            server.hup()
            wait_for(lambda: http_ok(server.url + "/healthz"), "answers after a reload", server)
        done.set()
        for thread in clients:
            thread.join(timeout=WITHIN)
        assert set(outcomes) <= {"200", "201"}, outcomes
        titles = server.titles()
        assert sorted(titles) == sorted(created), "a write lost, doubled or unanswered"
        assert server.child.process.poll() is None


def test_a_reload_reads_the_config_file_and_the_service_code_again(tmp_path: Path) -> None:
    with todo_server(tmp_path) as server:
        status, page, headers = server.request("GET", "/")
        assert status == 200 and b"srcore test network" in page
        assert headers["X-Test-Version"] == "one"
        config = server.todo.config
        text = config.read_text(encoding="utf-8")
        config.write_text(text.replace("srcore test network", "Reloaded Network"), "utf-8")
        source = server.factory.read_text(encoding="utf-8")
        server.factory.write_text(source.replace('VERSION = "one"', 'VERSION = "two"'), "utf-8")
        server.hup()
        wait_for(lambda: b"Reloaded Network" in server.request("GET", "/")[1], "new name", server)
        assert server.request("GET", "/")[2]["X-Test-Version"] == "two"


def test_a_reload_that_new_workers_cannot_start_is_refused_and_the_old_ones_serve_on(
    tmp_path: Path,
) -> None:
    with todo_server(tmp_path) as server:
        config = server.todo.config
        good = config.read_text(encoding="utf-8")
        # A key of [global] put in the service's section: the app refuses the file.
        config.write_text(good.replace("[todo]\n", "[todo]\nwebhook-timeout = 10s\n"), "utf-8")
        server.hup()
        wait_for(
            lambda: (
                server.child.process.poll() is not None
                or any("reload refused" in line for line in server.child.lines)
            ),
            "the reload refused or the server gone",
            server,
        )
        assert server.child.process.poll() is None, server.child.tail()
        (line,) = [line for line in server.child.lines if "reload refused" in line]
        assert "webhook-timeout belongs in [global]" in line, line
        for _ in range(5):
            assert server.request("GET", "/healthz")[0] == 200
        status, _, _ = server.request("POST", "/api/trackers/bugs/tickets", {"title": "still"})
        assert status == 201
        # Fixed, the next reload goes through and reads the file.
        config.write_text(good.replace("srcore test network", "Fixed Network"), "utf-8")
        server.hup()
        wait_for(lambda: b"Fixed Network" in server.request("GET", "/")[1], "new name", server)


def _connect(port: int) -> str:
    """What a new client meets: ``refused``, or ``taken`` (the kernel queued it)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            return "taken"
    except ConnectionRefusedError:
        return "refused"


@pytest.mark.parametrize("threads", [1, 4])
def test_a_stop_refuses_new_connections_at_once_and_finishes_the_writes_in_flight(
    tmp_path: Path, threads: int
) -> None:
    hold = tmp_path / "hold"
    answers: list[Any] = []
    with todo_server(tmp_path, threads=threads) as server:

        def held_write() -> None:
            try:
                headers = {"X-Test-Hold": str(hold)}
                body = {"title": "in flight"}
                answers.append(server.request("POST", "/api/trackers/bugs/tickets", body, headers))
            except OSError as exc:
                answers.append(exc)

        writer = threading.Thread(target=held_write)
        writer.start()
        try:
            wait_for(lambda: Path(f"{hold}.reached").exists(), "the write started", server)
            server.child.process.send_signal(signal.SIGTERM)
            wait_for(
                lambda: any("Handling signal: term" in line for line in server.child.lines),
                "the master took the signal",
                server,
            )
            # The write is still held: every worker has been told to stop, and a new
            # client should be refused, not queued for a worker that will never take it.
            seen = [_connect(server.port)]
            while seen[-1] != "refused" and len(seen) < 20:
                time.sleep(0.1)
                seen.append(_connect(server.port))
            assert seen[-1] == "refused", seen
        finally:
            hold.touch()
            writer.join(timeout=WITHIN)
        (answer,) = answers
        assert not isinstance(answer, BaseException), answer
        assert answer[0] == 201, answer
        server.child.process.wait(timeout=WITHIN)
        assert server.titles() == ["in flight"]


def test_a_worker_killed_mid_write_commits_nothing_and_is_replaced(tmp_path: Path) -> None:
    hold = tmp_path / "hold"
    answers: list[Any] = []
    with todo_server(tmp_path, workers=1) as server:

        def held_write() -> None:
            try:
                headers = {"X-Test-Hold": str(hold)}
                answers.append(
                    server.request("POST", "/api/trackers/bugs/tickets", {"title": "cut"}, headers)
                )
            except OSError as exc:
                answers.append(exc)

        writer = threading.Thread(target=held_write)
        writer.start()
        try:
            wait_for(lambda: Path(f"{hold}.reached").exists(), "the write started", server)
            (worker,) = _children(server.child.pid)
            os.kill(worker, signal.SIGKILL)
            writer.join(timeout=WITHIN)
        finally:
            hold.touch()
        (answer,) = answers
        assert isinstance(answer, (http.client.RemoteDisconnected, ConnectionResetError)), answer
        assert server.titles() == []
        wait_for(lambda: http_ok(server.url + "/healthz"), "a new worker", server)
        status, body, _ = server.request("POST", "/api/trackers/bugs/tickets", {"title": "next"})
        # Number 1: the tracker's count was not moved by the write that was cut.
        assert status == 201 and json.loads(body)["number"] == 1, body


def _children(pid: int) -> list[int]:
    """The live children of *pid* (gunicorn's workers), from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text(encoding="utf-8")
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if int(ppid) == pid and state != "Z":
                found.append(int(entry.name))
    return found
