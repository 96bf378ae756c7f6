"""`make demo` in a real browser: one login at meta, then todo and paste without another.

The demo runner (``scripts/demo.py``, what ``make demo`` calls) is started as the tests of
``test_demo`` start it, on free ports and in a temporary directory. Headless Chromium
registers at meta, confirms the address with the link of the mail the demo printed, and,
in a fresh browser session, logs in at meta with its password once. From then on todo and
paste are used through their "Log in" links: meta's first-party clients need no consent,
so no page may show a password field again. A screenshot of every step goes to
artifacts/demo-sso/ (git-ignored), numbered in order, for people to look at.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from test_demo import Demo, confirmation_link, running_demo

from srcore.testing import launch_chromium

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "demo-sso"
PASSWORD = "correct horse battery staple"
USERNAME = "rosalind"
#: Milliseconds Playwright waits for an element or a navigation before failing.
STEP_MS = 15_000
#: Reports every page that finished loading: its address and its password fields.
_REPORT_PAGES = """
document.addEventListener("DOMContentLoaded", () => {
  window.reportPage(location.href, document.querySelectorAll("input[type=password]").length);
});
"""


@dataclass
class Tab:
    """One browser tab that numbers its screenshots and records what it loaded."""

    page: Any
    step: int = 0
    #: (url, password fields) of every document that loaded, in order.
    loaded: list[tuple[str, int]] = field(default_factory=list)
    #: Every main-frame request of a navigation, redirects included.
    hops: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        page = self.page
        page.set_default_timeout(STEP_MS)
        page.set_default_navigation_timeout(STEP_MS)
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on(
            "request",
            lambda r: (
                self.hops.append(r.url)
                if r.is_navigation_request() and r.frame == page.main_frame
                else None
            ),
        )

    def report(self, source: Any, url: str, passwords: int) -> None:
        if source["frame"] == self.page.main_frame:
            self.loaded.append((url, passwords))

    def shoot(self, name: str) -> Path:
        self.step += 1
        path = ARTIFACTS / f"{self.step:02d}-{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def arrive(self, arrived: Callable[[str], bool]) -> str:
        """Wait until the tab shows a page *arrived* accepts, loaded."""
        self.page.wait_for_url(arrived, timeout=STEP_MS)
        self.page.wait_for_load_state()
        return str(self.page.url)

    def no_password_field(self) -> None:
        """The page shown now asks for no password."""
        count = self.page.locator("input[type=password]").count()
        assert count == 0, f"{self.page.url} shows {count} password field(s)"


def _under(origin: str, *excluded: str) -> Callable[[str], bool]:
    """Whether a URL is on *origin*, but not on one of the *excluded* paths (hops)."""

    def arrived(url: str) -> bool:
        return url.startswith(origin) and not url.startswith(
            tuple(origin + path for path in excluded)
        )

    return arrived


def _new_tab(context: Any, *, step: int = 0) -> Tab:
    """A tab of *context* whose screenshots are numbered from *step* + 1."""
    tab = Tab(context.new_page(), step=step)
    context.expose_binding("reportPage", tab.report)
    context.add_init_script(_REPORT_PAGES)
    return tab


def _register_and_confirm(browser: Any, demo: Demo) -> int:
    """Steps 1 and 2 of the demo's guide: an account, confirmed by the printed mail.

    Returns the number of screenshots taken.
    """
    meta = demo.urls["meta"]
    address = f"{USERNAME}@example.org"
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        tab = _new_tab(context)
        page = tab.page
        assert page.goto(f"{meta}/register").status == 200
        page.get_by_label("Username").fill(USERNAME)
        page.get_by_label("Email address").fill(address)
        page.get_by_label("Password").fill(PASSWORD)
        tab.shoot("meta-register")
        page.get_by_role("button", name="Register").click()
        tab.arrive(_under(f"{meta}/profile"))
        assert page.locator("#unconfirmed").is_visible(), "meta should ask to confirm"

        link = confirmation_link(demo.output, address)
        assert link.startswith(f"{meta}/confirm/"), link
        page.goto(link)
        tab.arrive(_under(f"{meta}/profile"))
        assert page.locator("#unconfirmed").count() == 0
        assert page.get_by_text("is confirmed").first.is_visible()
        tab.shoot("meta-confirmed")
        assert tab.errors == [], tab.errors
        return tab.step
    finally:
        context.close()


def test_one_login_at_meta_serves_todo_and_paste(tmp_path: Path) -> None:
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    ARTIFACTS.mkdir(parents=True)
    with launch_chromium() as browser, running_demo(tmp_path) as demo:
        meta, todo, paste = demo.urls["meta"], demo.urls["todo"], demo.urls["paste"]
        shots = _register_and_confirm(browser, demo)

        # A fresh browser session, as on another day: log in at meta, once, with the password.
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        try:
            tab = _new_tab(context, step=shots)
            page = tab.page
            assert page.goto(f"{meta}/login").status == 200
            assert page.locator("input[type=password]").count() == 1
            page.get_by_label("Username or email").fill(USERNAME)
            page.get_by_label("Password").fill(PASSWORD)
            tab.shoot("meta-login")
            page.get_by_role("button", name="Log in").click()
            tab.arrive(_under(f"{meta}/profile"))
            tab.no_password_field()
            assert page.get_by_text(USERNAME).first.is_visible()
            tab.shoot("meta-logged-in")
            logged_in_at = len(tab.loaded)

            # todo: its "Log in" goes through meta and comes back logged in, no form.
            assert page.goto(f"{todo}/").status == 200
            tab.no_password_field()
            assert page.locator("#log-in-prompt").is_visible()
            tab.shoot("todo-anonymous")
            hops_before = len(tab.hops)
            page.get_by_role("link", name="Log in").first.click()
            tab.arrive(_under(todo, "/login", "/oauth/"))
            hops = tab.hops[hops_before:]
            assert any(h.startswith(f"{meta}/oauth/authorize") for h in hops), hops
            assert page.url.rstrip("/") == todo, page.url
            tab.no_password_field()
            assert page.locator("#your-trackers").is_visible()
            assert page.get_by_text(USERNAME).first.is_visible()
            tab.shoot("todo-logged-in")

            page.get_by_role("link", name="New tracker").click()
            tab.arrive(lambda url: url == f"{todo}/create")
            tab.no_password_field()
            page.get_by_label("Name").fill("greenhouse")
            page.get_by_label("Description").fill("Seedlings, in **order**.")
            page.get_by_role("button", name="Create tracker").click()
            tab.arrive(_under(f"{todo}/~{USERNAME}/greenhouse"))
            tab.no_password_field()
            assert page.get_by_text("Tracker greenhouse created.").is_visible()
            assert page.get_by_role("heading", name="greenhouse").first.is_visible()
            tab.shoot("todo-tracker")

            page.get_by_role("link", name="New ticket").click()
            tab.arrive(lambda url: url == f"{todo}/~{USERNAME}/greenhouse/new")
            tab.no_password_field()
            page.get_by_label("Title").fill("Sow the tomatoes")
            page.get_by_label("Description").fill("Before the **last frost**.")
            page.get_by_role("button", name="Submit ticket").click()
            tab.arrive(lambda url: re.fullmatch(rf"{todo}/~{USERNAME}/greenhouse/1/?", url))
            tab.no_password_field()
            assert page.get_by_role("heading", name="Sow the tomatoes").is_visible()
            opened_by = page.locator(".page-header p").first
            assert re.search(rf"opened by\s+{USERNAME}\b", opened_by.inner_text()), (
                opened_by.inner_text()
            )
            assert page.locator("strong", has_text="last frost").first.is_visible()
            tab.shoot("todo-ticket")

            # paste: the same, without a password either.
            assert page.goto(f"{paste}/").status == 200
            tab.no_password_field()
            tab.shoot("paste-anonymous")
            hops_before = len(tab.hops)
            page.get_by_role("link", name="Log in").first.click()
            tab.arrive(_under(paste, "/login", "/oauth/"))
            hops = tab.hops[hops_before:]
            assert any(h.startswith(f"{meta}/oauth/authorize") for h in hops), hops
            tab.no_password_field()
            assert page.get_by_role("link", name="Your pastes").is_visible()
            assert page.get_by_text(USERNAME).first.is_visible()
            tab.shoot("paste-logged-in")

            page.get_by_role("link", name="New paste").first.click()
            tab.arrive(lambda url: url == f"{paste}/new")
            tab.no_password_field()
            page.get_by_label("Title").fill("Seed list")
            page.get_by_label("Text").fill("tomatoes\nbasil\nsweet peas")
            page.get_by_role("button", name="Create paste").click()
            tab.arrive(_under(f"{paste}/p/"))
            tab.no_password_field()
            assert page.get_by_text("Paste created.").is_visible()
            short_url = page.url
            tab.shoot("paste-created")

            # Open it again from the list of public pastes.
            assert page.goto(f"{paste}/").status == 200
            tab.no_password_field()
            listed = page.locator("#public-pastes li", has_text="Seed list")
            assert f"~{USERNAME}" in listed.inner_text()
            tab.shoot("paste-listed")
            listed.get_by_role("link", name="Seed list").click()
            tab.arrive(lambda url: url == short_url)
            tab.no_password_field()
            assert page.get_by_role("heading", name="Seed list").is_visible()
            assert page.get_by_text(f"~{USERNAME}").first.is_visible()
            assert "sweet peas" in page.locator("#paste").inner_text()
            tab.shoot("paste-opened")

            # Every document that loaded after the one login: none asked for a password,
            # none was meta's consent page; todo's and paste's pages were among them.
            after = tab.loaded[logged_in_at:]
            assert [u for u, n in after if n] == [], after
            assert not [u for u, _ in after if "/oauth/authorize" in u], after
            assert any(u.startswith(todo) for u, _ in after), after
            assert any(u.startswith(paste) for u, _ in after), after
            assert (f"{meta}/login", 1) in tab.loaded[:logged_in_at], tab.loaded
            assert tab.errors == [], tab.errors
        finally:
            context.close()
