"""Metrics and the health check as an outsider meets them.

A client chooses the method, path, Host and headers of its requests: none of it may add a
series to the metrics (each is kept for the life of the process, and in a file under
gunicorn), and nothing secret in a path may become a label. A scrape and a health check
are answered afresh each time, never from a cache. A metrics directory the process cannot
write in (misnamed, or removed while the server runs) is said once in the log and by the
metrics page, and fails no request.
"""

from __future__ import annotations

import logging
import re
import shutil
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import prometheus_client  # noqa: F401  (it reads PROMETHEUS_MULTIPROC_DIR once, at import)
import pytest

from srcore.testing import free_port, run_service, write_config

SERIES = re.compile(r"^srcore_http_requests_total\{([^}]*)\} (\S+)$", re.MULTILINE)


def build(tmp_path: Path, extra: str = "metrics-path = /internal/metrics\n") -> Any:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra=extra,
    )
    app = sample_service.create_app(config=path)

    @app.get("/reset/<token>")
    def reset(token: str) -> str:
        return "reset page"

    return app


def series(body: str) -> dict[str, float]:
    """The request counter's series: label text to count."""
    return {labels: float(value) for labels, value in SERIES.findall(body)}


def test_hostile_methods_add_one_series_not_one_each(tmp_path: Path) -> None:
    client = build(tmp_path).test_client()
    client.get("/internal/metrics")
    before = series(client.get("/internal/metrics").get_data(as_text=True))
    methods = [f"FOO{i}" for i in range(40)] + ["X" * 200, "PROPFIND", "BREW"]
    for method in methods:
        assert client.open("/", method=method).status_code == 405
    body = client.get("/internal/metrics").get_data(as_text=True)
    added = {k: v for k, v in series(body).items() if k not in before}
    assert "FOO" not in body and "XXXX" not in body and "PROPFIND" not in body
    others = {k: v for k, v in added.items() if 'method="other"' in k}
    assert list(others.values()) == [len(methods)], added


def test_known_methods_keep_their_names(tmp_path: Path) -> None:
    client = build(tmp_path).test_client()
    client.head("/")
    client.options("/")
    client.post("/healthz")
    client.delete("/")
    client.put("/")
    client.patch("/")
    labels = " ".join(series(client.get("/internal/metrics").get_data(as_text=True)))
    for method in ("GET", "OPTIONS", "POST", "DELETE", "PUT", "PATCH"):
        assert f'method="{method}"' in labels, (method, labels)
    assert 'method="other"' not in labels


def test_paths_hosts_and_secrets_never_become_labels(tmp_path: Path) -> None:
    client = build(tmp_path).test_client()
    for i in range(30):
        client.get(f"/no-such-page-{i}?email=alice{i}@example.org")
        client.get("/", headers={"Host": f"h{i}.evil.example"})
    client.get("/reset/s3cr3tT0kenValue")
    client.post("/reset/an0therT0ken")  # a 405: no view, yet a route of the path
    client.get("/reset/s3cr3tT0kenValue/trailing/junk")
    client.get("/api/webhooks/123456789", headers={"Authorization": "Bearer t0kenInHeader"})
    body = client.get("/internal/metrics").get_data(as_text=True)
    for text in ("no-such-page", "example.org", "evil", "T0ken", "123456789", "@"):
        assert text not in body, text
    routes = {re.search(r'route="([^"]*)"', labels).group(1) for labels in series(body)}  # type: ignore[union-attr]
    assert routes <= {"/", "<unmatched>", "/reset/<token>", "/api/webhooks/<id:subscription_id>"}
    # Thirty unknown pages are one series, not thirty.
    unmatched = [k for k in series(body) if 'route="<unmatched>"' in k and 'status="404"' in k]
    assert len(unmatched) == 1


def test_metrics_and_health_are_never_cached(tmp_path: Path) -> None:
    client = build(tmp_path).test_client()
    for path in ("/internal/metrics", "/healthz"):
        for method in ("GET", "HEAD"):
            response = client.open(path, method=method)
            assert response.status_code == 200, (path, method)
            assert response.headers["Cache-Control"] == "no-store", (path, method)
    head = client.head("/healthz")
    assert head.data == b""
    assert client.options("/healthz").status_code == 200
    assert client.post("/healthz").status_code == 405


def test_health_when_the_database_is_gone_is_a_fresh_503(tmp_path: Path) -> None:
    app = build(tmp_path, "")
    (tmp_path / "sample.db").unlink(missing_ok=True)
    (tmp_path / "sample.db").mkdir()  # SQLite cannot open a directory
    app.extensions["srcore"].db.dispose()
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"
    assert response.headers["Cache-Control"] == "no-store"
    assert str(tmp_path) not in response.get_data(as_text=True)


def test_health_and_metrics_need_no_redis(tmp_path: Path) -> None:
    """/healthz reports the database alone (operators.md): Redis gone is no outage of
    the service, whose throttles count in process meanwhile."""
    app = build(tmp_path)
    path = Path(app.extensions["srcore"].config.path)
    closed = f"redis://127.0.0.1:{free_port()}/0"
    text = path.read_text().replace("[sample]\n", f"redis-url = {closed}\n\n[sample]\n", 1)
    path.write_text(text)
    import sample_service

    client = sample_service.create_app(config=path).test_client()
    answer = client.get("/healthz")
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert answer.get_json()["status"] == "ok"
    assert client.get("/internal/metrics").status_code == 200


