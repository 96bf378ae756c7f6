"""A highlighted paste in a real browser: headless Chromium against gunicorn on 127.0.0.1.

Screenshots of a code paste and of a markdown paste (highlighted fence, heading anchors,
task list), in light and dark mode, at desktop and phone width, go to
artifacts/screenshots/ (git-ignored) for people to look at; the assertions check what a
person would check on them: colours that change with the scheme and differ from the text,
no CSP violation (no inline style), numbers that are not copied, long lines not cut off.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from paste_site import served_site

from srcore.db import UserType
from srcore.testing import (
    create_user,
    launch_chromium,
    run_service,
    session_cookie,
)

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 375, "height": 780}}

CODE = '''import os


class Greeter:
    """Say hello, at length if asked."""

    def greet(self, name: str, times: int = 2) -> str:
        # A comment, and a line long enough to need wrapping on every screen width there is:
        return ", ".join(f"Hello, {name}! <b>not bold</b>" for _ in range(times)) + os.sep * 40 + "https://example.org/a/very/long/path/without/any/spaces/in/it/at/all/to/break/on"


print(Greeter().greet("world"))
'''

MARKDOWN = """# Release notes

## Tasks

- [x] highlight code
- [ ] write the docs
- plain item

## Tasks

```python
def f(x):
    return x * 2  # doubled
```

