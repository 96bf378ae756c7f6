"""A service's "Log out" ends the person's network session the standard way.

The service ends its own session, then sends the browser to meta's end-session endpoint
(OIDC RP-Initiated Logout 1.0) with its ``client_id`` and a ``post_logout_redirect_uri``
of its own front page, which meta accepts for a configured service without the operator
registering anything. Without proof of who is logged in, meta asks: "You are logged out
of todo. You are still logged in as alice", with "Log out" and "Stay logged in", and
either way the browser ends back on the service, logged out there. A link or a form on
another site gets no further than that question, and no other return address is taken.

The first tests drive meta and todo with Flask's client; the browser tests run meta, its
webhook worker, todo and paste under gunicorn and headless Chromium.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from srcore.testing import (
    free_port,
    run_network,
    write_network_config,
)
from tests.test_sessions_cross_service_browser import chromium, context

__all__ = ["chromium", "context"]  # fixtures used by this module

PASSWORD = "correct horse battery staple"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


def token_of(page: str) -> str:
    found = _TOKEN.search(page)
    assert found is not None, "the page has no security token"
    return found.group(1)


# -- with Flask's client ---------------------------------------------------------------------


@dataclass
class Apps:
    meta: Any
    origins: dict[str, str]


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apps]:
    import meta
    from meta.admin.cli import create_user

    from srcore.app import migration_target
    from srcore.migrate import upgrade_all

    tmp = tmp_path_factory.mktemp("network-logout-apps")
    # Ports nobody listens on: meta runs in this process, the origins only name them.
    ports = {"meta": free_port(), "todo": free_port(), "paste": free_port()}
    config = write_network_config(tmp / "config.ini", ports)
    upgrade_all(migration_target("meta", config))
    create_user(str(config), "alice", "alice@example.org", PASSWORD)
    app = meta.create_app(config=config)
    try:
        origins = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        yield Apps(app, origins)
    finally:
        app.extensions["srcore"].db.dispose()


def at_meta(apps: Apps) -> Any:
    """A Flask client of meta with alice logged in through meta's own form."""
    client = apps.meta.test_client()
    origin = {"Origin": apps.origins["meta"]}
    form = client.get("/login").get_data(as_text=True)
    answer = client.post(
        "/login",
        data={"login": "alice", "password": PASSWORD, "csrf_token": token_of(form)},
        headers=origin,
    )
    assert answer.status_code == 302, answer.get_data(as_text=True)[:500]
    assert client.get("/profile").status_code == 200
    return client


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Any, Any]]:
    """A service (the sample one, at http://sample.test) whose meta is a fake of meta's
    answers, and a Flask client of it with alice logged in through meta."""
    from tests.fake_meta import FakeMeta, build_service

    fake = FakeMeta()
    fake.add_user(42, "alice")
    fake.logged_in = 42
    app = build_service(tmp_path, fake)
    client = app.test_client()
    start = urlsplit(client.get("/private").headers["Location"])
    answer = fake.app.test_client().get("/oauth/authorize?" + start.query)
    back = urlsplit(answer.headers["Location"])
    client.get(f"{back.path}?{back.query}")
    assert client.get("/private").status_code == 200
    try:
        yield app, client
    finally:
        app.extensions["srcore"].db.dispose()


def logout_query(apps: Apps, **changes: str) -> str:
    params = {"client_id": "todo", "post_logout_redirect_uri": apps.origins["todo"] + "/"}
    params.update(changes)
    return urlencode(params)


def test_a_services_log_out_goes_to_metas_end_session_endpoint(
    service: tuple[Any, Any],
) -> None:
    from tests.fake_meta import META

    app, client = service
    token = client.get("/form").get_json()["csrf"]
    answer = client.post(
        "/logout", data={"csrf_token": token}, headers={"Origin": "http://sample.test"}
    )
    assert answer.status_code == 302
    target = urlsplit(answer.headers["Location"])
    assert f"{target.scheme}://{target.netloc}{target.path}" == META + "/oauth/logout"
    assert parse_qs(target.query) == {
        "client_id": [app.extensions["srcore"].section["oauth-client-id"]],
        "post_logout_redirect_uri": ["http://sample.test/"],
    }
    # The service's own session is over already.
    assert client.get("/private").status_code == 302


