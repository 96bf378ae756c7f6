"""A person with several tabs, over time: a page opened in one tab is sent after the session
changed in another (a logout, a login as someone else, the second step of a login done in
the other tab).

Such a form is never taken as whoever is logged in now; the person gets a page that says
what happened, never a bare "security token" error:

- "Log out" pressed in a tab opened before logs this browser out, whoever it holds now, and
  a login form opened before logs in with what was typed in it: neither depends on the
  session it was opened in. Only the service's own pages can send them so (their
  ``Origin``); another site's, or a token this service never signed, is refused as before.
- A form with text comes back with it, and with an empty field for each thing it does not
  repeat (a password), so it can be typed again and sent.
- A form with nothing to repeat (a button, a code) comes back as a page saying who is
  logged in now and linking to the page it came from: a button sent again in one click
  would act as them.

The first tests drive the sample service with Flask's client; the browser tests run meta,
todo and paste under gunicorn and headless Chromium.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from srcore.testing import run_network
from tests.test_sessions_cross_service_browser import chromium, context

__all__ = ["chromium", "context"]  # fixtures used by this module

PASSWORD = "correct horse battery staple"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
LONG = "\n".join(f"Line {n}: what I meant to say, at length." for n in range(30))


def own(app: Any) -> dict[str, str]:
    return {"Origin": str(app.extensions["srcore"].section["origin"])}


def earlier_token(app: Any) -> str:
    """A security token this service signed for another session of the browser (one it
    held before logging in again)."""
    token: str = app.test_client().get("/form").get_json()["csrf"]
    return token


def logged_in(client: Any) -> bool:
    return bool(client.get("/private").status_code == 200)


# -- the rules, with Flask's client ----------------------------------------------------------


def test_log_out_from_a_page_of_an_earlier_session_logs_this_browser_out(
    app: Any, user_client: Any
) -> None:
    answer = user_client.post("/logout", data={"csrf_token": earlier_token(app)}, headers=own(app))
    assert answer.status_code == 302, answer.get_data(as_text=True)[:500]
    assert not logged_in(user_client)


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://evil.invalid"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {},
    ],
)
def test_log_out_with_a_stale_token_from_elsewhere_is_refused(
    app: Any, user_client: Any, headers: dict[str, str]
) -> None:
    answer = user_client.post("/logout", data={"csrf_token": earlier_token(app)}, headers=headers)
    assert answer.status_code == 400
    assert logged_in(user_client)


@pytest.mark.parametrize("token", ["", "made-up", "forged.by.someone"])
def test_log_out_with_a_token_this_service_never_signed_is_refused(
    app: Any, user_client: Any, token: str
) -> None:
    from itsdangerous import URLSafeTimedSerializer

    if token == "forged.by.someone":
        token = URLSafeTimedSerializer("another key", salt="wtf-csrf-token").dumps("x" * 40)
    answer = user_client.post("/logout", data={"csrf_token": token}, headers=own(app))
    assert answer.status_code == 400
    assert logged_in(user_client)


def test_other_forms_of_an_earlier_session_are_not_taken(app: Any, user_client: Any) -> None:
    form = {"text": "hello", "csrf_token": earlier_token(app)}
    answer = user_client.post("/form", data=form, headers=own(app))
    assert answer.status_code == 400 and "Not sent" in answer.get_data(as_text=True)


def test_fields_not_repeated_come_back_empty_to_be_typed_again(app: Any, client: Any) -> None:
    form = {"email": "new@example.org", "current_password": "hunter2", "csrf_token": "stale"}
    page = client.post("/form", data=form, headers=own(app)).get_data(as_text=True)
    assert 'value="new@example.org"' in page and "hunter2" not in page
    retype = re.search(r'<input[^>]*name="current_password"[^>]*>', page)
    assert retype is not None, "nowhere to type the password again"
    assert 'type="password"' in retype.group(0) and "value=" not in retype.group(0)
    # Typed again and sent with the page's token, the form is taken.
    fresh = _TOKEN.search(page)
    assert fresh is not None
    again = {"email": "new@example.org", "current_password": "x", "csrf_token": fresh.group(1)}
    assert client.post("/form", data=again, headers=own(app)).get_json() == {"ok": True}


def test_the_earlier_pages_own_tokens_are_neither_repeated_nor_asked_for(
    app: Any, client: Any
) -> None:
    # A webhook form's sent-once token (form_token) is no field a person typed: shown as
    # one to fill in, or named as "not repeated here", it only puzzled them.
    form = {"url": "https://hooks.example.invalid/x", "form_token": "abc", "csrf_token": "x"}
    page = client.post("/form", data=form, headers=own(app)).get_data(as_text=True)
    main = page.split("<main", 1)[1]
    assert 'value="https://hooks.example.invalid/x"' in main
    assert "form_token" not in main and "Not repeated" not in main


@pytest.mark.parametrize(
    "form",
    [{}, {"code": "123456"}, {"form_once": "abc.def"}],
    ids=["button", "only-a-code", "only-a-one-time-token"],
)
def test_a_button_of_an_earlier_session_gets_a_page_saying_so_and_no_form(
    app: Any, user_client: Any, form: dict[str, str]
) -> None:
    referer = str(app.extensions["srcore"].section["origin"]) + "/things/7?tab=2"
    answer = user_client.post(
        "/form", data={**form, "csrf_token": "stale"}, headers={**own(app), "Referer": referer}
    )
    assert answer.status_code == 400
    assert answer.headers["Cache-Control"] == "no-store"
    page = answer.get_data(as_text=True)
    main = page.split("<main", 1)[1]
    assert "Not sent" in main and "missing its security token" not in main
    assert "You are logged in as <strong><bdi>alice</bdi></strong> now." in main
    # No form to send again in one click, as whoever is logged in now: a link to the page.
    assert "<form" not in main and "csrf_token" not in main
    assert 'href="/things/7?tab=2"' in main


def test_the_link_back_never_leads_to_another_site(app: Any, client: Any) -> None:
    for referer in ("http://evil.invalid/x", "//evil.invalid/x", "javascript:alert(1)"):
        headers = {**own(app), "Referer": referer}
        page = client.post("/form", data={"csrf_token": "x"}, headers=headers)
        main = page.get_data(as_text=True).split("<main", 1)[1]
        assert 'href="/">Open the page again' in main, referer


# -- in a browser, across meta, todo and paste -----------------------------------------------


@dataclass
class Network:
    meta: str
    todo: str
    paste: str
    config: Path


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    from meta.admin.cli import create_user

    tmp = tmp_path_factory.mktemp("browser-tabs")
    # No worker: nothing here waits for meta's events.
    keys = {"revocation-pull-interval": "1h"}
    with run_network(tmp, ("meta", "todo", "paste"), global_keys=keys) as net:
        for name in ("alice", "bob", "carol"):
            create_user(str(net.config), name, f"{name}@example.org", PASSWORD)
        yield Network(net.urls["meta"], net.urls["todo"], net.urls["paste"], net.config)


def meta_password_step(page: Any, net: Network, username: str, path: str = "/login") -> None:
    page.goto(net.meta + path)
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    with page.expect_navigation():
        page.get_by_role("button", name="Log in").click()


def log_in(page: Any, net: Network, service: str, username: str) -> None:
    """Log in at *service* (through meta's form when meta asks for a password)."""
    base = getattr(net, service)
    if service == "meta":
        meta_password_step(page, net, username)
        page.wait_for_url(f"{net.meta}/profile")
    else:
        page.goto(f"{base}/login?next=/")
        page.wait_for_url(lambda url: url.startswith((f"{net.meta}/login", f"{base}/")))
        if page.url.startswith(f"{net.meta}/login"):
            page.get_by_label("Username or email").fill(username)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
        page.wait_for_url(f"{base}/")
    assert who(page) == username


def who(page: Any) -> str | None:
    """Whom the page's header says is logged in."""
    names = page.locator(".user-name").all_inner_texts()
    return names[0].strip() if names else None


def log_out(page: Any, base: str) -> None:
    page.goto(f"{base}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Log out", exact=True).click()


def send(page: Any, button: str) -> Any:
    with page.expect_navigation() as navigation:
        page.locator("main").get_by_role("button", name=button).click()
    return navigation.value


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("service", ["meta", "todo", "paste"])
def test_log_out_pressed_in_a_tab_opened_before_logging_in_as_someone_else(
    network: Network, context: Any, service: str
) -> None:
    net, base = network, getattr(network, service)
    tab = context.new_page()
    log_in(tab, net, service, "alice")
    tab.goto(f"{base}/")
    other = context.new_page()
    log_out(other, base)
    if service != "meta":
        log_out(other, net.meta)
    log_in(other, net, service, "bob")

    # The person leaving the computer presses "Log out" on the page still showing alice.
    with tab.expect_navigation() as navigation:
        tab.get_by_role("button", name="Log out", exact=True).click()
    assert navigation.value.status < 400, tab.locator("main").inner_text()
    other.goto(f"{base}/")
    assert who(other) is None, f"{service} still has someone logged in"


@pytest.mark.browser
@pytest.mark.slow
def test_a_login_form_opened_before_another_login_logs_in_as_typed(
    network: Network, context: Any
) -> None:
    net = network
    tab = context.new_page()
    tab.goto(f"{net.meta}/login?next=/security")
    tab.get_by_label("Username or email").fill("alice")
    tab.get_by_label("Password").fill(PASSWORD)
    log_in(context.new_page(), net, "meta", "bob")

    with tab.expect_navigation():
        tab.get_by_role("button", name="Log in").click()
    tab.wait_for_url(f"{net.meta}/security")
    assert who(tab) == "alice"


@pytest.mark.browser
@pytest.mark.slow
def test_a_form_with_a_password_comes_back_with_a_field_to_type_it_again(
    network: Network, context: Any
) -> None:
    net = network
    tab = context.new_page()
    log_in(tab, net, "meta", "carol")
    tab.goto(f"{net.meta}/email")
    tab.get_by_label("New email address").fill("carol.new@example.org")
    tab.get_by_label("Your password").fill(PASSWORD)
    # Another tab logs out and in again: a new session, the same person.
    other = context.new_page()
    log_out(other, net.meta)
    log_in(other, net, "meta", "carol")

    assert send(tab, "Send the confirmation link").status == 400
    assert tab.get_by_role("heading", name="Not sent").is_visible()
    assert tab.locator("main input[name=email]").input_value() == "carol.new@example.org"
    retype = tab.locator("main input[name=current_password]")
    assert retype.get_attribute("type") == "password" and retype.input_value() == ""
    retype.fill(PASSWORD)
    send(tab, "Send again")
    tab.wait_for_url(f"{net.meta}/profile")
    assert "carol.new@example.org" in tab.locator("main").inner_text()


def _totp(secret: str, at: float) -> str:
    """RFC 6238 with its defaults (SHA-1, six digits, 30-second steps)."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    digest = hmac.new(key, struct.pack(">Q", int(at // 30)), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 1_000_000:06d}"


def _turn_on_two_factor(net: Network, username: str) -> str:
    import meta
    from meta import totp
    from meta.models import User
    from sqlalchemy import select

    app = meta.create_app(config=net.config)
    database = app.extensions["srcore"].db
    try:
        with app.app_context(), database.transaction() as session:
            uid = session.execute(select(User.id).where(User.username == username)).scalar_one()
            secret = totp.new_secret()
            totp.add_factor(session, uid, secret, 0)
    finally:
        database.dispose()
    return secret


@pytest.mark.browser
@pytest.mark.slow
def test_the_second_step_of_a_login_in_two_tabs(network: Network, context: Any) -> None:
    from meta.admin.cli import create_user

    net = network
    create_user(str(net.config), "dora", "dora@example.org", PASSWORD)
    secret = _turn_on_two_factor(net, "dora")
    first, second = context.new_page(), context.new_page()
    for tab in (first, second):
        meta_password_step(tab, net, "dora")
        tab.wait_for_url(f"{net.meta}/login/verify")
    first.get_by_label("Code").fill(_totp(secret, time.time()))
    send(first, "Log in")
    first.wait_for_url(f"{net.meta}/profile")

    # The other tab still asks for a code: typed there, it is not taken (its page was of
    # the session before the login), and the page says who is logged in, without a bare
    # "security token" error, and leads on to the account.
    second.get_by_label("Code").fill(_totp(secret, time.time() + 30))
    assert send(second, "Log in").status == 400
    main = second.locator("main").inner_text()
    assert "security token" not in main
    assert "You are logged in as dora now." in main
    assert second.locator("main form").count() == 0
    with second.expect_navigation():
        second.get_by_role("link", name="Open the page again").click()
    second.wait_for_url(f"{net.meta}/profile")
    assert "ran out" not in second.locator("main").inner_text()
