"""When the machine's storage misbehaves: a disk that fills, files another user owns.

A disk that fills is a real one here: a tmpfs of a few hundred kilobytes mounted for the
test (which needs root: elsewhere these tests are skipped, and under CI they fail) and
filled by a file the test writes, then removes to give the space back. The servers are
real processes: gunicorn, ``srcore migrate``, as operators run them.

The metrics directory of a server under gunicorn lies in the temporary directory, often a
tmpfs, which anything on the machine may fill: counting must never cost a request, and
never the server.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from srcore.testing import free_port, gunicorn_argv, require_or_skip, write_config

pytestmark = pytest.mark.slow

#: Requests sent while the disk is full (each answered, none lost).
REQUESTS = 8


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "256k") -> Iterator[Path]:
    """A tmpfs of *size* mounted at *path* for the block: a disk that can really fill."""
    can_mount = os.geteuid() == 0 and shutil.which("mount") is not None
    require_or_skip(can_mount, "root, to mount a small tmpfs")
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size},mode=0755"
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "--lazy", str(path)], check=False, timeout=30)


def fill(path: Path) -> Path:
    """Fill the file system of *path* to its last byte; return the file that holds it."""
    filler = path / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for chunk in (b"\0" * 65536, b"\0" * 4096, b"\0"):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, chunk)
    finally:
        os.close(fd)
    assert os.statvfs(path).f_bavail == 0
    return filler


def get(url: str) -> int | str:
    """The status of a GET, or what went wrong instead of an answer."""
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        exc.close()
        return int(exc.code)
    except OSError as exc:
        return type(exc).__name__


@contextlib.contextmanager
def gunicorn(
    app: str, config: Path, log: Path, *, workers: int = 2, env: dict[str, str] | None = None
) -> Iterator[tuple[str, int]]:
    """*app* under gunicorn as ``srcore serve`` runs it; yields its URL and master's pid."""
    from srcore.supervisor import Program, Supervisor, http_ok

    port = free_port()
    argv = gunicorn_argv(app, port=port, workers=workers)
    environ = dict(os.environ, SRCORE_CONFIG=str(config), PYTHONUNBUFFERED="1", **(env or {}))
    url = f"http://127.0.0.1:{port}"
    with (
        open(log, "w+", encoding="utf-8") as out,
        Supervisor(out, name="storage-faults", stop_timeout=10) as supervisor,
    ):
        child = supervisor.start(Program("server", argv, environ))
        supervisor.wait_until(functools.partial(http_ok, url + "/healthz"), child, timeout=60)
        yield url, child.pid


def _workers(master: int) -> list[int]:
    with open(f"/proc/{master}/task/{master}/children", encoding="ascii") as file:
        return [int(pid) for pid in file.read().split()]


def test_a_full_metrics_directory_costs_the_counts_not_the_requests_nor_the_server(
    tmp_path: Path,
) -> None:
    """prometheus-client maps its files of values sparse: on a full file system the first
    write to a page with no block killed the worker with SIGBUS (the request got no
    answer), and then the master, which folds a dead worker's files into a new one: the
    whole server was gone. Now a count that finds no room stops that worker's counting,
    and a fold that finds none is left undone; every request is answered."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = write_config(
        tmp_path / "config.ini",
        service_id="paste",
        database_url=f"sqlite:///{tmp_path / 'paste.db'}",
        extra="metrics-path = /internal/metrics\n",
    )
    upgrade_all(migration_target("paste", config))
    log = tmp_path / "server.log"
    with (
        small_filesystem(tmp_path / "tmp") as tmp,
        gunicorn("paste:create_app()", config, log, env={"TMPDIR": str(tmp)}) as (url, master),
    ):
        (directory,) = tmp.glob("srcore-metrics-*")
        for _ in range(REQUESTS):  # each worker makes its files while there is room
            assert get(url + "/healthz") == 200
        filler = fill(tmp)
        answers = [get(url + "/") for _ in range(REQUESTS)]
        assert answers == [200] * REQUESTS, answers
        # A worker that counted (its files are there) ends: the master folds its files.
        counted = {int(found[1]) for found in map(_PID.search, _names(directory)) if found}
        ended = next((pid for pid in _workers(master) if pid in counted), None)
        assert ended is not None, (counted, _workers(master))
        os.kill(ended, signal.SIGTERM)
        for _ in range(100):  # the master has noticed and started another (10 s at most)
            if ended not in _workers(master) and len(_workers(master)) == 2:
                break
            time.sleep(0.1)
        answers += [get(url + "/") for _ in range(REQUESTS)]
        assert answers == [200] * (2 * REQUESTS), answers
        assert get(url + "/internal/metrics") in (200, 503)
        assert get(url + "/healthz") == 200
        filler.unlink()
    text = log.read_text(encoding="utf-8")
    assert "SIGBUS" not in text, text[-3000:]
    assert f"metrics: cannot fold the files of worker {ended}" in text, text[-3000:]
    assert "No space left on device" in text


_PID = re.compile(r"_(\d+)\.db$")


def _names(directory: Path) -> list[str]:
    return [path.name for path in directory.iterdir()]


def as_another_user() -> list[str]:
    """The start of a command line that runs what follows without the power to write
    files of other users, or its own without write permission (which root has): so that
    a file or directory made unwritable is unwritable to the command."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    require_or_skip(setpriv is not None, "setpriv (util-linux), to run a command as a user")
    dropped = "-dac_override,-dac_read_search,-fowner"
    return [str(setpriv), f"--inh-caps={dropped}", f"--bounding-set={dropped}"]


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[Path]:
    """*path* (a directory) without write permission for the block."""
    mode = path.stat().st_mode
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(mode)


