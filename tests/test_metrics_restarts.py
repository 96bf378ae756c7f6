"""Metrics across worker restarts: a restarted worker's counts stay, its files do not pile up.

gunicorn replaces a worker after ``--max-requests`` (or a timeout); prometheus-client's
multiprocess mode leaves each process's files in the server's metrics directory. The
master folds a dead worker's files into one per type, so the directory stays as small as
the number of live workers while every request ever answered is still counted.
"""

from __future__ import annotations

import fcntl
import os
import re
import tempfile
import urllib.request
from pathlib import Path

import pytest

from srcore.metrics_files import FOLD_LOCK, SERVER_LOCK
from srcore.supervisor import Program, Supervisor, http_ok
from srcore.testing import free_port, gunicorn_argv, write_config

#: Requests, each worker answering at most MAX_REQUESTS before gunicorn replaces it: about
#: eight workers live and die while they are served.
REQUESTS = 40
MAX_REQUESTS = 5
WORKERS = 2
#: Two types of file (counter, histogram) for each live worker, one just dead and not yet
#: folded, and the folded ones.
MOST_FILES = 2 * (WORKERS + 2)


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode())


def _sample(body: str, name: str, route: str) -> float:
    pattern = re.compile(rf"^{name}\{{([^}}]*)\}} (\S+)$", re.MULTILINE)
    return sum(
        float(value)
        for labels, value in pattern.findall(body)
        if f'route="{route}"' in labels and 'method="' not in labels.replace('method="GET"', "")
    )


def test_restarted_workers_are_still_counted_and_their_files_folded(tmp_path: Path) -> None:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = write_config(
        tmp_path / "config.ini",
        service_id="paste",
        database_url=f"sqlite:///{tmp_path / 'paste.db'}",
        extra="metrics-path = /internal/metrics\n",
    )
    upgrade_all(migration_target("paste", config))
    temporary = tmp_path / "tmp"  # where the master makes its metrics directory
    temporary.mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = gunicorn_argv(
        "paste:create_app()",
        port=port,
        workers=WORKERS,
        options=("--max-requests", str(MAX_REQUESTS)),
    )
    env = dict(os.environ, SRCORE_CONFIG=str(config), TMPDIR=str(temporary))
    with (
        tempfile.TemporaryFile("w+", encoding="utf-8") as log,
        Supervisor(log, name="test", stop_timeout=10) as supervisor,
    ):
        child = supervisor.start(Program("paste", argv, env))
        supervisor.wait_until(lambda: http_ok(url + "/healthz"), child, timeout=60)
        for _ in range(REQUESTS):
            _get(url + "/")
        (directory,) = temporary.glob("srcore-metrics-*")
        for _ in range(3):
            body = _get(url + "/internal/metrics")
            assert _sample(body, "srcore_http_requests_total", "/") == REQUESTS, body
            assert _sample(body, "srcore_http_request_seconds_count", "/") == REQUESTS, body
            files = sorted(p.name for p in directory.glob("*.db"))
            assert len(files) <= MOST_FILES, files
        assert (directory / "counter_dead.db").is_file()
    assert list(temporary.iterdir()) == []


def _write(path: Path, values: dict[str, tuple[float, float]]) -> None:
    from prometheus_client.mmap_dict import MmapedDict

    mapped = MmapedDict(str(path))
    for key, (value, timestamp) in values.items():
        mapped.write_value(key, value, timestamp)
    mapped.close()


def _read(path: Path) -> dict[str, tuple[float, float]]:
    from prometheus_client.mmap_dict import MmapedDict

    return {k: (v, t) for k, v, t, _ in MmapedDict.read_all_values_from_file(str(path))}


def test_a_fold_combines_each_type_as_the_metrics_page_does(tmp_path: Path) -> None:
    from srcore.metrics_files import fold_dead_process, make_metrics_dir

    directory, lock = make_metrics_dir()
    try:
        here = Path(directory)
        for pid, value, timestamp in ((11, 5.0, 100.0), (12, 3.0, 200.0)):
            for kind in ("counter", "gauge_max", "gauge_min", "gauge_mostrecent", "gauge_all"):
                _write(here / f"{kind}_{pid}.db", {"k": (value, timestamp)})
            fold_dead_process(directory, pid)
        assert _read(here / "counter_dead.db") == {"k": (8.0, 0.0)}
        assert _read(here / "gauge_max_dead.db")["k"][0] == 5.0
        assert _read(here / "gauge_min_dead.db")["k"][0] == 3.0
        assert _read(here / "gauge_mostrecent_dead.db")["k"][0] == 3.0
        # A gauge in mode "all" is one series per process, dead ones too: left as it is.
        assert {p.name for p in here.glob("gauge_all_*")} == {"gauge_all_11.db", "gauge_all_12.db"}
        assert not list(here.glob("counter_1?.db"))
    finally:
        os.close(lock)


def test_a_new_server_removes_what_killed_servers_left_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from srcore import gunicorn_worker

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    killed = tmp_path / "srcore-metrics-killed"
    killed.mkdir()
    for name in ("counter_7.db", "histogram_dead.db", SERVER_LOCK, FOLD_LOCK):
        (killed / name).write_bytes(b"")
    kept = tmp_path / "srcore-metrics-kept"  # the operator put a file of theirs there
    kept.mkdir()
    for name in ("counter_8.db", SERVER_LOCK, "notes.txt"):
        (kept / name).write_bytes(b"")
    running = tmp_path / "srcore-metrics-running"
    running.mkdir()
    for name in ("counter_9.db", SERVER_LOCK):
        (running / name).write_bytes(b"")
    older = tmp_path / "srcore-metrics-without-lock"  # not one this srcore can tell dead
    older.mkdir()
    (older / "counter_10.db").write_bytes(b"")
    other = tmp_path / "prometheus"
    other.mkdir()
    (other / "counter_11.db").write_bytes(b"")

    held = os.open(running / SERVER_LOCK, os.O_RDONLY)
    try:
        fcntl.flock(held, fcntl.LOCK_SH)
        gunicorn_worker.on_starting(None)
        try:
            new = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
            assert new.parent == tmp_path
            assert {p.name for p in new.iterdir()} == {SERVER_LOCK, FOLD_LOCK}
        finally:
            gunicorn_worker.on_exit(None)
    finally:
        os.close(held)
    assert not killed.exists()
    assert {p.name for p in kept.iterdir()} == {"notes.txt"}
    assert {p.name for p in running.iterdir()} == {"counter_9.db", SERVER_LOCK}
    assert {p.name for p in older.iterdir()} == {"counter_10.db"}
    assert {p.name for p in other.iterdir()} == {"counter_11.db"}
    assert not new.exists()
