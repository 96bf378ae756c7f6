"""Log lines a client cannot write: what a request sends reaches a log escaped.

A path decoded from ``%0d%0a`` holds a line break, one from ``%1b`` a terminal escape, a
header's obs-text a C1 control (``\\x9b`` is the 8-bit CSI) or a line separator: written
as is, each forges a log line or drives the terminal of whoever reads the log. srcore's
access log and the gunicorn access log ``srcore serve`` configures write them as escapes;
a request id from the proxy is taken only when it is 8-64 safe characters, whole.
"""

from __future__ import annotations

import logging
import socket
from pathlib import Path
from typing import Any

import pytest

from srcore.logsetup import log_safe
from srcore.testing import free_port, run_service, write_config

#: What no log line may hold as sent.
UNSAFE = [chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)]] + [
    "\u2028",
    "\u2029",
    "\u202e",
    "\u2066",
    "\u200f",
]


def build(tmp_path: Path) -> Any:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
    )
    return sample_service.create_app(config=path)


def _access(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "srcore.access"]


def _clean(line: str) -> bool:
    return not any(c in line for c in UNSAFE)


def test_log_safe_escapes_what_forges_or_drives_a_terminal() -> None:
    assert log_safe("/a\r\nGET /forged") == "/a\\x0d\\x0aGET /forged"
    assert log_safe("\x1b[2J\x9b31m\x85") == "\\x1b[2J\\x9b31m\\x85"
    assert log_safe("\u2028\u202eabc\u2066") == "\\u2028\\u202eabc\\u2066"
    # Letters of any script, and what was escaped already, stay as they are.
    assert log_safe("/~zoë/日本/\\x0d") == "/~zoë/日本/\\x0d"
    assert all(_clean(log_safe(c)) for c in UNSAFE)


@pytest.mark.parametrize(
    "target",
    [
        "/a%0d%0a127.0.0.1 GET /admin 200",
        "/a%0aINFO srcore.access: forged",
        "/%1b[2J%1b[31mred",
        "/%c2%9b31mcsi",
        "/a%e2%80%a8b",
        "/%e2%80%aeevil",
        "/?q=%0d%0a",  # stays percent-encoded: the query is logged raw
    ],
)
def test_access_log_escapes_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, target: str
) -> None:
    client = build(tmp_path).test_client()
    with caplog.at_level(logging.INFO, logger="srcore.access"):
        response = client.get(target)
    assert response.status_code < 500
    (line,) = _access(caplog)
    assert _clean(line), repr(line)
    assert line.startswith('sample "GET /')


def test_access_log_escapes_a_raw_query_and_method(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A server may hand a query or method over with bytes no browser sends."""
    client = build(tmp_path).test_client()
    with caplog.at_level(logging.INFO, logger="srcore.access"):
        client.get("/", environ_overrides={"QUERY_STRING": "q=\x1b[31m\r\nforged"})
        client.open("/", method="GET\r\nFORGED")
        client.open("/", method="G\x1bET")
    lines = _access(caplog)
    assert len(lines) == 3
    assert all(_clean(line) for line in lines), lines
    assert "q=\\x1b[31m\\x0d\\x0aforged" in lines[0]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abcdefgh", True),
        ("a" * 64, True),
        ("a" * 65, False),
        ("a" * 10_000, False),
        ("abcdefgh\n", False),
        ("abcdefgh\r\nX-Forged: 1", False),
        ("abcdefgh\x1b[2J", False),
        ("abc", False),
        ("abcdefgh\u2028", False),
    ],
)
def test_request_ids_are_taken_whole_or_not_at_all(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sent: str, kept: bool
) -> None:
    client = build(tmp_path).test_client()
    with caplog.at_level(logging.INFO, logger="srcore.access"):
        response = client.get("/", environ_overrides={"HTTP_X_REQUEST_ID": sent})
    rid = response.headers["X-Request-Id"]
    assert (rid == sent) is kept
    if not kept:
        assert len(rid) == 16
    (line,) = _access(caplog)
    assert line.endswith(f"rid={rid}")


def test_error_logs_escape_the_path(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The line logged for a 500, or for a 503 while the database is away (anyone can
    cause that one, on any path that reads), names the request as escaped text."""
    from sqlalchemy.exc import OperationalError

    app = build(tmp_path)

    @app.get("/explode/<name>")
    def explode(name: str) -> str:
        raise RuntimeError("a bug")

    @app.get("/outage/<name>")
    def outage(name: str) -> str:
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))

    client = app.test_client()
    hostile = "x%c2%9b31m%c2%85%e2%80%a8%e2%80%aeend"
    with caplog.at_level(logging.INFO):
        assert client.get(f"/explode/{hostile}").status_code == 500
        assert client.get(f"/outage/{hostile}").status_code == 503
    lines = [r.getMessage() for r in caplog.records if r.name == "srcore"]
    assert any(line.startswith("unhandled error on GET /explode/x") for line in lines), lines
    assert any(line.startswith("database unavailable on GET /outage/x") for line in lines)
    assert all(_clean(line) for line in lines), lines
    assert any("\\x9b31m\\x85\\u2028\\u202eend" in line for line in lines)


def _send(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_gunicorn_access_log_escapes_what_clients_send(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn refuses control characters in the request line and header values, but
    decodes ``%0d%0a`` into the path and passes obs-text bytes (C1 controls) through."""
    log = tmp_path / "access.log"
    monkeypatch.setenv(
        "GUNICORN_CMD_ARGS",
        f"--logger-class srcore.gunicorn_logging.AccessLogger --access-logfile {log} "
        "--access-logformat '%(r)s|%(U)s|%(a)s|%(f)s|%({x-note}i)s|%({http_cookie}e)s'",
    )
    config = write_config(
        tmp_path / "config.ini",
        service_id="paste",
        database_url=f"sqlite:///{tmp_path / 'paste.db'}",
    )
    port = free_port()
    requests = [
        b"GET /a%0d%0aGET%20/forged HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /%1b[2J HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"GET /ua HTTP/1.1\r\nHost: x\r\nUser-Agent: agent\x9b31m\x85next\r\n"
        b"Referer: http://r.example/\xc2\x85\r\nX-Note: \xe2\x80\xa8note\r\n"
        b"Cookie: session=s3cr3tC00kie\r\nConnection: close\r\n\r\n",
    ]
    with run_service("paste", config, port=port, timeout=60):
        for request in requests:
            assert _send(port, request).startswith(b"HTTP/1.1 ")
    text = log.read_text(encoding="utf-8", errors="surrogateescape")
    lines = text.splitlines()
    # /healthz (the readiness check) and the three requests: one line each.
    ours = [line for line in lines if "/healthz" not in line]
    assert len(ours) == len(requests), text
    assert all(_clean(line) for line in ours), ours
    assert "/a\\x0d\\x0aGET /forged" in ours[0]
    assert "/\\x1b[2J" in ours[1]
    assert "agent\\x9b31m\\x85next" in ours[2]
    assert "s3cr3tC00kie" not in text