def _srcore(*args: str) -> list[str]:
    import sys

    return [*as_another_user(), sys.executable, "-c", "from srcore.cli import main; main()", *args]


def test_a_database_directory_this_user_cannot_write_is_one_clear_line(tmp_path: Path) -> None:
    """The directory of an SQLite database that the service's user may not write (made by
    a command run as root): SQLite opens the file but cannot make its WAL files, and
    fails at the first statement. ``srcore migrate current`` printed SQLAlchemy's error
    with a statement of Alembic's, and ``srcore serve`` a traceback, and did not serve.
    Both now say which database cannot be opened and why; serve serves (503s) anyway.
    (The file is in WAL mode, as the service leaves it: in SQLite's default mode, which
    ``srcore migrate`` leaves, reading needs no file of its own.)"""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.supervisor import Program, Supervisor

    data = tmp_path / "data"
    data.mkdir()
    config = write_config(
        tmp_path / "config.ini", service_id="todo", database_url=f"sqlite:///{data / 'todo.db'}"
    )
    upgrade_all(migration_target("todo", config))
    with contextlib.closing(sqlite3.connect(data / "todo.db")) as served:
        served.execute("PRAGMA journal_mode = WAL")  # as the service leaves it, once it ran
    env = dict(os.environ, SRCORE_CONFIG=str(config), PYTHONUNBUFFERED="1")
    reason = f"cannot open the database of todo (sqlite:///{data / 'todo.db'})"
    with unwritable(data):
        shown = subprocess.run(
            _srcore("migrate", "todo", "current"),
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert shown.returncode == 1
        assert reason in shown.stderr, shown.stderr
        assert f"the directory {data} is not writable by this user" in shown.stderr
        assert "[SQL:" not in shown.stderr and "Traceback" not in shown.stderr, shown.stderr

        port = free_port()
        serve = _srcore("serve", "todo", "--bind", f"127.0.0.1:{port}", "--workers", "1")
        with (
            open(tmp_path / "serve.log", "w+", encoding="utf-8") as log,
            Supervisor(log, name="storage-faults", stop_timeout=10) as supervisor,
        ):
            child = supervisor.start(Program("serve", tuple(serve), env))
            line = supervisor.wait_for_line(child, "serving anyway", timeout=60)
            assert reason in line, line
            supervisor.wait_until(
                lambda: get(f"http://127.0.0.1:{port}/healthz") == 503, child, timeout=60
            )
        assert "Traceback" not in (tmp_path / "serve.log").read_text(encoding="utf-8")


def test_writes_on_a_full_disk_are_503s_with_nothing_half_written_then_served_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An SQLite database on a disk that fills: each write (a ticket with its webhook
    event, a comment) is answered 503 with Retry-After and a reason saying there is no
    room, reads go on, nothing is half written, the log says the disk is full (one line
    each, no traceback), and writes succeed again once there is room, without a restart."""
    from test_db_pressure import make_todo
    from todo.models import Comment, Ticket

    from srcore.webhooks.models import OutboxRow

    with small_filesystem(tmp_path / "disk", "2m") as disk:
        service = make_todo(tmp_path, f"sqlite:///{disk / 'todo.db'}")
        client = service.app.test_client()
        tickets = "/api/trackers/bugs/tickets"
        assert (
            client.post(tickets, json={"title": "first"}, headers=service.headers).status_code
            == 201
        )
        filler = fill(disk)
        for index in range(REQUESTS):
            for path, body in (
                (tickets, {"title": f"t{index}", "description": "x" * 4000}),
                (tickets + "/1/comments", {"text": "c" * 4000}),
            ):
                with caplog.at_level(logging.ERROR, logger="srcore"):
                    caplog.clear()
                    answer = client.post(path, json=body, headers=service.headers)
                assert answer.status_code == 503, answer.get_data(as_text=True)
                assert answer.headers["Retry-After"] == "5"
                assert answer.get_json()["errors"][0]["reason"] == (
                    "The database has no room left to save this. Try again later."
                )
                (said,) = caplog.records
                assert said.getMessage().startswith(
                    f"database disk full on POST {path}: the disk of the SQLite database is "
                    "full (SQLite: database or disk is full)"
                ), said.getMessage()
                assert said.exc_info is None
        assert client.get(tickets, headers=service.headers).status_code == 200
        assert (service.count(Ticket), service.count(Comment)) == (1, 0)
        assert service.count(OutboxRow) == 1  # the first ticket's event, and no other
        filler.unlink()
        again = client.post(tickets, json={"title": "again"}, headers=service.headers)
        assert again.status_code == 201, again.get_data(as_text=True)
        assert again.get_json()["number"] == 2
        assert (service.count(Ticket), service.count(OutboxRow)) == (2, 2)
        service.app.extensions["srcore"].db.dispose()


def _counted(url: str, route: str) -> float:
    """The requests to *route* the metrics page counts."""
    with urllib.request.urlopen(url + "/internal/metrics", timeout=20) as response:
        body = response.read().decode()
    pattern = re.compile(r"^srcore_http_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)
    return sum(
        float(value) for labels, value in pattern.findall(body) if f'route="{route}"' in labels
    )


#: Rounds of a request and a scrape, :data:`PAUSE` seconds apart, given a worker to count
#: again once there is room: three times srcore.metrics.RETRY_SECONDS (5 s).
RESUME_ROUNDS = 60
PAUSE = 0.25


def test_a_worker_that_found_no_room_for_its_counts_counts_again_once_there_is(
    tmp_path: Path,
) -> None:
    """A worker started while the metrics disk (a tmpfs /tmp) was full stopped counting
    for good: after room was made, its requests went uncounted until it was restarted. Now
    it tries again now and then (every few seconds, on a request), counts once it can, and
    says so in its log."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = write_config(
        tmp_path / "config.ini",
        service_id="paste",
        database_url=f"sqlite:///{tmp_path / 'paste.db'}",
        extra="metrics-path = /internal/metrics\n",
    )
    upgrade_all(migration_target("paste", config))
    log = tmp_path / "server.log"
    with (
        small_filesystem(tmp_path / "tmp") as tmp,
        gunicorn("paste:create_app()", config, log, workers=1, env={"TMPDIR": str(tmp)}) as (
            url,
            master,
        ),
    ):
        filler = fill(tmp)
        (first,) = _workers(master)
        os.kill(first, signal.SIGTERM)  # its successor starts on the full disk
        for _ in range(100):  # the master has started another (10 s at most)
            if first not in _workers(master) and len(_workers(master)) == 1:
                break
            time.sleep(0.1)
        assert [get(url + "/") for _ in range(REQUESTS)] == [200] * REQUESTS
        assert _counted(url, "/") == 0
        filler.unlink()
        counted = 0.0
        for _ in range(RESUME_ROUNDS):
            assert get(url + "/") == 200
            counted = _counted(url, "/")
            if counted:
                break
            time.sleep(PAUSE)
        assert counted, log.read_text(encoding="utf-8")[-3000:]
        assert [get(url + "/") for _ in range(REQUESTS)] == [200] * REQUESTS
        assert _counted(url, "/") == counted + REQUESTS
    text = log.read_text(encoding="utf-8")
    assert text.count("metrics: cannot keep the counts in") == 1, text[-3000:]
    assert text.count("metrics: counting again in this process") == 1, text[-3000:]
