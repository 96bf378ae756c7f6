"""Cookie tossing between sibling subdomains (todo.example.org, paste.example.org, a
host serving what users upload...), in-process with explicit ``Cookie`` headers.

Any host of a site may set a cookie with ``Domain=example.org`` and any ``Path``, and the
browser sends it to every other host of the site beside their own cookies. With two
cookies of one name in a request, the service reads the first; a browser puts a longer
``Path`` first, so the tossed cookie wins wherever its path reaches. A valid session of
the attacker's tossed that way logs the victim into the attacker's account (what they
write lands there), and garbage tossed on ``/oauth/callback`` makes every login fail.

On https a service names its cookie ``__Host-<service>_session``, which a browser lets
only the host itself set, and never reads the plain name: nothing a sibling can set is
read. Plain http (the development network on one machine) keeps the plain name.
test_cookie_tossing_browser.py shows the same in Chromium with real sibling hosts.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_meta import META, FakeMeta, build_service

from srcore.testing import create_user, session_cookie

HTTPS = "https://sample.example.test"
HTTP = "http://sample.example.test"


def build(tmp_path: Path, fake: FakeMeta, origin: str) -> Any:
    """The sample service at *origin* in a network whose meta is *fake*."""
    return build_service(tmp_path, fake, origin=origin)


@pytest.fixture
def fake() -> FakeMeta:
    meta = FakeMeta()
    meta.add_user(42, "alice")
    meta.logged_in = 42
    return meta


@pytest.fixture(params=[HTTPS, HTTP])
def service(request: pytest.FixtureRequest, tmp_path: Path, fake: FakeMeta) -> Iterator[Any]:
    app = build(tmp_path, fake, request.param)
    yield app
    app.extensions["srcore"].db.dispose()


@pytest.fixture
def https_service(tmp_path: Path, fake: FakeMeta) -> Iterator[Any]:
    app = build(tmp_path, fake, HTTPS)
    yield app
    app.extensions["srcore"].db.dispose()


def browser(app: Any) -> Any:
    """A client that sends only the ``Cookie`` header each request is given."""
    return app.test_client(use_cookies=False)


def get(app: Any, path: str, cookie: str | None = None) -> Any:
    origin = str(app.extensions["srcore"].section["origin"])
    headers = {"Cookie": cookie} if cookie else {}
    return browser(app).get(path, base_url=origin, headers=headers)


def set_cookies(response: Any) -> dict[str, Any]:
    """The response's ``Set-Cookie`` headers, by cookie name."""
    jar: SimpleCookie = SimpleCookie()
    for header in response.headers.getlist("Set-Cookie"):
        jar.load(header)
    return dict(jar)


def test_https_names_the_cookie_for_its_host_only(https_service: Any) -> None:
    answer = get(https_service, "/login")
    assert answer.status_code == 302
    headers = answer.headers.getlist("Set-Cookie")
    assert len(headers) == 1 and headers[0].startswith("__Host-sample_session="), headers
    attributes = {part.strip().split("=")[0].lower() for part in headers[0].split(";")[1:]}
    # What a browser demands of a __Host- cookie, or it drops it.
    assert {"secure", "path", "httponly", "samesite"} <= attributes
    assert "domain" not in attributes
    assert "; Path=/;" in headers[0] + ";"


def test_http_keeps_the_plain_name(tmp_path: Path, fake: FakeMeta) -> None:
    app = build(tmp_path, fake, HTTP)
    try:
        answer = get(app, "/login")
        assert list(set_cookies(answer)) == ["sample_session"]
        assert app.session_interface.get_cookie_name(app) == "sample_session"
    finally:
        app.extensions["srcore"].db.dispose()


def test_the_testing_helper_names_the_cookie_the_service_reads(service: Any) -> None:
    alice = create_user(service, "alice")
    name, value = session_cookie(service, alice)
    assert get(service, "/private", f"{name}={value}").get_data(as_text=True) == "hello alice"


def test_a_tossed_session_does_not_log_the_victim_in_as_the_attacker(https_service: Any) -> None:
    app = https_service
    alice = create_user(app, "alice")
    mallory = create_user(app, "mallory")
    real = "{}={}".format(*session_cookie(app, alice))
    _, attackers = session_cookie(app, mallory)
    # A sibling host can set the plain name only (a browser refuses a __Host- cookie with
    # a Domain); with Path=/private the browser sends it first there.
    tossed = f"{app.config['SESSION_COOKIE_NAME']}={attackers}"
    assert get(app, "/private", f"{tossed}; {real}").get_data(as_text=True) == "hello alice"
    assert get(app, "/private", f"{real}; {tossed}").get_data(as_text=True) == "hello alice"
    # A victim with no session of their own is asked to log in, not made mallory.
    alone = get(app, "/private", tossed)
    assert alone.status_code == 302
    assert alone.headers["Location"].startswith(f"{META}/oauth/authorize?")


