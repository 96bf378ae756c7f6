"""What a page on another site can put in a service's session cookie by sending the
browser to the service's login, and so into the ``Cookie`` header that every service of
the same host receives (browsers do not tell ports apart).

Each visit to ``/login?next=...`` (or to a page that needs a login) starts a pending login
kept in the session cookie until meta sends the browser back. A stranger's page can send
a browser there as often as it likes, with any ``next`` up to 2048 characters; the
pending logins must stay small whatever it does, and the user's own login must still
work afterwards. The browser in headless Chromium, with meta, todo and paste on one
host, is in test_sessions_cross_service_browser.py.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from fake_meta import META, FakeMeta, build_service

#: A session cookie no larger than this leaves room for the cookies of a few more
#: services of the same host within one 8190-byte header (and is far below the 4096
#: bytes a browser keeps of one cookie).
COOKIE_BUDGET = 2048


@pytest.fixture
def fake() -> FakeMeta:
    meta = FakeMeta()
    meta.add_user(42, "alice")
    meta.logged_in = 42
    return meta


@pytest.fixture
def service(tmp_path: Path, fake: FakeMeta) -> Iterator[Any]:
    app = build_service(tmp_path, fake)
    yield app
    app.extensions["srcore"].db.dispose()


def long_path(length: int) -> str:
    """A local path of *length* characters that compresses no better than a real one."""
    alphabet = string.ascii_letters + string.digits
    return "/" + "".join(secrets.choice(alphabet) for _ in range(length - 1))


def cookie_size(app: Any, client: Any) -> int:
    cookie = client.get_cookie(app.config["SESSION_COOKIE_NAME"])
    return 0 if cookie is None else len(cookie.value)


def follow_through_meta(fake: FakeMeta, client: Any, login: Any) -> Any:
    """Where meta sends the browser back, followed: the callback's answer."""
    assert login.status_code == 302
    location = login.headers["Location"]
    assert location.startswith(f"{META}/oauth/authorize?")
    params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
    answer = fake.app.test_client().get("/oauth/authorize", query_string=params)
    back = urlsplit(answer.headers["Location"])
    return client.get(f"{back.path}?{back.query}")


def test_a_strangers_login_visits_keep_the_cookie_small(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    for length in (2048, 2000, 1500, 1100, 1024, 900, 2048, 700, 2048, 1024):
        assert client.get("/login?next=" + quote(long_path(length))).status_code == 302
        assert cookie_size(service, client) <= COOKIE_BUDGET
    # The user's own login, started last, still finishes where it was asked to go.
    done = follow_through_meta(fake, client, client.get("/private?page=2"))
    assert done.status_code == 302
    assert done.headers["Location"] == "/private?page=2"
    assert client.get("/private").get_data(as_text=True) == "hello alice"


def test_a_long_return_path_keeps_its_page(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    target = "/private?q=" + long_path(1500)[1:]
    done = follow_through_meta(fake, client, client.get("/login?next=" + quote(target)))
    assert done.headers["Location"] == "/private"
    assert cookie_size(service, client) <= COOKIE_BUDGET


def test_logins_started_in_other_tabs_still_finish(service: Any, fake: FakeMeta) -> None:
    client = service.test_client()
    first = client.get("/login?next=/private?tab=1")
    client.get("/login?next=/private?tab=2")
    done = follow_through_meta(fake, client, first)
    assert done.headers["Location"] == "/private?tab=1"


def test_a_strangers_callback_leaves_no_cookie(service: Any) -> None:
    client = service.test_client()
    answer = client.get("/oauth/callback?code=theirs&state=theirs")
    assert answer.status_code == 400
    assert "Set-Cookie" not in answer.headers
    assert cookie_size(service, client) == 0