def test_metrics_are_served_only_at_their_path(tmp_path: Path) -> None:
    """The proxy blocks the exact path (operators.md): its neighbours are no way around."""
    client = build(tmp_path, "metrics-path = /metrics\n").test_client()
    assert client.get("/metrics").status_code == 200
    for path in ("/metrics/", "/Metrics", "/metrics;x", "/metrics%2f", "/./metrics"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"srcore_http" not in response.data, path


@pytest.mark.parametrize(
    "header",
    [
        ("X-Forwarded-For", "203.0.113.9"),
        ("x-forwarded-for", "203.0.113.9, 10.0.0.1"),
        ("Forwarded", "for=203.0.113.9"),
        ("X-Real-IP", "203.0.113.9"),
    ],
)
def test_metrics_forwarded_by_a_proxy_are_not_there(
    tmp_path: Path, header: tuple[str, str]
) -> None:
    """A proxy that forgot to block the path (the scraper reaches the backend directly,
    operators.md says) still shows nothing to the outside."""
    app = build(tmp_path, "metrics-path = /metrics\nproxy-fix-trusted-hops = 1\n")
    client = app.test_client()
    assert client.get("/metrics").status_code == 200
    for method in ("GET", "HEAD"):
        forwarded = client.open("/metrics", method=method, headers=[header])
        assert forwarded.status_code == 404, method
        assert b"srcore_http" not in forwarded.data


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_an_unusable_multiprocess_directory_is_said_and_fails_no_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """In a process that imported prometheus-client with the variable set, every request
    was a 500 (the after-request hook failed to count it): see the gunicorn test below."""
    target = tmp_path / "metrics-dir"
    if kind == "file":
        target.write_text("")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(target))
    with caplog.at_level(logging.ERROR, logger="srcore"):
        client = build(tmp_path).test_client()
        for path in ("/", "/", "/healthz", "/no-such-page"):
            assert client.get(path).status_code in (200, 404), path
        scrape = client.get("/internal/metrics")
    said = [r.getMessage() for r in caplog.records if "PROMETHEUS_MULTIPROC_DIR" in r.getMessage()]
    assert len(said) == 1, said  # once, not once a request
    what = "does not exist" if kind == "missing" else "is not a directory"
    for text in (said[0], scrape.get_data(as_text=True)):
        assert str(target) in text and what in text, text
    assert scrape.status_code == 503
    assert scrape.headers["Cache-Control"] == "no-store"


def test_a_multiprocess_directory_matters_only_when_metrics_are_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "nowhere"))
    app = build(tmp_path, "")
    assert app.test_client().get("/").status_code == 200


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_hostile_methods_under_gunicorn_share_one_series(tmp_path: Path) -> None:
    """gunicorn takes any method of capitals (up to 20): two workers, one file each, and
    still one ``other`` series, counted across both."""
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
    sent = 24
    with run_service("paste", config, port=port, workers=2, timeout=60) as url:
        for i in range(sent):
            method = "FOO" + "".join(chr(ord("A") + int(d)) for d in str(i))
            answer = _raw(
                port, f"{method} / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
            )
            assert answer.startswith(b"HTTP/1.1 405"), answer[:100]
        with urllib.request.urlopen(url + "/internal/metrics", timeout=10) as response:
            body = response.read().decode()
    assert "FOO" not in body
    others = [v for k, v in series(body).items() if 'method="other"' in k]
    assert others == [sent], body


def test_preloaded_workers_count_where_scrapes_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``--preload`` (an operator's GUNICORN_CMD_ARGS) the master builds the app, and
    imports prometheus-client, before srcore's hook names the directory: the workers
    counted in memory and every scrape was empty."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--preload")
    config = write_config(
        tmp_path / "config.ini",
        service_id="paste",
        database_url=f"sqlite:///{tmp_path / 'paste.db'}",
        extra="metrics-path = /internal/metrics\n",
    )
    upgrade_all(migration_target("paste", config))
    port = free_port()
    sent = 12
    with run_service("paste", config, port=port, workers=2, timeout=60) as url:
        for _ in range(sent):
            with urllib.request.urlopen(url + "/", timeout=10) as response:
                response.read()
        with urllib.request.urlopen(url + "/internal/metrics", timeout=10) as response:
            body = response.read().decode()
    counted = [v for k, v in series(body).items() if 'route="/"' in k and 'method="GET"' in k]
    assert counted == [sent], body


def test_a_vanished_metrics_directory_fails_no_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cleaner of the temporary directory removed the workers' metrics directory: each
    worker started afterwards (``--max-requests`` restarts them) could not make its files
    and answered every request 500. The request is answered; counting is what fails."""
    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--max-requests 2")
    config = write_config(
        tmp_path / "config.ini",
        service_id="paste",
        database_url=f"sqlite:///{tmp_path / 'paste.db'}",
        extra="metrics-path = /internal/metrics\n",
    )
    upgrade_all(migration_target("paste", config))
    port = free_port()
    with run_service("paste", config, port=port, workers=1, timeout=60) as url:
        (directory,) = tmp_path.glob("srcore-metrics-*")
        shutil.rmtree(directory)
        for _ in range(8):
            with urllib.request.urlopen(url + "/", timeout=10) as response:
                assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as scrape:
            urllib.request.urlopen(url + "/internal/metrics", timeout=10)
        with scrape.value as answer:
            assert answer.status == 503
            assert "PROMETHEUS_MULTIPROC_DIR" in answer.read().decode()
