"""docs/security.md and the security parts of docs/operators.md, promise by promise, where
no other test held the promise: each is probed from outside, on todo under gunicorn on
127.0.0.1 with ``http.client`` and ``http.cookies`` (neither is used by srcore), or on the
test client where a request hook is all there is to see.

Promises (docs/security.md unless noted) and their tests here:

- the session cookie on the wire: ``<service>_session``, HttpOnly, SameSite=Lax,
  host-only, Secure unless development over http, lasting ``session-lifetime``:
  test_session_cookie_on_the_wire;
- a cookie older than ``session-lifetime`` is refused:
  test_a_session_older_than_its_lifetime_is_refused;
- every unsafe method outside /api/ needs the CSRF token:
  test_put_patch_delete_outside_the_api_need_the_csrf_token;
- CSRF's same-origin check over TLS outside development (operators.md, Write the
  config): test_csrf_checks_the_referrer_over_tls_outside_development;
- the policy allows scripts, styles, images, fonts and connections from the own origin
  only: test_the_policy_allows_the_own_origin_only; HSTS two years in production over
  https only: test_hsts_is_two_years_in_production_over_https_only;
- ``proxy-fix-trusted-hops`` believes exactly that many hops (operators.md, Reverse proxy
  and TLS): test_trusted_hops_decide_what_the_service_believes;
- ``X-Request-Id`` of 8-64 letters, digits and ``._-`` is echoed and logged as ``rid=``,
  else a new one is made (operators.md): test_a_request_id_is_taken_only_within_its_rules;
- tokens in paths never reach a log line, whatever the method:
  test_a_refused_method_does_not_log_a_token_in_the_path.

meta's own promises (throttles with Redis and behind proxies, its confirmation link in the
log) are in example_services/meta/tests/test_meta_security_promises.py.
"""

from __future__ import annotations

import http.client
import http.cookies
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from sqlalchemy import func, select

from srcore.testing import create_user, free_port, run_service, session_cookie, write_config

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
LIFETIME = timedelta(hours=2)


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: str


@dataclass
class Todo:
    """todo under gunicorn, with alice's session cookie signed by its own key."""

    port: int
    app: Any
    cookie: str
    environment: str
    origin: str

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, body: str = ""
    ) -> Reply:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=20)
        try:
            connection.request(method, path, body=body.encode() or None, headers=headers or {})
            response = connection.getresponse()
            return Reply(response.status, response.headers, response.read().decode())
        finally:
            connection.close()

    def trackers(self) -> int:
        from todo.models import Tracker

        with self.app.extensions["srcore"].db.transaction() as session:
            return session.scalar(select(func.count()).select_from(Tracker)) or 0


#: (environment, origin, proxy hops): development over http, development behind an https
#: proxy, staging and production behind one.
SERVERS = {
    "development-http": ("development", "", 0),
    "development-https": ("development", "https://todo.example.org", 1),
    "staging": ("staging", "https://todo.example.org", 1),
    "production": ("production", "https://todo.example.org", 1),
}


@pytest.fixture(scope="module", params=list(SERVERS))
def todo(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Todo]:
    import todo as package

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    environment, origin, hops = SERVERS[request.param]
    port = free_port()
    origin = origin or f"http://127.0.0.1:{port}"
    tmp: Path = tmp_path_factory.mktemp(f"todo-{request.param}")
    config = write_config(
        tmp / "config.ini",
        service_id="todo",
        database_url=f"sqlite:///{tmp / 'todo.db'}",
        origin=origin,
        extra=f"session-lifetime = 2h\nproxy-fix-trusted-hops = {hops}\n",
    )
    config.write_text(
        config.read_text().replace("environment = development", f"environment = {environment}")
    )
    upgrade_all(migration_target("todo", config))
    app = package.create_app(config=config)
    name, value = session_cookie(app, create_user(app, "alice"))
    with run_service("todo", config, port=port, timeout=60):
        yield Todo(port, app, f"{name}={value}", environment, origin)
    app.extensions["srcore"].db.dispose()


def _morsel(reply: Reply, name: str) -> http.cookies.Morsel[str]:
    found = [v for k, v in reply.headers.items() if k.lower() == "set-cookie"]
    assert found, reply.headers
    jar: http.cookies.SimpleCookie = http.cookies.SimpleCookie()
    for value in found:
        jar.load(value)
    assert name in jar, found
    return jar[name]


def test_session_cookie_on_the_wire(todo: Todo) -> None:
    reply = todo.request("GET", "/create", headers={"Cookie": todo.cookie})
    assert reply.status == 200, reply
    # Over https only todo's own host can set it (no sibling subdomain can toss one).
    name = "__Host-todo_session" if todo.origin.startswith("https:") else "todo_session"
    assert todo.cookie.startswith(f"{name}=")
    morsel = _morsel(reply, name)
    assert morsel["httponly"] is True
    assert morsel["samesite"] == "Lax"
    assert morsel["path"] == "/"
    # Host-only: a Domain would send it to every service under that domain.
    assert morsel["domain"] == ""
    plain_development = todo.environment == "development" and todo.origin.startswith("http:")
    assert bool(morsel["secure"]) is not plain_development
    # It lasts session-lifetime, counted from this very answer.
    expires = parsedate_to_datetime(morsel["expires"])
    sent = parsedate_to_datetime(reply.headers["Date"])
    assert abs((expires - sent) - LIFETIME) <= timedelta(seconds=2), (expires, sent)


