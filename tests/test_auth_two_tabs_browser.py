"""Two tabs of one headless Chromium open todo's login at once (meta and todo under
gunicorn): the first login wins, and the second tab's callback, whose pending login the
first one cleared, is a clear 400 that says the browser is already logged in, not a
"login not started here" that sends the person round in circles.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import test_auth_e2e_more
from test_auth_e2e_more import Network, register

from srcore.testing import launch_chromium

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
]

PASSWORD = test_auth_e2e_more.PASSWORD
#: Milliseconds Playwright waits for an element or a navigation before failing.
STEP_MS = 15_000

network = test_auth_e2e_more.network


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def log_in_at_meta(page: Any, username: str) -> None:
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()


def test_the_second_tabs_login_says_the_browser_is_logged_in(
    network: Network, browser: Any
) -> None:
    net = network
    register(net, "tabby")  # in a browser of its own: this one is logged in nowhere
    context = browser.new_context()
    try:
        first, second = context.new_page(), context.new_page()
        for page, tab in ((first, "1"), (second, "2")):
            page.set_default_timeout(STEP_MS)
            page.goto(f"{net.todo}/create?tab={tab}")
            page.wait_for_url(lambda url: url.startswith(f"{net.meta}/login"))

        log_in_at_meta(first, "tabby")
        first.wait_for_url(f"{net.todo}/create?tab=1")
        assert first.get_by_role("heading", name="New tracker").is_visible()

        callbacks: list[int] = []
        second.on(
            "response",
            lambda r: callbacks.append(r.status) if "/oauth/callback" in r.url else None,
        )
        # The second tab still shows meta's login form; the person reloads it, and meta,
        # logged in by the first tab, sends the browser straight back: the second login.
        second.reload()
        second.wait_for_url(lambda url: url.startswith(f"{net.todo}/oauth/callback"))
        second.wait_for_load_state()
        assert callbacks == [400]
        assert second.get_by_text("already logged in here as tabby").is_visible()

        # Nothing broke: both tabs go on as tabby.
        for page in (first, second):
            page.goto(f"{net.todo}/create")
            assert page.get_by_role("heading", name="New tracker").is_visible()
    finally:
        context.close()
