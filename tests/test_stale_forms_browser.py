"""What a person in headless Chromium does to todo's forms over time, meta and todo under
gunicorn: they write a long ticket or comment and, before sending it, their session ends or
changes in another tab; they press Enter twice; they log out on a shared computer and the
next person presses Back.

Nothing they wrote is lost: a form that can no longer be taken comes back with their text
and says why, never a bare 400. A form is sent once however often it is pressed. A page made
for a logged-in user is not kept by the browser, so Back after a logout does not show it.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import test_auth_e2e_more
from test_auth_e2e_more import Network

from srcore.testing.browser import CHROMIUM_ARGS, chromium_path

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
#: Milliseconds Playwright waits for an element or a navigation before failing.
STEP_MS = 15_000
#: What a person writes at length: a paragraph per line, 40 lines.
LONG_TEXT = "\n".join(f"Line {n}: the steps that make it crash, in detail." for n in range(40))

#: meta (and its webhook worker, which pushes logouts) and todo under gunicorn.
network = test_auth_e2e_more.network


@pytest.fixture(scope="module")
def people(network: Network) -> dict[str, str]:
    from meta.admin.cli import create_user

    names = {"alice": "stale-alice", "bob": "stale-bob"}
    for name in names.values():
        create_user(str(network.config), name, f"{name}@example.org", PASSWORD)
    return names


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Chromium with its back/forward cache on, as a person's browser has it (Playwright
    turns it off by default): Back shows a page kept whole in memory when it may."""
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    assert path is not None, "Chromium (/usr/bin/chromium) is needed"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=path,
            args=list(CHROMIUM_ARGS),
            ignore_default_args=["--disable-back-forward-cache"],
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(chromium: Any) -> Iterator[Any]:
    made = chromium.new_context()
    made.set_default_timeout(STEP_MS)
    made.set_default_navigation_timeout(STEP_MS)
    try:
        yield made
    finally:
        made.close()


def log_in(page: Any, net: Network, username: str) -> None:
    """Log in at todo, through meta's form if meta asks for a password."""
    page.goto(f"{net.todo}/login?next=/")
    page.wait_for_url(lambda url: url.startswith((f"{net.meta}/login", f"{net.todo}/")))
    if page.url.startswith(f"{net.meta}/login"):
        page.get_by_label("Username or email").fill(username)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{net.todo}/")
    assert page.locator(".user-name").inner_text().strip() == username


def log_out_of_todo(page: Any, net: Network) -> None:
    page.goto(f"{net.todo}/")
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()


def log_out_everywhere(page: Any, net: Network) -> None:
    """Log out at meta, which ends the person's sessions at every service."""
    page.goto(f"{net.meta}/")
    page.wait_for_url(f"{net.meta}/profile")
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()


def make_tracker(page: Any, net: Network, owner: str, name: str, *, private: bool = False) -> str:
    page.goto(f"{net.todo}/create")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Description").fill(f"The {name} tracker, for {owner}'s eyes.")
    if private:
        page.locator("select[name=visibility]").select_option("private")
    with page.expect_navigation():
        page.locator("main button[type=submit]").click()
    assert page.url == f"{net.todo}/~{owner}/{name}", page.url
    return page.url


def start_ticket(page: Any, tracker: str, title: str) -> None:
    """Open the new-ticket form and write a long ticket, not sending it yet."""
    page.goto(f"{tracker}/new")
    page.get_by_label("Title").fill(title)
    page.get_by_label("Description").fill(LONG_TEXT)


def send(page: Any) -> Any:
    with page.expect_navigation() as navigation:
        page.locator("main button[type=submit]").click()
    return navigation.value


def back(page: Any, url: str) -> str:
    """Press Back and wait until the tab shows *url* again; the text it shows then.

    A page the browser restores from its back/forward cache comes back without the
    navigation Playwright's go_back waits for, so the tab is watched instead."""
    page.evaluate("() => { setTimeout(() => history.back(), 0); }")
    page.wait_for_function("url => location.href === url", arg=url, timeout=STEP_MS)
    text: str = page.locator("body").inner_text(timeout=STEP_MS)
    return text


