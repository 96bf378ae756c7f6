"""Metrics under gunicorn: every scrape sees the requests of all worker processes."""

from __future__ import annotations

import os
import re
import stat
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from srcore.testing import free_port, run_service, write_config

#: Requests to count, sent over new connections from a few threads at once so that both
#: sync workers take some of them (one is busy while the other accepts).
REQUESTS = 40
SCRAPES = 6


def _get(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())
    except urllib.error.HTTPError as exc:
        exc.close()
        return ""


def _counted(body: str, route: str) -> float:
    pattern = re.compile(r"^srcore_http_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)
    total = 0.0
    for labels, value in pattern.findall(body):
        if f'route="{route}"' in labels and 'method="GET"' in labels:
            total += float(value)
    return total


def test_every_scrape_counts_the_requests_of_both_workers(tmp_path: Path) -> None:
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    config = write_config(
        tmp_path / "config.ini",
        service_id="paste",
        database_url=f"sqlite:///{tmp_path / 'paste.db'}",
        extra="metrics-path = /internal/metrics\n",
    )
    upgrade_all(migration_target("paste", config))
    port = free_port()
    with run_service("paste", config, port=port, workers=2, timeout=60) as url:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda _: _get(url + "/"), range(REQUESTS)))
        for _ in range(SCRAPES):
            body = _get(url + "/internal/metrics")
            assert _counted(body, "/") == REQUESTS, body


def test_the_master_gives_each_server_a_fresh_private_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from srcore import gunicorn_worker

    stale = tmp_path / "inherited"
    stale.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(stale))
    gunicorn_worker.on_starting(None)
    path = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    try:
        assert path != stale
        assert list(path.glob("*.db")) == []  # no process's values: only its locks
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
        (path / "gauge_livesum_4242.db").write_bytes(b"")
        gunicorn_worker.child_exit(None, type("Worker", (), {"pid": 4242})())
        assert not (path / "gauge_livesum_4242.db").exists()
    finally:
        gunicorn_worker.on_exit(None)
    assert not path.exists()
