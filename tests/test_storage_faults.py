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
import os
import re
import shutil
import signal
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
