"""Every GET route of meta, todo and paste under gunicorn (on SQLite, then on PostgreSQL),
asked with GET, HEAD, OPTIONS and a conditional GET by h11, a strict HTTP/1.1 parser that
srcore does not use, over one kept-alive connection per route and visitor.

h11 must accept every answer: a body only where one may be (none on HEAD, 204 or 304),
its length as framed, no header a response may carry once repeated. HEAD answers with the
headers GET does, and ``Content-Length`` (where HEAD, 204 or 304 send it) is the length
of the body GET sends (RFC 9110, section 8.6). The users, their resources and the routes
are those of tests/test_http_caching_outsider.py.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from typing import Any

import h11
import pytest

from tests.test_http_caching_outsider import SERVICES, World, get_paths, mail_sink, world

__all__ = ["mail_sink", "world"]  # fixtures used by this module

pytestmark = [pytest.mark.slow]

#: Headers a response carries once at most (RFC 9110 and 9111 define them as one value).
SINGLE = (
    "content-length",
    "content-type",
    "etag",
    "last-modified",
    "location",
    "date",
    "expires",
    "age",
    "retry-after",
    "access-control-allow-origin",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "content-security-policy",
    "strict-transport-security",
    "cache-control",
)
#: Headers that may differ between two answers to the same request.
PER_ANSWER = frozenset({"date", "set-cookie", "x-request-id", "content-length", "expires"})


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def get(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class Client:
    """One kept-alive connection to 127.0.0.1:*port*, spoken through h11."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.sock: socket.socket | None = None
        self.conn = h11.Connection(h11.CLIENT)

    def _connect(self) -> socket.socket:
        if self.sock is None or self.conn.our_state is h11.MUST_CLOSE:
            self.close()
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=15)
            self.conn = h11.Connection(h11.CLIENT)
        return self.sock

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None

    def request(self, method: str, path: str, headers: dict[str, str]) -> Answer:
        sock = self._connect()
        sent = [("Host", f"127.0.0.1:{self.port}"), *headers.items()]
        sock.sendall(self.conn.send(h11.Request(method=method, target=path, headers=sent)))
        sock.sendall(self.conn.send(h11.EndOfMessage()))
        response: h11.Response | None = None
        body = b""
        for _ in range(10_000):  # bounded: an answer is a few hundred events at most
            event = self.conn.next_event()
            if event is h11.NEED_DATA:
                self.conn.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.InformationalResponse):
                continue
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            elif isinstance(event, h11.ConnectionClosed):
                raise AssertionError(f"{method} {path}: the connection closed mid-answer")
        else:
            raise AssertionError(f"{method} {path}: no end of the answer")
        assert response is not None
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.their_state is h11.MUST_CLOSE:
            self.close()
        else:
            self.conn.start_next_cycle()
        headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in response.headers]
        return Answer(response.status_code, headers, body)


def _port(world: World, service: str) -> int:
    return int(world.base(service).rsplit(":", 1)[1])


def _repeated(answer: Answer) -> list[str]:
    names = [name for name, _ in answer.headers]
    return [name for name in SINGLE if names.count(name) > 1]


def _stable(answer: Answer) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in answer.headers:
        if name == "location":  # a login's redirect carries a fresh state in its query
            value = value.split("?", 1)[0]
        if name not in PER_ANSWER:
            found.setdefault(name, []).append(value)
    return found


def _check(world: World, service: str, path: str, viewer: str, client: Client) -> list[Any]:
    problems: list[Any] = []
    sent = world.headers(viewer, path)
    got = client.request("GET", path, sent)
    head = client.request("HEAD", path, sent)
    options = client.request("OPTIONS", path, sent)
    tag = got.get("etag")
    conditional = client.request("GET", path, {**sent, "If-None-Match": tag or "*"})
    answers = {"GET": got, "HEAD": head, "OPTIONS": options, "conditional GET": conditional}
    where = (service, path, viewer)
    for method, answer in answers.items():
        if _repeated(answer):
            problems.append((*where, method, "repeated", _repeated(answer)))
        length = answer.get("content-length")
        if answer.status in (204, 304) or 100 <= answer.status < 200:
            if answer.body:
                problems.append((*where, method, answer.status, "a body"))
            if answer.get("transfer-encoding") is not None:
                problems.append((*where, method, answer.status, "Transfer-Encoding"))
        if answer.status == 204 and length is not None:
            problems.append((*where, method, "Content-Length on a 204", length))
        if answer.status == 304 and length is not None and int(length) != len(got.body):
            problems.append((*where, method, "Content-Length on a 304", length, len(got.body)))
    if head.body:
        problems.append((*where, "HEAD", "a body"))
    if 429 in (head.status, got.status):
        return problems  # an endpoint that slows down callers failing its check
    if head.status == 405:
        # A view that writes on GET (a link in a mail) refuses HEAD, so that a link checker
        # never spends the link (srcore.db.writes_on_safe_method); it must say so.
        if "HEAD" in (head.get("allow") or "") or "GET" not in (head.get("allow") or ""):
            problems.append((*where, "HEAD 405 with Allow", head.get("allow")))
        return problems
    if head.status != got.status or _stable(head) != _stable(got):
        problems.append((*where, "HEAD differs", head.status, got.status, head.headers))
    length = head.get("content-length")
    again = client.request("GET", path, sent)
    # Not a page made anew each time (a new secret, whose QR code may be longer or shorter):
    # the same bytes but for the security token.
    same = _without_token(again.body) == _without_token(got.body)
    if length is not None and int(length) != len(got.body) and same:
        problems.append((*where, "HEAD Content-Length", length, len(got.body)))
    return problems


def _without_token(body: bytes) -> bytes:
    return re.sub(rb'(name="csrf_token"[^>]*value=")[^"]*"', rb"\1", body)


def test_h11_accepts_every_answer_and_head_is_get_without_its_body(world: World) -> None:
    problems = []
    asked = 0
    for service in SERVICES:
        for path in get_paths(world, service):
            for viewer in ("alice", "nobody"):
                client = Client(_port(world, service))
                try:
                    problems += _check(world, service, path, viewer, client)
                except h11.ProtocolError as error:
                    problems.append((service, path, viewer, "h11 refused", repr(error)))
                finally:
                    client.close()
                asked += 1
    assert asked > 100
    assert problems == [], "\n".join(repr(p)[:600] for p in problems)