def _form(todo: Todo, headers: dict[str, str]) -> tuple[str, str]:
    """The session cookie carrying a CSRF token, and that token, as the form page gives."""
    reply = todo.request("GET", "/create", headers={"Cookie": todo.cookie, **headers})
    assert reply.status == 200, reply
    match = _CSRF.search(reply.body)
    assert match, reply.body[:500]
    name = todo.cookie.split("=", 1)[0]
    return f"{name}={_morsel(reply, name).value}", match.group(1)


def test_csrf_checks_the_referrer_over_tls_outside_development(todo: Todo) -> None:
    """Over TLS (the proxy says https) and outside development, a form with a good token
    is still refused unless the browser says it comes from the service's own origin."""
    tls = {"Host": "todo.example.org", "X-Forwarded-Proto": "https"}
    cookie, token = _form(todo, tls)
    body = urlencode({"csrf_token": token, "name": "", "visibility": "public"})
    form = {
        **tls,
        "Cookie": cookie,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    before = todo.trackers()
    # Over plain http (no trusted proxy says otherwise) and in development it does not apply.
    strict = todo.environment != "development" and todo.origin.startswith("https:")
    for referrer in (
        None,
        "https://evil.invalid/create",
        "http://todo.example.org/create",
        "https://todo.example.org.evil.invalid/create",
    ):
        headers = dict(form) if referrer is None else {**form, "Referer": referrer}
        name = f"t{abs(hash(referrer)) % 10**8}"
        reply = todo.request(
            "POST", "/create", headers=headers, body=body.replace("name=", f"name={name}")
        )
        if strict:
            assert reply.status == 400, (referrer, reply.status)
            assert todo.trackers() == before, referrer
        else:
            assert reply.status == 302, (referrer, reply.status)
            before += 1
    own = {**form, "Referer": "https://todo.example.org/create"}
    reply = todo.request("POST", "/create", headers=own, body=body.replace("name=", "name=own"))
    assert reply.status == 302, reply
    assert todo.trackers() == before + 1


def _csp(reply: Reply) -> dict[str, list[str]]:
    header = reply.headers["Content-Security-Policy"]
    parts = (part.split() for part in header.split(";") if part.strip())
    return {part[0]: part[1:] for part in parts}


def test_the_policy_allows_the_own_origin_only(todo: Todo) -> None:
    for path in ("/", "/no-such-page", "/api/trackers"):
        csp = _csp(todo.request("GET", path))
        assert csp["default-src"] == ["'self'"], path
        for directive in ("script-src", "style-src", "font-src", "connect-src"):
            assert csp.get(directive, csp["default-src"]) == ["'self'"], (path, directive)
        # An image may also be inline (a data: URL), never from another origin.
        assert set(csp.get("img-src", ["'self'"])) <= {"'self'", "data:"}, path
        assert csp["object-src"] == ["'none'"] and csp["base-uri"] == ["'none'"], path
        assert csp["frame-ancestors"] == ["'none'"], path


def test_hsts_is_two_years_in_production_over_https_only(todo: Todo) -> None:
    reply = todo.request("GET", "/", headers={"X-Forwarded-Proto": "https"})
    if todo.environment == "production":
        assert reply.headers["Strict-Transport-Security"] == f"max-age={2 * 365 * 24 * 3600}"
    else:
        assert reply.headers["Strict-Transport-Security"] is None


# -- the test client: request hooks ---------------------------------------------------------


def build(tmp_path: Path, extra: str = "") -> Any:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra=extra,
    )
    return sample_service.create_app(config=path)


