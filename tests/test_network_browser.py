"""The acceptance test of the network: a person in headless Chromium, meta and todo under gunicorn.

They register at meta, confirm their address through the mail an SMTP sink (aiosmtpd)
received, open todo and log in through meta, create a tracker, log out at meta, and todo
asks them to log in again. A screenshot of every step goes to artifacts/network/
(git-ignored), numbered in order, for people to look at.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import test_auth_e2e_more
from test_auth_e2e_more import Network

from srcore.testing import launch_chromium

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "network"
PASSWORD = "correct horse battery staple"
#: Milliseconds Playwright waits for an element or a navigation before failing.
STEP_MS = 15_000


#: meta (and its webhook worker) and todo under gunicorn, with an SMTP sink: the same
#: network as the end-to-end tests, started once for this module.
network = test_auth_e2e_more.network


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


class Story:
    """One browser tab that numbers its screenshots and remembers console errors."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.step = 0
        self.errors: list[str] = []
        page.set_default_timeout(STEP_MS)
        page.set_default_navigation_timeout(STEP_MS)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shoot(self, name: str) -> Path:
        self.step += 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{self.step:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def wait_until(self, arrived: Callable[[str], bool]) -> str:
        self.page.wait_for_url(arrived, timeout=STEP_MS)
        self.page.wait_for_load_state()
        return str(self.page.url)


def log_in_at_meta(story: Story, net: Network, username: str) -> None:
    """Fill meta's login form, where a service has sent the browser."""
    page = story.page
    assert page.url.startswith(f"{net.meta}/login"), page.url
    assert page.get_by_role("heading", name="Log in").is_visible()
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def back_at_todo(net: Network) -> Callable[[str], bool]:
    """Whether a URL is a todo page (not its login hop) or meta's login form."""

    def arrived(url: str) -> bool:
        if url.startswith(f"{net.meta}/login"):
            return True
        return url.startswith(net.todo) and not url.startswith(
            (f"{net.todo}/login", f"{net.todo}/oauth/")
        )

    return arrived


def test_register_confirm_log_in_create_tracker_log_out(network: Network, browser: Any) -> None:
    net = network
    username = "amelia"
    address = f"{username}@example.org"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        story = Story(context.new_page())
        page = story.page

        # 1. Register at meta.
        assert page.goto(f"{net.meta}/register").status == 200
        page.get_by_label("Username").fill(username)
        page.get_by_label("Email address").fill(address)
        page.get_by_label("Password").fill(PASSWORD)
        story.shoot("meta-register")
        page.get_by_role("button", name="Register").click()
        story.wait_until(lambda url: url.startswith(f"{net.meta}/profile"))
        assert page.locator("#unconfirmed").is_visible(), "meta should ask to confirm the address"
        story.shoot("meta-registered-unconfirmed")

        # 2. Confirm the address with the link from the mail the SMTP sink received.
        link = net.sink.wait_for_link(address, "/confirm/")
        assert link.startswith(f"{net.meta}/confirm/")
        page.goto(link)
        story.wait_until(lambda url: url.startswith(f"{net.meta}/profile"))
        assert page.locator("#unconfirmed").count() == 0
        story.shoot("meta-confirmed")

        # 3. Open todo, not logged in there yet, and click "Log in".
        assert page.goto(f"{net.todo}/").status == 200
        assert page.locator("#log-in-prompt").is_visible()
        story.shoot("todo-anonymous")
        page.get_by_role("link", name="Log in").first.click()
        story.wait_until(back_at_todo(net))
        if page.url.startswith(f"{net.meta}/login"):  # meta asks only without its session
            story.shoot("meta-login-form")
            log_in_at_meta(story, net, username)
            story.wait_until(back_at_todo(net))
        assert page.url.rstrip("/") == net.todo, page.url
        assert page.locator("#your-trackers").is_visible()
        assert page.get_by_text(username).first.is_visible()
        story.shoot("todo-logged-in")

        # 4. Create a tracker through todo's form and see its page.
        page.get_by_role("link", name="New tracker").click()
        story.wait_until(lambda url: url == f"{net.todo}/create")
        page.get_by_label("Name").fill("garden")
        page.get_by_label("Description").fill("What to plant, and **when**.")
        story.shoot("todo-new-tracker")
        page.get_by_role("button", name="Create tracker").click()
        story.wait_until(lambda url: url.startswith(f"{net.todo}/~{username}/garden"))
        assert page.get_by_role("heading", name="garden").first.is_visible()
        assert page.get_by_text("Tracker garden created.").is_visible()
        assert page.locator("strong", has_text="when").first.is_visible()  # markdown rendered
        story.shoot("todo-tracker")

        # 5. Log out at meta, with the "Log out" button of meta's pages.
        page.goto(f"{net.meta}/")
        story.wait_until(lambda url: url.startswith(f"{net.meta}/profile"))
        page.get_by_role("button", name="Log out").click()
        story.wait_until(lambda url: url.startswith(f"{net.meta}/login"))
        assert page.get_by_role("link", name="Log in").first.is_visible()
        story.shoot("meta-logged-out")

        # 6. todo's pages that need a login send the browser to meta's login form again
        # (meta's worker delivers the logout to todo at once; todo's pull would catch it
        # within 1 s).
        deadline = time.monotonic() + 5
        while True:
            page.goto(f"{net.todo}/create")
            url = story.wait_until(back_at_todo(net))
            if url.startswith(f"{net.meta}/login") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert url.startswith(f"{net.meta}/login?next="), f"todo did not ask to log in: {url}"
        assert page.get_by_role("heading", name="Log in").is_visible()
        story.shoot("todo-asks-to-log-in")

        # ... and logging in there brings the person back to the page they asked for.
        log_in_at_meta(story, net, username)
        story.wait_until(back_at_todo(net))
        assert page.url == f"{net.todo}/create", page.url
        assert page.get_by_role("heading", name="New tracker").is_visible()
        story.shoot("todo-logged-in-again")

        assert story.errors == [], story.errors
    finally:
        context.close()
