"""The search box of paste's lists in a real browser: headless Chromium against gunicorn.

Screenshots go to artifacts/screenshots/ (git-ignored) for people to look at.
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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from paste import logic
    from paste.models import Format, Paste, Visibility

    config, app, port = served_site(tmp_path_factory.mktemp("paste-search-browser"))
    alice = create_user(app, "alice", user_type=UserType.active)
    rows = [
        ("Deploy notes", "ssh in, pull, restart", {}),
        ("Release checklist", "- [ ] tag\n- [ ] notes", {"format": Format.markdown}),
        ("Greeter", "print('hi')", {"language": "python"}),
        ("Private notes", "not for the front page", {"visibility": Visibility.unlisted}),
    ]
    with app.extensions["srcore"].db.transaction() as session:
        for title, text, values in rows:
            session.add(
                Paste(
                    owner_id=alice.id,
                    short_id=logic.new_short_id(),
                    title=title,
                    text=text,
                    **values,
                )
            )
    cookie = session_cookie(app, alice)
    app.extensions["srcore"].db.dispose()
    with run_service("paste", config, port=port) as url:
        yield {"url": url, "cookie": cookie}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def titles(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(".item-title").all_inner_texts()]


def search(page: Any, query: str) -> None:
    box = page.get_by_role("searchbox", name="Search pastes")
    box.fill(query)
    with page.expect_navigation():
        box.press("Enter")


def test_front_page_search(browser: Any, site: dict[str, Any]) -> None:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(site["url"] + "/")
    assert titles(page) == ["Greeter", "Release checklist", "Deploy notes"]
    search(page, "notes !format:markdown")
    assert titles(page) == ["Deploy notes"]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "paste-search.png"), full_page=True)
    search(page, "lang:nosuch")
    assert page.locator(".search-error").inner_text().strip() == (
        "In lang:nosuch: no language is called that."
    )
    assert titles(page) == []


def test_your_pastes_search(browser: Any, site: dict[str, Any]) -> None:
    context = browser.new_context(viewport={"width": 375, "height": 780})
    name, value = site["cookie"]
    context.add_cookies([{"name": name, "value": value, "url": site["url"]}])
    page = context.new_page()
    page.goto(site["url"] + "/mine")
    search(page, "visibility:unlisted")
    assert titles(page) == ["Private notes"]
    assert page.evaluate("() => document.documentElement.scrollWidth") <= 375
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "paste-search-mine-phone.png"), full_page=True)