def test_a_session_older_than_its_lifetime_is_refused(
    app: Any, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The browser drops the cookie when it expires; a copy kept past that is refused by
    the server too, since its signature carries the time it was made."""
    import time

    from itsdangerous import TimestampSigner

    lifetime: timedelta = app.permanent_session_lifetime
    now = int(time.time())

    def cookie_made(ago: timedelta) -> str:
        with monkeypatch.context() as patch:
            patch.setattr(
                TimestampSigner, "get_timestamp", lambda self: now - int(ago.total_seconds())
            )
            return session_cookie(app, user)[1]

    minute = timedelta(minutes=1)
    for ago, status in ((lifetime - minute, 200), (lifetime + minute, 503)):
        client = app.test_client()
        client.set_cookie(app.config["SESSION_COOKIE_NAME"], cookie_made(ago))
        # 503: the login page, which needs meta, is where a visitor without a session goes.
        assert client.get("/private").status_code == status, ago


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_put_patch_delete_outside_the_api_need_the_csrf_token(tmp_path: Path, method: str) -> None:
    app = build(tmp_path)
    app.config["TESTING"] = True
    done: list[str] = []

    @app.route("/thing", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
    def thing() -> Any:
        from flask import request
        from flask_wtf.csrf import generate_csrf

        if request.method == "GET":
            return {"csrf": generate_csrf()}
        done.append(request.method)
        return {"ok": True}

    client = app.test_client()
    token = client.get("/thing").get_json()["csrf"]
    for headers in ({}, {"X-CSRFToken": "forged"}):
        response = client.open("/thing", method=method, headers=headers, json={"x": 1})
        assert response.status_code == 400, headers
    assert done == []
    response = client.open("/thing", method=method, headers={"X-CSRFToken": token})
    assert response.status_code == 200
    assert done == [method]


def test_trusted_hops_decide_what_the_service_believes(tmp_path: Path) -> None:
    """0 hops: no X-Forwarded-* header counts. 1 hop: the last entry, the one the proxy
    added, and never one the client wrote before it."""
    seen: list[tuple[str | None, str]] = []
    forged = {"X-Forwarded-For": "203.0.113.66, 198.51.100.7", "X-Forwarded-Proto": "https"}
    for hops, expected in ((0, ("127.0.0.1", "http")), (1, ("198.51.100.7", "https"))):
        (tmp_path / str(hops)).mkdir()
        app = build(tmp_path / str(hops), f"proxy-fix-trusted-hops = {hops}\n")

        @app.get("/whoami-probe")
        def probe() -> str:
            from flask import request

            seen.append((request.remote_addr, request.scheme))
            return ""

        client = app.test_client()
        client.get("/whoami-probe", headers=forged, environ_base={"REMOTE_ADDR": "127.0.0.1"})
        assert seen[-1] == expected, hops


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("a" * 8, True),
        ("A.b_c-9" + "x" * 57, True),  # 64
        ("a" * 7, False),
        ("a" * 65, False),
        ("abcdefgh ij", False),
        ("abcdefgh/ij", False),
        ("abcdéfghij", False),
    ],
)
def test_a_request_id_is_taken_only_within_its_rules(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sent: str, kept: bool
) -> None:
    app = build(tmp_path)
    with caplog.at_level(logging.INFO, logger="srcore.access"):
        response = app.test_client().get("/", headers={"X-Request-Id": sent})
    rid = response.headers["X-Request-Id"]
    assert (rid == sent) is kept
    if not kept:
        assert re.fullmatch(r"[0-9a-f]{16}", rid)
    lines = [r.getMessage() for r in caplog.records if r.name == "srcore.access"]
    assert lines and lines[-1].endswith(f" rid={rid}"), lines


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
def test_a_refused_method_does_not_log_a_token_in_the_path(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    """A route that takes GET only (a mailed link) answers another method with a 405
    before any view runs; its path still holds the token, and the line written for it
    (srcore's, and the server's, which reads the same redacted target) must not."""
    from srcore.redact import ENVIRON_KEY

    app = build(tmp_path)

    @app.get("/reset/<token>")
    def reset(token: str) -> str:
        return "a reset form"

    seen: dict[str, Any] = {}

    @app.after_request
    def keep(response: Any) -> Any:
        from flask import request

        seen["environ"] = request.environ
        return response

    with caplog.at_level(logging.INFO, logger="srcore.access"):
        response = app.test_client().open("/reset/s3cr3tT0ken?next=/x", method=method)
    assert response.status_code == 405
    lines = "\n".join(r.getMessage() for r in caplog.records if r.name == "srcore.access")
    assert "s3cr3tT0ken" not in lines, lines
    assert f"{method} /reset/[redacted]?next=/x" in lines
    assert seen["environ"][ENVIRON_KEY] == "/reset/[redacted]?next=/x"


@pytest.mark.parametrize(
    "sent",
    [
        "/reset/s3cr3tT0ken/",
        "/reset/s3cr3tT0ken/extra",
        "/reset/s3cr3tT0ken%00",
    ],
)
def test_a_link_no_route_takes_does_not_log_its_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sent: str
) -> None:
    """A mailed link with a slash or more pasted after it matches no route (a 404 or a
    400): its path still holds the token, and its log line must not."""
    app = build(tmp_path)

    @app.get("/reset/<token>")
    def reset(token: str) -> str:
        return "a reset form"

    @app.get("/<username>/settings")
    def settings(username: str) -> str:
        return "settings"

    with caplog.at_level(logging.INFO, logger="srcore.access"):
        response = app.test_client().get(sent)
        app.test_client().get("/alice/settings/more")  # nothing secret: logged as sent
    assert response.status_code in (400, 404)
    lines = "\n".join(r.getMessage() for r in caplog.records if r.name == "srcore.access")
    assert "s3cr3tT0ken" not in lines, lines
    assert "/reset/[redacted]" in lines
    assert "/alice/settings/more" in lines