def test_meta_asks_naming_the_service_and_the_account(apps: Apps) -> None:
    client = at_meta(apps)
    answer = client.get("/oauth/logout?" + logout_query(apps))
    assert answer.status_code == 200
    main = answer.get_data(as_text=True).split("<main", 1)[1]
    assert "You are logged out of <bdi>todo</bdi>" in main
    assert "still logged in" in main and "<strong>alice</strong>" in main
    assert 'value="logout"' in main and 'value="stay"' in main
    # Asking ends nothing.
    assert client.get("/profile").status_code == 200


@pytest.mark.parametrize("decision", ["logout", "stay"])
def test_either_answer_goes_back_to_the_service(apps: Apps, decision: str) -> None:
    client = at_meta(apps)
    page = client.get("/oauth/logout?" + logout_query(apps, state="s1")).get_data(as_text=True)
    answer = client.post(
        "/oauth/logout",
        data={
            "client_id": "todo",
            "post_logout_redirect_uri": apps.origins["todo"] + "/",
            "state": "s1",
            "decision": decision,
            "csrf_token": token_of(page),
        },
        headers={"Origin": apps.origins["meta"]},
    )
    assert answer.status_code == 302
    assert answer.headers["Location"] == apps.origins["todo"] + "/?state=s1"
    expected = 302 if decision == "logout" else 200
    assert client.get("/profile").status_code == expected


@pytest.mark.parametrize(
    "target",
    [
        "{meta}/",  # not todo's
        "{paste}/",  # another service's front page
        "{todo}/private",  # todo's, but not its front page
        "{todo}",  # the origin without its path
        "{todo}/?next=http://evil.invalid/",
        "http://evil.invalid/",
        "//evil.invalid/",
        "http://127.0.0.1.evil.invalid/",
    ],
)
def test_only_the_services_own_front_page_is_a_return_address(apps: Apps, target: str) -> None:
    client = at_meta(apps)
    # The front page itself is accepted...
    assert client.get("/oauth/logout?" + logout_query(apps)).status_code == 200
    # ...and nothing else, for todo or for a client that is not todo.
    uri = target.format(**apps.origins)
    for client_id in ("todo", "no-such-client"):
        answer = client.get(
            "/oauth/logout?" + logout_query(apps, client_id=client_id, post_logout_redirect_uri=uri)
        )
        assert answer.status_code == 400, (client_id, uri)
        assert "Location" not in answer.headers
    # A return address without a client names no registration to check it against.
    alone = client.get("/oauth/logout?" + urlencode({"post_logout_redirect_uri": uri}))
    assert alone.status_code == 400
    assert client.get("/profile").status_code == 200


@pytest.mark.parametrize(
    "headers",
    [{"Origin": "http://evil.invalid"}, {"Sec-Fetch-Site": "cross-site"}, {}],
)
def test_a_cross_site_post_logs_nobody_out(
    apps: Apps, service: tuple[Any, Any], headers: dict[str, str]
) -> None:
    # At a service: another site's form cannot press its "Log out".
    _, at_service = service
    refused = at_service.post("/logout", data={"csrf_token": "made-up"}, headers=headers)
    assert refused.status_code == 400
    assert at_service.get("/private").status_code == 200
    # At meta: another site's form posting the answer "Log out" is refused, and one
    # posting the request alone (as an application may) only brings the question.
    client = at_meta(apps)
    fields = {"client_id": "todo", "post_logout_redirect_uri": apps.origins["todo"] + "/"}
    forged = client.post("/oauth/logout", data={**fields, "decision": "logout"}, headers=headers)
    assert forged.status_code == 400
    assert client.get("/profile").status_code == 200
    posted = client.post("/oauth/logout", data=fields, headers=headers)
    assert posted.status_code == 303
    question = client.get(posted.headers["Location"])
    assert question.status_code == 200
    assert "You are logged out of <bdi>todo</bdi>" in question.get_data(as_text=True)
    assert client.get("/profile").status_code == 200


# -- in a browser ----------------------------------------------------------------------------