def wait_for(page: Any, done: Any) -> None:
    """Wait until *done()*, letting Playwright deliver the page's events meanwhile."""
    for _ in range(STEP_MS // 50):
        if done():
            return
        page.wait_for_timeout(50)
    pytest.fail("waited in vain")


def tickets(net: Network, title: str) -> list[str]:
    """The descriptions of the tickets called *title*, read from todo's database (with the
    line breaks a browser sends, CRLF, as the person typed them)."""
    with sqlite3.connect(net.todo_db) as db:
        rows = db.execute("SELECT description FROM ticket WHERE title = ?", (title,))
        return [(row[0] or "").replace("\r\n", "\n") for row in rows]


def written_back(page: Any) -> dict[str, str]:
    """The fields of the form a page shows again, by name."""
    form = page.locator("main form")
    return {
        str(field.get_attribute("name")): field.input_value()
        for field in form.locator("input:not([type=hidden]), textarea").all()
    }


def test_a_ticket_sent_after_logging_out_in_another_tab_comes_back_whole(
    network: Network, people: dict[str, str], context: Any
) -> None:
    net, alice = network, people["alice"]
    page = context.new_page()
    log_in(page, net, alice)
    tracker = make_tracker(page, net, alice, "tabs")
    start_ticket(page, tracker, "Lost in a tab")
    other = context.new_page()
    log_out_of_todo(other, net)

    answer = send(page)
    assert answer.status == 400
    assert page.get_by_role("heading", name="Not sent").is_visible()
    assert page.get_by_text("You are not logged in.").is_visible()
    assert written_back(page) == {"title": "Lost in a tab", "description": LONG_TEXT}
    assert answer.headers["cache-control"] == "no-store"
    assert tickets(net, "Lost in a tab") == []

    # Logged in again in the other tab, the person sends it from this one: it comes back
    # once more, saying who they are now, and then it is taken, once, whole.
    log_in(other, net, alice)
    assert send(page).status == 400
    assert page.get_by_text(f"You are logged in as {alice}").is_visible()
    assert written_back(page)["description"] == LONG_TEXT
    send(page)
    assert page.url.startswith(f"{tracker}/"), page.url
    assert tickets(net, "Lost in a tab") == [LONG_TEXT]


def test_someone_else_logged_in_in_another_tab_is_named_before_anything_is_sent(
    network: Network, people: dict[str, str], context: Any
) -> None:
    net, alice, bob = network, people["alice"], people["bob"]
    page = context.new_page()
    log_in(page, net, alice)
    tracker = make_tracker(page, net, alice, "shared")
    start_ticket(page, tracker, "Whose is it")
    other = context.new_page()
    log_out_of_todo(other, net)
    log_out_everywhere(other, net)
    log_in(other, net, bob)

    assert send(page).status == 400
    assert page.get_by_text(f"You are logged in as {bob}").is_visible()
    assert written_back(page) == {"title": "Whose is it", "description": LONG_TEXT}
    assert tickets(net, "Whose is it") == []


def test_a_ticket_sent_after_meta_logged_the_person_out_comes_back_whole(
    network: Network, people: dict[str, str], context: Any
) -> None:
    net, alice = network, people["alice"]
    page = context.new_page()
    log_in(page, net, alice)
    tracker = make_tracker(page, net, alice, "everywhere")
    start_ticket(page, tracker, "Logged out at meta")
    cookie = next(c for c in context.cookies() if c["name"] == "todo_session")
    other = context.new_page()
    log_out_everywhere(other, net)
    # Until todo has heard of the logout (pushed by meta's worker, pulled every second):
    # asked with a copy of the cookie, so that the tab's own session is left as it is.
    copy = requests.Session()
    copy.cookies.set(cookie["name"], cookie["value"])
    for _ in range(100):
        if copy.get(f"{net.todo}/create", allow_redirects=False, timeout=10).status_code == 302:
            break
        time.sleep(0.1)
    else:
        pytest.fail("todo never heard of the logout at meta")

    answer = send(page)
    assert answer.status == 401
    assert page.get_by_role("heading", name="Not sent: you are logged out").is_visible()
    assert written_back(page) == {"title": "Logged out at meta", "description": LONG_TEXT}
    assert tickets(net, "Logged out at meta") == []


def test_enter_pressed_twice_sends_one_ticket(
    network: Network, people: dict[str, str], context: Any
) -> None:
    net, alice = network, people["alice"]
    page = context.new_page()
    log_in(page, net, alice)
    tracker = make_tracker(page, net, alice, "twice")
    page.goto(f"{tracker}/new")
    page.get_by_label("Title").fill("Only once")
    # The first sending is held on its way, as by a slow network or server, while the
    # person presses Enter again; then it goes on.
    held: list[Any] = []
    page.route(f"{tracker}/new", lambda route: held.append(route))
    page.keyboard.press("Enter")
    wait_for(page, lambda: len(held) == 1)
    page.keyboard.press("Enter")
    # A second sending shows up at once (within milliseconds); none is given 2 s.
    for _ in range(20):
        page.wait_for_timeout(100)
    assert len(held) == 1, "the form was sent twice"
    held[0].continue_()
    page.wait_for_url(lambda url: url.startswith(f"{tracker}/") and not url.endswith("/new"))
    assert len(tickets(net, "Only once")) == 1


def test_back_after_logging_out_does_not_show_the_private_page(
    network: Network, people: dict[str, str], context: Any
) -> None:
    net, alice = network, people["alice"]
    page = context.new_page()
    log_in(page, net, alice)
    tracker = make_tracker(page, net, alice, "diary", private=True)
    secret = "The diary tracker, for"
    page.goto(tracker)
    assert page.get_by_text(secret).is_visible()
    with page.expect_navigation():
        page.get_by_role("button", name="Log out").click()
    assert not page.url.startswith(net.todo), page.url

    shown = back(page, tracker)
    assert secret not in shown, "Back showed the private page the browser had kept"
    assert alice not in shown


def test_text_typed_in_a_form_survives_back_after_following_a_link(
    network: Network, people: dict[str, str], context: Any
) -> None:
    # Pages of a logged-in user are no-store: the browser loads them again on Back, and
    # still puts back what was typed in their forms.
    net, alice = network, people["alice"]
    page = context.new_page()
    log_in(page, net, alice)
    tracker = make_tracker(page, net, alice, "wander")
    start_ticket(page, tracker, "Half written")
    with page.expect_navigation():
        page.get_by_role("link", name=re.compile("^Cancel$")).click()
    back(page, f"{tracker}/new")
    assert page.get_by_label("Title").input_value() == "Half written"
    assert page.get_by_label("Description").input_value() == LONG_TEXT
