"""One browser across meta, todo and paste on the same host (127.0.0.1, three ports), in
headless Chromium, probed the way an attacker would.

Browsers keep cookies by host, not by port, so every service of the host receives every
service's session cookie: each service has a cookie of its own name, and neither that
cookie nor the CSRF tokens of its session count at another service. A page on another
site may send the browser to any service's ``/login?next=...`` (a top-level GET, which
``SameSite=Lax`` lets through with its cookies); the pending logins those visits leave in
the cookies must not add up to a ``Cookie`` header past the services' header limit, which
would have every service of the host answer 431 until the cookies went away.
"""

from __future__ import annotations

import re
import secrets
import string
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from srcore.testing import launch_chromium, run_network

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
#: Milliseconds Playwright waits for a navigation or an element.
STEP_MS = 15_000
_CSRF = re.compile(r'name="csrf_token"[^>]*value="([^"]+)"')


@dataclass
class Network:
    meta: str
    todo: str
    paste: str
    #: The network's config file: a test may open a service's database through it.
    config: Path


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    from meta.admin.cli import create_user

    tmp = tmp_path_factory.mktemp("sessions-cross-service")
    # No worker runs: nothing here needs meta's events, and the pull is slow enough
    # never to matter.
    keys = {"revocation-pull-interval": "1h"}
    with run_network(tmp, ("meta", "todo", "paste"), global_keys=keys) as net:
        for username in ("alice", "bob"):
            create_user(str(net.config), username, f"{username}@example.org", PASSWORD)
        yield Network(net.urls["meta"], net.urls["todo"], net.urls["paste"], net.config)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    """A fresh browser profile: no cookies."""
    made = chromium.new_context()
    try:
        yield made
    finally:
        made.close()


def open_page(net: Network, page: Any, url: str, username: str) -> Any:
    """Go to *url*, logging in at meta's form as *username* if the service sends us there."""
    answer = page.goto(url, timeout=STEP_MS)
    if page.url.startswith(f"{net.meta}/login"):
        page.fill("input[name=login]", username)
        page.fill("input[name=password]", PASSWORD)
        with page.expect_navigation(timeout=STEP_MS):
            page.click("button[type=submit]")
        answer = page.goto(url, timeout=STEP_MS)
    assert answer.status == 200 and page.url == url, (answer.status, page.url)
    return answer


def csrf_token(page: Any) -> str:
    found = _CSRF.search(page.content())
    assert found, f"no CSRF token on {page.url}"
    return found.group(1)


def random_path(length: int) -> str:
    alphabet = string.ascii_letters + string.digits
    return "/" + "".join(secrets.choice(alphabet) for _ in range(length - 1))


def test_a_strangers_login_visits_do_not_lock_the_host_out(network: Network, context: Any) -> None:
    net = network
    page = context.new_page()
    # What a page on another site can make the browser do: visit each service's login
    # with a long return path, a few times. Each visit ends on meta's login form.
    for base in (net.todo, net.paste):
        for length in (1800, 1860, 1500, 2000):
            url = f"{base}/login?next=" + quote(random_path(length))
            answer = page.goto(url, timeout=STEP_MS)
            assert answer.status == 200, (answer.status, page.url)
            assert page.url.startswith(f"{net.meta}/login"), page.url
    sizes = {cookie["name"]: len(cookie["value"]) for cookie in context.cookies()}
    assert sizes.keys() == {"meta_session", "todo_session", "paste_session"}
    assert sum(sizes.values()) < 8190 // 2, sizes
    for base in (net.meta, net.todo, net.paste):
        assert page.goto(f"{base}/", timeout=STEP_MS).status == 200, base
    # The person's own logins still start, finish and return where they were asked to.
    open_page(net, page, f"{net.todo}/create", "alice")
    open_page(net, page, f"{net.paste}/new", "alice")


def test_no_services_cookie_or_csrf_token_counts_at_another(network: Network, context: Any) -> None:
    net = network
    page = context.new_page()
    open_page(net, page, f"{net.todo}/create", "alice")
    todo_token = csrf_token(page)
    open_page(net, page, f"{net.paste}/new", "alice")
    paste_token = csrf_token(page)
    open_page(net, page, f"{net.meta}/profile", "alice")
    meta_token = csrf_token(page)
    cookies = {cookie["name"]: cookie for cookie in context.cookies()}
    # meta_device: the browser is known to alice's account (its own login counter at meta).
    assert cookies.keys() == {"meta_session", "meta_device", "todo_session", "paste_session"}
    for cookie in cookies.values():
        assert (cookie["domain"], cookie["path"], cookie["httpOnly"], cookie["sameSite"]) == (
            "127.0.0.1",
            "/",
            True,
            "Lax",
        )
    # Another service's token, from the same browser and user, is refused (and changes
    # nothing: todo's tracker is not made, nobody is logged out).
    posts = (
        (f"{net.todo}/create", {"name": "crossed", "csrf_token": paste_token}),
        (f"{net.todo}/create", {"name": "crossed", "csrf_token": meta_token}),
        (f"{net.paste}/logout", {"csrf_token": todo_token}),
        (f"{net.meta}/logout", {"csrf_token": todo_token}),
    )
    for url, form in posts:
        assert page.request.post(url, form=form, max_redirects=0).status == 400, url
    assert page.goto(f"{net.todo}/~alice/crossed", timeout=STEP_MS).status == 404
    open_page(net, page, f"{net.paste}/new", "alice")
    # One service's cookie under another's name is no session there: each service asks
    # for a login (meta with its form) instead of taking it.
    stranger = context.browser.new_context()
    try:
        other = stranger.new_page()
        copied = cookies["todo_session"]["value"]
        stranger.add_cookies(
            [
                {"name": "paste_session", "value": copied, "url": net.paste},
                {"name": "meta_session", "value": copied, "url": net.meta},
            ]
        )
        other.goto(f"{net.paste}/new", timeout=STEP_MS)
        assert other.url.startswith(f"{net.meta}/login"), other.url
        other.goto(f"{net.meta}/profile", timeout=STEP_MS)
        assert other.url.startswith(f"{net.meta}/login"), other.url
    finally:
        stranger.close()


def test_logging_out_of_one_service_leaves_the_others(network: Network, context: Any) -> None:
    net = network
    page = context.new_page()
    open_page(net, page, f"{net.todo}/create", "alice")
    token = csrf_token(page)
    open_page(net, page, f"{net.paste}/new", "alice")
    answer = page.request.post(f"{net.todo}/logout", form={"csrf_token": token}, max_redirects=0)
    assert answer.status == 302
    # On to meta's end-session endpoint, which asks before it ends anything more.
    assert answer.headers["location"].startswith(f"{net.meta}/oauth/logout?")
    names = {cookie["name"] for cookie in context.cookies()}
    assert names == {"meta_session", "meta_device", "paste_session"}
    assert page.goto(f"{net.paste}/new", timeout=STEP_MS).url == f"{net.paste}/new"
    # todo's token died with its session, even once the browser is logged in there again.
    open_page(net, page, f"{net.todo}/create", "alice")
    form = {"name": "late", "csrf_token": token}
    assert page.request.post(f"{net.todo}/create", form=form, max_redirects=0).status == 400