def test_a_tossed_cookie_on_the_callback_does_not_break_the_login(
    https_service: Any, fake: FakeMeta
) -> None:
    app = https_service
    started = get(app, "/login?next=/private")
    name = app.session_interface.get_cookie_name(app)
    real = f"{name}={set_cookies(started)[name].value}"
    params = {k: v[0] for k, v in parse_qs(urlsplit(started.headers["Location"]).query).items()}
    back = urlsplit(fake.app.test_client().get("/oauth/authorize", query_string=params).location)
    # Garbage (or an empty session) under the plain name, scoped to the callback's path,
    # so a browser sends it there before the service's own cookie.
    tossed = f"{app.config['SESSION_COOKIE_NAME']}=x"
    done = get(app, f"{back.path}?{back.query}", f"{tossed}; {real}")
    assert done.status_code == 302, done.get_data(as_text=True)
    assert done.headers["Location"] == "/private"
    session = f"{name}={set_cookies(done)[name].value}"
    assert get(app, "/private", f"{tossed}; {session}").get_data(as_text=True) == "hello alice"


def test_a_cookie_from_before_the_upgrade_is_expired_once(https_service: Any) -> None:
    app = https_service
    alice = create_user(app, "alice")
    _, value = session_cookie(app, alice)
    plain = app.config["SESSION_COOKIE_NAME"]
    # The session of the plain name is not read any more: the user logs in once again.
    answer = get(app, "/private", f"{plain}={value}")
    assert answer.status_code == 302
    expired = set_cookies(answer)[plain]
    assert expired.value == "" and expired["path"] == "/" and not expired["domain"]
    assert expired["max-age"] == "0"
    # A request without it leaves the plain name alone.
    assert plain not in set_cookies(get(app, "/login"))


def test_two_cookies_of_one_name_the_first_is_read(service: Any) -> None:
    """What makes tossing work at all: of two cookies of one name, the first counts.
    Over https only the service's own host can set its cookie's name, so both are its own."""
    app = service
    alice = create_user(app, "alice")
    bob = create_user(app, "bob")
    name, first = session_cookie(app, alice)
    _, second = session_cookie(app, bob)
    answer = get(app, "/private", f"{name}={first}; {name}={second}")
    assert answer.get_data(as_text=True) == "hello alice"


def test_meta_names_its_cookie_for_its_host_only(tmp_path: Path) -> None:
    """meta's session (login, CSRF token, pending passkey and two-factor steps) follows the
    same rule, and so does the one other cookie it sets, at a complete login: the signed
    known-device cookie, which a sibling host could otherwise shadow with one of its own."""
    import meta
    from flask import Response
    from meta.views import _known_device, _remember_device

    from srcore.testing import write_config

    for origin, expected in (
        ("https://meta.example.test", "__Host-meta_session"),
        ("http://meta.example.test", "meta_session"),
    ):
        config = write_config(
            tmp_path / f"{expected}.ini",
            service_id="meta",
            database_url=f"sqlite:///{tmp_path / (expected + '.db')}",
            origin=origin,
        )
        app = meta.create_app(config=config)
        try:
            assert app.session_interface.get_cookie_name(app) == expected
            answer = browser(app).get("/login", base_url=origin)
            assert answer.status_code == 200
            assert list(set_cookies(answer)) == [expected]
            device = expected.replace("_session", "_device")
            with app.test_request_context("/login", base_url=origin):
                response = Response()
                _remember_device(response, 7)
            (header,) = response.headers.getlist("Set-Cookie")
            cookie = set_cookies(response)[device]
            assert (cookie["path"], cookie["domain"], cookie["httponly"]) == ("/", "", True)
            assert bool(cookie["secure"]) == origin.startswith("https:"), header
            sent = {"Cookie": f"{device}={cookie.value}"}
            with app.test_request_context("/login", base_url=origin, headers=sent):
                assert _known_device(7) is not None
        finally:
            app.extensions["srcore"].db.dispose()