@dataclass
class Network:
    meta: str
    todo: str
    paste: str


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    from meta.admin.cli import create_user

    tmp = tmp_path_factory.mktemp("network-logout")
    # meta's worker pushes the logout to the services; their pull, every second, would
    # catch it too.
    keys = {"revocation-pull-interval": "1s"}
    with run_network(tmp, ("meta", "todo", "paste"), global_keys=keys, workers=["meta"]) as net:
        for name in ("alice", "bob"):
            create_user(str(net.config), name, f"{name}@example.org", PASSWORD)
        yield Network(net.urls["meta"], net.urls["todo"], net.urls["paste"])


def who(page: Any) -> str | None:
    """Whom the page's header says is logged in."""
    names = page.locator(".user-name").all_inner_texts()
    return names[0].strip() if names else None


def press_log_in(page: Any, base: str) -> None:
    """Press "Log in" on *base*'s front page; the browser ends at meta's password form or
    back at *base* (meta let it through without one)."""
    page.goto(f"{base}/")
    with page.expect_navigation():
        page.locator("header a.user-action").get_by_text("Log in", exact=True).click()
    page.wait_for_url(lambda url: not url.startswith(f"{base}/login"))


def type_password(page: Any, net: Network, username: str, base: str) -> None:
    assert page.url.startswith(f"{net.meta}/login"), page.url
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{base}/")
    assert who(page) == username


def press_log_out_on_todo(page: Any, net: Network) -> None:
    """Press todo's "Log out": the browser ends at meta's question."""
    page.goto(f"{net.todo}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Log out", exact=True).click()
    page.wait_for_url(lambda url: url.startswith(f"{net.meta}/oauth/logout"))


def logged_in_at(page: Any, url: str) -> str | None:
    page.goto(url)
    return who(page)


def wait_logged_out(page: Any, url: str) -> None:
    """Until *url*'s service has heard of the logout at meta (bounded)."""
    deadline = time.monotonic() + 30
    while logged_in_at(page, url) is not None:
        if time.monotonic() > deadline:
            pytest.fail(f"{url} never heard of the logout at meta")
        page.wait_for_timeout(200)


@pytest.mark.browser
@pytest.mark.slow
def test_log_out_on_todo_then_log_out_of_the_network(network: Network, context: Any) -> None:
    net = network
    page = context.new_page()
    press_log_in(page, net.todo)
    type_password(page, net, "alice", net.todo)
    press_log_in(page, net.paste)  # no password: meta let it through
    page.wait_for_url(f"{net.paste}/")
    assert who(page) == "alice"

    press_log_out_on_todo(page, net)
    main = page.locator("main")
    text = " ".join(main.inner_text().split())
    assert "You are logged out of todo" in text, text
    assert "still logged in" in text and "alice" in text, text
    with page.expect_navigation():
        main.get_by_role("button", name="Log out", exact=True).click()
    page.wait_for_url(lambda url: url.startswith(f"{net.todo}/"))
    assert page.url.startswith(f"{net.todo}/"), page.url
    assert who(page) is None
    assert page.locator("header a.user-action").get_by_text("Log in", exact=True).is_visible()

    # meta and paste are logged out too.
    assert logged_in_at(page, f"{net.meta}/profile") is None
    wait_logged_out(page, f"{net.paste}/")
    # The next person pressing "Log in" on todo is asked for a password.
    press_log_in(page, net.todo)
    assert page.url.startswith(f"{net.meta}/login"), page.url
    type_password(page, net, "bob", net.todo)


@pytest.mark.browser
@pytest.mark.slow
def test_log_out_on_todo_and_stay_logged_in_to_the_network(network: Network, context: Any) -> None:
    net = network
    page = context.new_page()
    press_log_in(page, net.todo)
    type_password(page, net, "alice", net.todo)

    press_log_out_on_todo(page, net)
    with page.expect_navigation():
        page.locator("main").get_by_role("button", name="Stay logged in").click()
    page.wait_for_url(lambda url: url.startswith(f"{net.todo}/"))
    assert who(page) is None, "todo still has alice logged in"
    # Still logged in at meta: "Log in" on todo lets alice in without a password.
    assert logged_in_at(page, f"{net.meta}/profile") == "alice"
    press_log_in(page, net.todo)
    page.wait_for_url(f"{net.todo}/")
    assert who(page) == "alice"
