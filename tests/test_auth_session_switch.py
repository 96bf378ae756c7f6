"""A login over a browser's earlier session ends that session, wherever its cookie was
copied; a callback that finds the browser already logged in says so; an account meta
suspended stops counting as logged in once the service hears of it.

meta is the fake of fake_meta.py; the browser is Flask's test client, its cookie copied
into clients of their own (another browser, whoever took the copy).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fake_meta import META, FakeMeta, build_service
from sqlalchemy import select

from srcore.auth.ended import EndedSession
from srcore.auth.state import auth_state
from srcore.db import UserType


@pytest.fixture
def fake() -> FakeMeta:
    meta = FakeMeta()
    meta.add_user(42, "alice")
    meta.add_user(43, "bob")
    meta.logged_in = 42
    return meta


@pytest.fixture
def service(tmp_path: Path, fake: FakeMeta) -> Iterator[Any]:
    app = build_service(tmp_path, fake)

    # A page that starts a login whoever is logged in: "log in as someone else".
    def switch() -> Any:
        return auth_state().login.begin_login("/private")

    app.add_url_rule("/switch", endpoint="switch", view_func=switch)
    yield app
    app.extensions["srcore"].db.dispose()


def through_meta(fake: FakeMeta, client: Any, path: str) -> Any:
    """Follow *path* to meta and meta's answer back to the service's callback."""
    started = client.get(path)
    assert started.status_code == 302
    assert started.headers["Location"].startswith(f"{META}/oauth/authorize?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(started.headers["Location"]).query).items()}
    answer = fake.app.test_client().get("/oauth/authorize", query_string=params)
    url = urlsplit(answer.headers["Location"])
    return client.get(f"{url.path}?{url.query}")


def cookie_of(app: Any, client: Any) -> str:
    cookie = client.get_cookie(app.session_interface.get_cookie_name(app))
    assert cookie is not None
    return str(cookie.value)


def reader(app: Any, value: str) -> Any:
    other = app.test_client()
    other.set_cookie(app.session_interface.get_cookie_name(app), value)
    return other


def reads(client: Any) -> str | None:
    """Whose private page *client* reads, or None when it is not logged in."""
    answer = client.get("/private")
    if answer.status_code != 200:
        return None
    return str(answer.get_data(as_text=True)).removeprefix("hello ")


def ended_count(app: Any) -> int:
    with app.extensions["srcore"].db.transaction() as db_session:
        return len(list(db_session.scalars(select(EndedSession))))


def set_user_type(app: Any, user_id: int, user_type: UserType) -> None:
    """What meta's profile push of a suspended (or reinstated) account writes."""
    st = app.extensions["srcore"]
    with st.db.transaction() as db_session:
        db_session.get(st.user_model, user_id).user_type = user_type


def test_logging_in_as_someone_else_ends_the_previous_session(service: Any, fake: FakeMeta) -> None:
    browser = service.test_client()
    assert through_meta(fake, browser, "/private").status_code == 302
    assert reads(browser) == "alice"
    alices = cookie_of(service, browser)

    fake.logged_in = 43
    assert through_meta(fake, browser, "/switch").headers["Location"] == "/private"
    assert reads(browser) == "bob"
    assert reads(reader(service, alices)) is None
    assert ended_count(service) == 1


def test_logging_in_again_as_the_same_person_renews_the_session(
    service: Any, fake: FakeMeta
) -> None:
    browser = service.test_client()
    through_meta(fake, browser, "/private")
    first = cookie_of(service, browser)
    with browser.session_transaction() as session:
        first_id = session["_sid"]

    through_meta(fake, browser, "/switch")
    with browser.session_transaction() as session:
        assert session["_sid"] != first_id
    assert reads(browser) == "alice"
    assert reads(reader(service, first)) is None


def test_a_second_tabs_callback_says_the_browser_is_logged_in(service: Any, fake: FakeMeta) -> None:
    browser = service.test_client()
    tabs = []
    for tab in ("1", "2"):
        started = browser.get(f"/private?tab={tab}")
        params = parse_qs(urlsplit(started.headers["Location"]).query)
        answer = fake.app.test_client().get(
            "/oauth/authorize", query_string={k: v[0] for k, v in params.items()}
        )
        url = urlsplit(answer.headers["Location"])
        tabs.append(f"{url.path}?{url.query}")
    assert browser.get(tabs[0]).headers["Location"] == "/private?tab=1"

    late = browser.get(tabs[1])
    assert late.status_code == 400
    text = late.get_data(as_text=True)
    assert "already logged in here as alice" in text
    assert reads(browser) == "alice"  # the late tab changed nothing


def test_a_suspended_account_stops_counting_and_its_next_login_ends_the_old_session(
    service: Any, fake: FakeMeta
) -> None:
    browser = service.test_client()
    through_meta(fake, browser, "/private")
    assert 'class="user-name"' in browser.get("/").get_data(as_text=True)
    before = cookie_of(service, browser)

    set_user_type(service, 42, UserType.suspended)
    front = browser.get("/").get_data(as_text=True)
    assert 'class="user-name"' not in front and "alice" not in front
    refused = browser.get("/private")
    assert refused.status_code == 403 and "suspended" in refused.get_data(as_text=True)

    # meta reinstates alice; her login brings the row back, and the session from before
    # the suspension, wherever its cookie went, stays out.
    assert through_meta(fake, browser, "/login?next=/private").status_code == 302
    assert reads(browser) == "alice"
    assert reads(reader(service, before)) is None

    set_user_type(service, 42, UserType.deleted)
    assert 'class="user-name"' not in browser.get("/").get_data(as_text=True)
    refused = browser.get("/private")
    assert refused.status_code == 403 and "deleted" in refused.get_data(as_text=True)
