"""Request hygiene where it lives in the server: paste under a real gunicorn, raw sockets.

A body shorter than its Content-Length or a chunked body gunicorn cannot parse is a 400
with nothing written; a request line or headers past srcore's limits get srcore's error
body (JSON under ``/api/``), not gunicorn's own HTML page; a request gunicorn cannot parse
keeps gunicorn's status but gets srcore's JSON error body too (srcore's worker class).
"""

from __future__ import annotations

import base64
import json
import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from srcore.testing import (
    create_user,
    free_port,
    run_service,
    session_cookie,
    write_config,
)

pytestmark = pytest.mark.slow

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("content-type", "").startswith("application/json"), self
        return json.loads(self.body)


def exchange(port: int, data: bytes, *, half_close: bool = True) -> Reply:
    """Send raw bytes, stop sending, and read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Reply(status, headers, body)


@dataclass
class Paste:
    port: int
    app: Any
    cookie: str

    def count(self) -> int:
        from paste.models import Paste as Row

        with self.app.extensions["srcore"].db.transaction() as session:
            return session.scalar(select(func.count()).select_from(Row)) or 0

    def form_request(self) -> tuple[str, str]:
        """A session cookie with a CSRF token in it, and that token."""
        reply = exchange(
            self.port,
            b"GET /new HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            + f"Cookie: {self.cookie}\r\n\r\n".encode(),
        )
        assert reply.status == 200, reply
        match = _CSRF.search(reply.body.decode())
        assert match
        cookie = self.cookie
        set_cookie = reply.headers.get("set-cookie")
        if set_cookie:
            cookie = set_cookie.split(";", 1)[0]
        return cookie, match.group(1)


@pytest.fixture(scope="module")
def paste_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Paste]:
    import paste

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    tmp: Path = tmp_path_factory.mktemp("paste-server")
    config = write_config(
        tmp / "config.ini", service_id="paste", database_url=f"sqlite:///{tmp / 'paste.db'}"
    )
    upgrade_all(migration_target("paste", config))
    app = paste.create_app(config=config)
    user = create_user(app, "alice")
    name, value = session_cookie(app, user)
    port = free_port()
    with run_service("paste", config, port=port, timeout=60):
        yield Paste(port, app, f"{name}={value}")
    app.extensions["srcore"].db.dispose()


def _post(cookie: str, body: bytes, *, length: int | None = None, extra: str = "") -> bytes:
    declared = len(body) if length is None else length
    return (
        "POST /new HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {declared}\r\n{extra}\r\n"
    ).encode() + body


def test_a_complete_body_is_stored(paste_server: Paste) -> None:
    cookie, token = paste_server.form_request()
    before = paste_server.count()
    body = f"csrf_token={token}&visibility=public&text=whole".encode()
    reply = exchange(paste_server.port, _post(cookie, body))
    assert reply.status == 302, reply
    assert paste_server.count() == before + 1


def test_a_truncated_body_is_a_400_and_stores_nothing(paste_server: Paste) -> None:
    cookie, token = paste_server.form_request()
    before = paste_server.count()
    body = f"csrf_token={token}&visibility=public&text=partial".encode()
    reply = exchange(paste_server.port, _post(cookie, body, length=len(body) + 500))
    assert reply.status == 400, reply
    assert paste_server.count() == before


def test_a_malformed_chunked_body_is_a_400(paste_server: Paste) -> None:
    cookie, _token = paste_server.form_request()
    before = paste_server.count()
    for broken in [b"zz\r\nabc\r\n0\r\n\r\n", b"5\r\nabcdefgh\r\n0\r\n\r\n", b"5\r\nab"]:
        data = (
            "POST /new HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Cookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        ).encode() + broken
        reply = exchange(paste_server.port, data)
        assert reply.status == 400, (broken, reply)
    assert paste_server.count() == before


def test_a_long_request_line_is_a_json_414_under_api(paste_server: Paste) -> None:
    target = "/api/pastes?q=" + "a" * 6000
    reply = exchange(
        paste_server.port, f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
    )
    assert reply.status == 414, reply
    assert reply.json()["errors"]
    page = exchange(
        paste_server.port,
        f"GET /?q={'a' * 6000} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    assert page.status == 414 and page.headers["content-type"].startswith("text/html")


def test_too_many_or_too_large_headers_are_a_json_431_under_api(paste_server: Paste) -> None:
    many = "".join(f"X-Extra-{i}: {i}\r\n" for i in range(150))
    reply = exchange(
        paste_server.port,
        f"GET /api/pastes HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n".encode(),
    )
    assert reply.status == 431, reply
    assert reply.json()["errors"]
    large = "X-Large: " + "b" * 9000 + "\r\n"
    reply = exchange(
        paste_server.port,
        f"GET /api/pastes HTTP/1.1\r\nHost: x\r\n{large}Connection: close\r\n\r\n".encode(),
    )
    assert reply.status == 431, reply
    assert reply.json()["errors"]


def test_broken_authorization_headers_are_4xx(paste_server: Paste) -> None:
    basic = base64.b64encode(b"\xff\xfe:\xc3\x28").decode()
    for value in [f"Basic {basic}", "Basic !!!", "Bearer \x01\x02", "Bearer " + "A" * 3000]:
        for path in ["/api/pastes", "/"]:
            reply = exchange(
                paste_server.port,
                f"GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {value}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1"),
            )
            assert reply.status < 500, (path, value[:20], reply)


# Requests gunicorn itself cannot parse never reach the app: gunicorn answers them, through
# srcore's worker class, with srcore's standard error body.
_UNPARSABLE = {
    "header-name-under-api": b"GET /api/pastes HTTP/1.1\r\nHost: x\r\nBad(Name): 1\r\n\r\n",
    "request-line": b"GARBAGE\r\n\r\n",
    "target-with-a-space": b"GET /api/pa stes HTTP/1.1\r\nHost: x\r\n\r\n",
    "method": b"G@T /api/pastes HTTP/1.1\r\nHost: x\r\n\r\n",
    "http-version-under-api": b"GET /api/pastes HTTP/9.x\r\nHost: x\r\n\r\n",
    "obsolete-folding-under-api": (
        b"GET /api/pastes HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n  two\r\n\r\n"
    ),
    "content-length-under-api": (
        b"POST /api/pastes HTTP/1.1\r\nHost: x\r\nContent-Length: 1x\r\n\r\n"
    ),
}


@pytest.mark.parametrize("data", list(_UNPARSABLE.values()), ids=list(_UNPARSABLE))
def test_requests_gunicorn_cannot_parse_get_the_json_error_body(
    paste_server: Paste, data: bytes
) -> None:
    reply = exchange(paste_server.port, data)
    assert reply.status == 400, reply
    errors = reply.json()["errors"]
    assert errors and all(isinstance(e["reason"], str) and e["reason"] for e in errors)
    assert reply.headers["connection"] == "close"
    assert int(reply.headers["content-length"]) == len(reply.body)


def test_a_bad_header_outside_the_api_gets_a_small_page(paste_server: Paste) -> None:
    for data in [
        b"GET / HTTP/1.1\r\nHost: x\r\nBad(Name): 1\r\n\r\n",
        b"GET /new HTTP/1.1\r\nHost: x\r\nX-Folded: one\r\n  two\r\n\r\n",
    ]:
        reply = exchange(paste_server.port, data)
        assert reply.status == 400, reply
        assert not reply.headers["content-type"].startswith("application/json"), reply
        assert b"Traceback" not in reply.body and b"Bad Request" in reply.body
        assert len(reply.body) < 2048, reply


def test_serve_runs_srcores_worker_class_threaded_or_not() -> None:
    from srcore.serving import gunicorn_options

    for threads, worker in [(1, "SyncWorker"), (4, "ThreadWorker")]:
        options = gunicorn_options(threads=threads)
        assert options[options.index("--worker-class") + 1] == f"srcore.gunicorn_worker.{worker}"
    assert "srcore.gunicorn_worker.SyncWorker" in gunicorn_options()
