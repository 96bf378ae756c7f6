"""Redirects from the outside: every value a stranger can hand a service to be sent to.

A service's ``/login?next=`` (srcore's :func:`~srcore.auth.web.is_safe_next`, which the
login callback, meta's login, two-factor and passkey steps share) is driven by headless
Chromium, the parser that matters: whatever a payload looks like to Python, the browser
must land on the service itself. Nothing leaves the machine: the browser aborts, and the
test records, any request to another host. meta's authorization endpoint is fed the
``redirect_uri`` and ``response_type`` a hostile client would send.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pytest

from srcore.auth.web import is_safe_next
from srcore.testing import launch_chromium, session_cookie

#: ``next`` values that parsers read differently: scheme-relative, backslashes, tabs and
#: newlines browsers drop, look-alike slashes, user info, controls, very long values.
PAYLOADS = [
    "//evil.invalid",
    "/\\evil.invalid",
    "\\\\evil.invalid",
    "/\\/evil.invalid",
    "/.\\evil.invalid",
    "///evil.invalid",
    "https:evil.invalid",
    "https://evil.invalid",
    "HTTPS://evil.invalid",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "%2F%2Fevil.invalid",
    "/%2F/evil.invalid",
    "/%5Cevil.invalid",
    "/%09/evil.invalid",
    "/\t/evil.invalid",
    "/\n/evil.invalid",
    "/\r/evil.invalid",
    "\t//evil.invalid",
    " //evil.invalid",
    "\x00//evil.invalid",
    "/\x00/evil.invalid",
    "/\x0b/evil.invalid",
    "/\x1f/evil.invalid",
    "/\uff0fevil.invalid",
    "\uff0f\uff0fevil.invalid",
    "/\u2215evil.invalid",
    "/\u2044evil.invalid",
    "/\u3000/evil.invalid",
    "/\u2028/evil.invalid",
    "/\x85/evil.invalid",
    "http://127.0.0.1@evil.invalid",
    "/@evil.invalid",
    "/.//evil.invalid",
    "/..//evil.invalid",
    "/?//evil.invalid",
    "/#//evil.invalid",
    "/" + "a" * 5000 + "//evil.invalid",
    "//" + "a" * 5000 + ".evil.invalid",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def test_the_login_next_keeps_a_browser_on_the_service(
    app: Any, user: Any, app_url: str, browser: Any
) -> None:
    context = browser.new_context()
    name, value = session_cookie(app, user)
    context.add_cookies([{"name": name, "value": value, "url": app_url}])
    elsewhere: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith(app_url + "/"):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.set_default_navigation_timeout(10_000)
    try:
        for payload in PAYLOADS:
            try:
                page.goto(app_url + "/login?" + urlencode({"next": payload}))
            except Exception as exc:  # an aborted navigation elsewhere raises here
                raise AssertionError(f"{payload[:60]!r}: {exc}") from None
            assert page.url.startswith(app_url + "/"), (payload[:60], page.url)
            assert elsewhere == [], (payload[:60], elsewhere)
            assert page.evaluate("location.host") == urlsplit(app_url).netloc
    finally:
        context.close()


def test_what_is_safe_in_python_stays_on_the_host_in_the_browser(
    app_url: str, browser: Any
) -> None:
    """Each accepted payload, resolved by Chromium's URL parser against the service."""
    page = browser.new_page()
    try:
        page.goto(app_url + "/")
        for payload in PAYLOADS:
            if not is_safe_next(payload):
                continue
            host = page.evaluate("(p) => new URL(p, location.href).host", payload)
            assert host == urlsplit(app_url).netloc, payload[:60]
    finally:
        page.close()


# -- meta's authorization endpoint -------------------------------------------------------------

TODO_ORIGIN = "http://127.0.0.1:5991"
CALLBACK = TODO_ORIGIN + "/oauth/callback"


@pytest.fixture
def meta_client(tmp_path: Path) -> Iterator[Any]:
    """meta in process, with todo a first-party client; errors answered as in production."""
    import meta

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all
    from srcore.testing import write_config

    config = write_config(
        tmp_path / "config.ini",
        service_id="meta",
        database_url=f"sqlite:///{tmp_path / 'meta.db'}",
        origin="https://accounts.example.org",
        extra=(
            f"\n[todo]\norigin = {TODO_ORIGIN}\n"
            f"database-url = sqlite:///{tmp_path / 'todo.db'}\n"
            f"secret-key = {secrets.token_urlsafe(40)}\n"
            f"oauth-client-id = todo\noauth-client-secret = {secrets.token_urlsafe(40)}\n"
        ),
    )
    upgrade_all(migration_target("meta", config))
    app = meta.create_app(config=config)
    app.config["PROPAGATE_EXCEPTIONS"] = False  # a crash is the 500 a client would see
    try:
        yield app.test_client()
    finally:
        app.extensions["srcore"].db.dispose()


HOSTILE = ["x\\y", 'x"y', "é", "x\u2028y", "\ufeff", "\t", "code\\", 'code"']


@pytest.mark.parametrize("value", HOSTILE)
@pytest.mark.parametrize("name", ["response_type", "redirect_uri"])
def test_authorize_refuses_hostile_values_with_a_400(
    meta_client: Any, name: str, value: str
) -> None:
    params = {
        "response_type": "code",
        "client_id": "todo",
        "redirect_uri": CALLBACK,
        "scope": "meta/profile:RO",
        "state": "s",
        "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
        "code_challenge_method": "S256",
    }
    for prefix in ("", CALLBACK) if name == "redirect_uri" else ("",):
        params[name] = prefix + value
        for response in (
            meta_client.get("/oauth/authorize?" + urlencode(params)),
            meta_client.post("/oauth/authorize", data=params),
        ):
            # Refused, or (a tab Python's URL parser drops, as browsers do, in a loopback
            # URI that then matches the registered one) on to meta's login: never a 500.
            location = response.headers.get("Location", "")
            assert response.status_code in (302, 400), (prefix + value, response.status_code)
            assert response.status_code == 400 or location.startswith("/login?"), location
