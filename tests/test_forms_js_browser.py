"""static/forms.js in Chromium: a form is sent once, and is not locked for good.

The page, the script and the form's target are served by Playwright's router under a
``.invalid`` name: nothing leaves the browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore.testing.browser import launch_chromium

pytestmark = pytest.mark.browser

SITE = "http://forms.invalid"
SCRIPT = (Path(__file__).resolve().parents[1] / "static" / "forms.js").read_text("utf-8")
PAGE = f"""<!doctype html><html><body>
<form method="post" action="{SITE}/export"><button>Export</button></form>
<form method="post" action="{SITE}/elsewhere" target="other"><button>Open</button></form>
<script src="{SITE}/forms.js"></script></body></html>"""


@pytest.fixture
def page() -> Iterator[Any]:
    with launch_chromium() as browser:
        context = browser.new_context()
        yield context.new_page()
        context.close()


def _serve(page: Any, posts: list[str]) -> None:
    def answer(route: Any) -> None:
        request = route.request
        if request.method == "POST":
            posts.append(request.url)
            # A download-like answer: the browser stays on the page.
            route.fulfill(status=204)
        elif request.url.endswith("/forms.js"):
            route.fulfill(body=SCRIPT, content_type="text/javascript")
        else:
            route.fulfill(body=PAGE, content_type="text/html")

    page.route(f"{SITE}/**", answer)


def test_a_form_answered_in_place_can_be_sent_again_later(page: Any) -> None:
    posts: list[str] = []
    page.clock.install()
    _serve(page, posts)
    page.goto(f"{SITE}/")
    export = page.get_by_role("button", name="Export")
    export.click()
    page.wait_for_function("document.forms[0].dataset.sending === '1'")
    export.click()  # at once: the first sending may still be on its way
    page.wait_for_timeout(300)
    assert posts == [f"{SITE}/export"]
    page.clock.fast_forward(16_000)
    page.wait_for_function("!document.forms[0].dataset.sending")
    export.click()
    page.wait_for_timeout(300)
    assert posts == [f"{SITE}/export"] * 2


def test_a_form_sent_to_another_window_is_not_locked(page: Any) -> None:
    posts: list[str] = []
    _serve(page, posts)
    page.goto(f"{SITE}/")
    page.get_by_role("button", name="Open").click()
    assert page.evaluate("document.forms[1].dataset.sending") is None