| item | cost |
|:-----|-----:|
| tea  |    3 |
"""

#: Records CSP violations before the page's own content runs.
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__violations.push(e.violatedDirective + " " + e.blockedURI);
});
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from paste import logic
    from paste.models import Format, Paste

    config, app, port = served_site(tmp_path_factory.mktemp("paste-browser"))
    alice = create_user(app, "alice", user_type=UserType.active)
    ids = {"code": logic.new_short_id(), "markdown": logic.new_short_id()}
    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            Paste(
                owner_id=alice.id,
                short_id=ids["code"],
                title="greeter.py",
                text=CODE,
                language="python",
            )
        )
        session.add(
            Paste(
                owner_id=alice.id,
                short_id=ids["markdown"],
                title="Notes",
                text=MARKDOWN,
                format=Format.markdown,
            )
        )
    cookie = session_cookie(app, alice)
    app.extensions["srcore"].db.dispose()
    with run_service("paste", config, port=port) as url:
        yield {"url": url, "cookie": cookie, **ids}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def open_page(browser: Any, url: str, *, scheme: str, viewport: str) -> Any:
    context = browser.new_context(viewport=VIEWPORTS[viewport], color_scheme=scheme)
    context.add_init_script(WATCH)
    page = context.new_page()
    response = page.goto(url)
    assert response is not None
    assert response.status == 200
    return page


def shoot(page: Any, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def colour(page: Any, selector: str) -> str:
    return str(page.eval_on_selector(selector, "el => getComputedStyle(el).color"))


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
def test_code_paste_light_and_dark(browser: Any, site: dict[str, Any], viewport: str) -> None:
    seen: dict[str, dict[str, str]] = {}
    for scheme in ("light", "dark"):
        page = open_page(
            browser, f"{site['url']}/p/{site['code']}", scheme=scheme, viewport=viewport
        )
        shoot(page, f"paste-code-{scheme}-{viewport}")
        assert page.evaluate("window.__violations") == []
        text = colour(page, ".code")
        seen[scheme] = {
            "keyword": colour(page, ".code .hl-k"),
            "string": colour(page, ".code .hl-s2, .code .hl-sa, .code .hl-s1"),
            "comment": colour(page, ".code .hl-c1"),
            "text": text,
        }
        assert len({seen[scheme]["keyword"], seen[scheme]["string"], text}) == 3, seen
        # One numbered line per line of code; selecting the block copies the code alone.
        assert page.locator(".code .line").count() == CODE.count("\n")
        copied = page.evaluate(
            "() => { const s = getSelection();"
            " s.selectAllChildren(document.querySelector('.code')); return s.toString(); }"
        )
        assert copied.rstrip("\n") == CODE.rstrip("\n")  # a browser drops the last newline
        numbers = page.eval_on_selector(
            ".code .line:nth-child(7)", "el => getComputedStyle(el, '::before').content"
        )
        assert numbers == "counter(line)"
        # The long line wraps inside the block: nothing is cut off or scrolled away.
        fits = page.eval_on_selector(".code", "el => el.scrollWidth <= el.clientWidth")
        assert fits
        long_line = page.locator(".code .line").nth(8)
        assert (
            long_line.bounding_box()["height"]
            > 1.5 * page.locator(".code .line").nth(0).bounding_box()["height"]
        )
        page.context.close()
    assert seen["light"]["keyword"] != seen["dark"]["keyword"]
    assert seen["light"]["text"] != seen["dark"]["text"]


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_markdown_paste_with_anchors_tasks_and_code(
    browser: Any, site: dict[str, Any], scheme: str
) -> None:
    page = open_page(
        browser, f"{site['url']}/p/{site['markdown']}", scheme=scheme, viewport="desktop"
    )
    page.hover("#user-content-tasks")
    shoot(page, f"paste-markdown-{scheme}")
    assert page.evaluate("window.__violations") == []
    ids = page.eval_on_selector_all(".markdown :is(h1, h2)", "els => els.map(e => e.id)")
    assert ids == ["user-content-release-notes", "user-content-tasks", "user-content-tasks-1"]
    boxes = page.locator(".markdown input[type=checkbox]")
    assert boxes.count() == 2
    assert boxes.nth(0).is_checked() and boxes.nth(0).is_disabled()
    assert not boxes.nth(1).is_checked()
    assert colour(page, ".markdown pre .hl-k") != colour(page, ".markdown pre")
    align = "el => getComputedStyle(el).textAlign"
    assert page.eval_on_selector_all(".markdown td", f"els => els.map({align})") == [
        "left",
        "right",
    ]
    page.click("#user-content-tasks-1 > a.anchor")
    assert page.url.endswith("#user-content-tasks-1")
    page.context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_editor_is_monospace_and_wide(browser: Any, site: dict[str, Any], scheme: str) -> None:
    context = browser.new_context(viewport=VIEWPORTS["desktop"], color_scheme=scheme)
    name, value = site["cookie"]
    context.add_cookies([{"name": name, "value": value, "url": site["url"]}])
    page = context.new_page()
    assert page.goto(site["url"] + "/new").status == 200
    page.fill("#text", CODE)
    page.select_option("#language", "python")
    shoot(page, f"paste-new-{scheme}")
    font = page.eval_on_selector("#text", "el => getComputedStyle(el).fontFamily")
    assert "monospace" in font
    width = page.eval_on_selector("#text", "el => el.getBoundingClientRect().width")
    card = page.eval_on_selector("form.card", "el => el.getBoundingClientRect().width")
    assert width > 0.9 * card > 1000
    context.close()


def test_copy_link_puts_the_paste_address_on_the_clipboard(
    browser: Any, site: dict[str, Any]
) -> None:
    context = browser.new_context(
        viewport=VIEWPORTS["phone"], permissions=["clipboard-read", "clipboard-write"]
    )
    context.add_init_script(WATCH)
    page = context.new_page()
    address = f"{site['url']}/p/{site['code']}"
    assert page.goto(address).status == 200
    button = page.get_by_role("button", name="Copy link")
    assert button.is_visible()  # the script shows it where a clipboard is available
    button.click()
    page.get_by_role("button", name="Copied").wait_for()
    assert page.evaluate("navigator.clipboard.readText()") == address
    assert page.get_by_role("status").inner_text() == "Link copied to the clipboard."
    shoot(page, "paste-copied-link")
    assert page.evaluate("window.__violations") == []
    context.close()


def test_without_script_the_copy_button_stays_hidden(browser: Any, site: dict[str, Any]) -> None:
    context = browser.new_context(viewport=VIEWPORTS["desktop"], java_script_enabled=False)
    page = context.new_page()
    assert page.goto(f"{site['url']}/p/{site['code']}").status == 200
    assert page.locator("button[data-copy]").count() == 1
    assert not page.locator("button[data-copy]").is_visible()  # [hidden] beats .btn's display
    assert page.get_by_role("link", name="Raw").is_visible()
    context.close()
