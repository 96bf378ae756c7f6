"""docs/security.md probed as an outsider would, where no other test held the promise: todo
under srcore's gunicorn worker on 127.0.0.1, spoken to with raw sockets (srcore itself
never speaks HTTP this way), two users with their own session cookies.

- errors under ``/_srcore/`` are always JSON, those of requests gunicorn itself refuses
  too (meta is the only caller there, and reads the reason from the JSON body):
  test_a_request_gunicorn_refuses_under_srcore_gets_json;
- every route answers every method, odd ones included (TRACE, PROPFIND, MKCOL...), with
  the security headers and never a server error, and a page made for a logged-in user is
  ``no-store``: test_every_route_and_method_as_a_logged_in_user;
- another user's private tracker and its pages are a 404, the same as a tracker that does
  not exist: test_another_users_private_pages_are_not_there;
- a login's ``next`` never sends the browser to another host, however it is spelt:
  test_next_never_leaves_the_origin;
- requests past gunicorn's own limits as well as srcore's keep their status, the security
  headers and JSON for the API: test_requests_past_gunicorns_limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urljoin, urlsplit

import pytest

from srcore.headers import security_headers
from srcore.testing import (
    RawReply,
    create_user,
    exchange,
    free_port,
    run_service,
    session_cookie,
    write_config,
)

pytestmark = pytest.mark.slow

_CSRF = re.compile(rb'name="csrf_token" value="([^"]+)"')


@dataclass
class Todo:
    """todo under gunicorn; alice and bob each hold a session cookie signed by its key."""

    port: int
    origin: str
    cookie_name: str
    cookies: dict[str, str]

    def request(
        self,
        method: str,
        target: str,
        *,
        who: str | None = None,
        headers: dict[str, str] | None = None,
        body: bytes = b"",
    ) -> RawReply:
        """One request; a renewed session cookie replaces the user's."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{self.port}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        if who is not None:
            lines.append(f"Cookie: {self.cookies[who]}")
        if body or method in {"POST", "PUT", "PATCH"}:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: close")
        reply = exchange(self.port, ("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        for cookie in reply.cookies:
            pair = cookie.split(";", 1)[0]
            if who is not None and pair.startswith(f"{self.cookie_name}=") and pair[-1] != "=":
                self.cookies[who] = pair
        return reply

    def submit(self, path: str, fields: dict[str, str], *, who: str) -> RawReply:
        """Send the form at *path* as its page would: with its token, from this origin."""
        page = self.request("GET", path, who=who)
        token = _CSRF.search(page.body)
        assert token is not None, page
        body = urlencode({"csrf_token": token.group(1).decode(), **fields}).encode()
        form = {"Content-Type": "application/x-www-form-urlencoded", "Origin": self.origin}
        return self.request("POST", path, who=who, headers=form, body=body)


@pytest.fixture(scope="module")
def todo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Todo]:
    import todo as package

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    port = free_port()
    origin = f"http://127.0.0.1:{port}"
    tmp: Path = tmp_path_factory.mktemp("todo-outsider")
    config = write_config(
        tmp / "config.ini",
        service_id="todo",
        database_url=f"sqlite:///{tmp / 'todo.db'}",
        origin=origin,
    )
    upgrade_all(migration_target("todo", config))
    app: Any = package.create_app(config=config)
    cookies = {}
    for who in ("alice", "bob"):
        name, value = session_cookie(app, create_user(app, who))
        cookies[who] = f"{name}={value}"
    with run_service("todo", config, port=port, timeout=60):
        service = Todo(port, origin, name, cookies)
        made = service.submit("/create", {"name": "secret", "visibility": "private"}, who="alice")
        assert made.status == 302, made
        ticket = service.submit(
            "/~alice/secret/new", {"title": "mine", "description": "alice only"}, who="alice"
        )
        assert ticket.headers["location"].endswith("/~alice/secret/1"), ticket
        yield service
    app.extensions["srcore"].db.dispose()


#: Requests gunicorn refuses before the app sees them, each to meta's path at a service.
REFUSED = {
    "content-length": b"POST /_srcore/events HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    "transfer-coding": (
        b"POST /_srcore/events HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
    ),
    "header-name": b"POST /_srcore/events HTTP/1.1\r\nHost: x\r\nX\x01: y\r\n\r\n",
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_a_request_gunicorn_refuses_under_srcore_gets_json(todo: Todo, name: str) -> None:
    reply = exchange(todo.port, REFUSED[name])
    assert 400 <= reply.status < 600, reply
    assert reply.headers["content-type"] == "application/json", reply
    reason = json.loads(reply.body)["errors"][0]["reason"]
    assert reason and "<" not in reason, reply
    assert reply.headers["x-frame-options"] == "DENY", reply


#: Every kind of route todo has, with alice's tracker and ticket in it.
PATHS = [
    "/",
    "/create",
    "/~alice/secret",
    "/~alice/secret/settings",
    "/~alice/secret/delete",
    "/~alice/secret/new",
    "/~alice/secret/1",
    "/~alice/secret/1/edit",
    "/~alice/secret/1/comment",
    "/~alice/secret/1/status",
    "/login",
    "/logout",
    "/healthz",
    "/.well-known/srcore-service",
    "/.well-known/security.txt",
    "/api/openapi.json",
    "/api/docs",
    "/api/trackers",
    "/api/trackers/secret",
    "/webhooks",
    "/webhooks/new",
    "/webhooks/1",
    "/nothing-here",
]
METHODS = ["GET", "HEAD", "OPTIONS", "TRACE", "PROPFIND", "MKCOL", "PUT", "DELETE", "BREW"]


def test_every_route_and_method_as_a_logged_in_user(todo: Todo) -> None:
    expected = security_headers(production=False, origin=todo.origin)
    for path in PATHS:
        for method in METHODS:
            reply = todo.request(method, path, who="alice")
            where = f"{method} {path}"
            assert reply.status < 500, (where, reply)
            for name, value in expected.items():
                assert reply.headers.get(name.lower()) == value, (where, name, reply)
            # TRACE echoes nothing: the cookie never comes back in a body a script reads.
            assert todo.cookies["alice"].encode() not in reply.body, where
            assert b"Traceback" not in reply.body, where
            page = reply.headers.get("content-type", "").startswith("text/html")
            # The API's pages (its docs) have no cookie session, and are left to the view.
            if method in {"GET", "HEAD"} and reply.status == 200 and page and path[:5] != "/api/":
                assert reply.headers["cache-control"] == "no-store", (where, reply)


@pytest.mark.parametrize(
    "path",
    [
        "/~alice/secret",
        "/~alice/secret/1",
        "/~alice/secret/settings",
        "/~alice/secret/1/edit",
        "/~alice/secret/new",
        "/~alice/secret/delete",
    ],
)
def test_another_users_private_pages_are_not_there(todo: Todo, path: str) -> None:
    assert todo.request("GET", path, who="alice").status == 200
    seen = todo.request("GET", path, who="bob")
    missing = todo.request("GET", path.replace("/secret", "/nothing"), who="bob")
    assert seen.status == missing.status == 404, (seen, missing)
    assert b"alice only" not in seen.body
    assert seen.headers["cache-control"] == "no-store"


#: ``next`` values a hostile link may carry, each meant to leave for evil.invalid.
HOSTILE_NEXT = [
    "//evil.invalid",
    "///evil.invalid",
    "/\\evil.invalid",
    "\\\\evil.invalid",
    "/\t/evil.invalid",
    "/%2F/evil.invalid",
    "/%5C/evil.invalid",
    "/.//evil.invalid",
    "/a/../..//evil.invalid",
    "https://evil.invalid",
    "https:evil.invalid",
    "http://127.0.0.1@evil.invalid",
    "javascript:alert(1)",
    "/\uff0f/evil.invalid",
    " //evil.invalid",
]


@pytest.mark.parametrize("target", HOSTILE_NEXT)
def test_next_never_leaves_the_origin(todo: Todo, target: str) -> None:
    """A logged-in user sent to ``/login?next=...`` stays on the service's own host."""
    reply = todo.request("GET", "/login?next=" + quote(target, safe=""), who="alice")
    assert reply.status < 500, reply
    location = reply.headers.get("location")
    if location is None:
        return
    landed = urlsplit(urljoin(todo.origin + "/login", location))
    assert (landed.scheme, landed.netloc) == ("http", f"127.0.0.1:{todo.port}"), location


#: Requests past gunicorn's own limits too (srcore.serving), which gunicorn refuses itself.
PAST_EVERY_LIMIT = {
    "a 1 MB header": ({"X-Big": "a" * 1_000_000}, "", 431),
    "1000 header fields": ({f"X-{i}": "1" for i in range(1000)}, "", 431),
    "a 100 kB address": ({}, "?q=" + "a" * 100_000, 414),
}


@pytest.mark.parametrize("base", ["/", "/api/trackers"])
@pytest.mark.parametrize("name", list(PAST_EVERY_LIMIT))
def test_requests_past_gunicorns_limits(todo: Todo, name: str, base: str) -> None:
    """Still their status, the security headers, and JSON for the API (security.md)."""
    headers, query, status = PAST_EVERY_LIMIT[name]
    reply = todo.request("GET", base + query, headers=headers)
    assert reply.status == status, reply
    assert reply.headers["x-frame-options"] == "DENY", reply
    if base.startswith("/api/"):
        assert reply.headers["content-type"] == "application/json", reply
        assert json.loads(reply.body)["errors"][0]["reason"], reply
