"""The todo pages in a real browser: headless Chromium against gunicorn on 127.0.0.1.

Screenshots of the tracker page and of a form with validation errors, in light and dark
mode, at desktop and phone width, go to artifacts/screenshots/ (git-ignored) for people to
look at; the assertions check what a person would check on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore import migrate
from srcore.db import UserType
from srcore.testing import (
    create_user,
    free_port,
    launch_chromium,
    run_service,
    session_cookie,
    write_config,
)

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "screenshots"
VIEWPORTS = {"desktop": {"width": 1280, "height": 900}, "phone": {"width": 375, "height": 780}}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    import todo
    from todo.models import Ticket, TicketStatus, Tracker, Visibility

    tmp = tmp_path_factory.mktemp("browser")
    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id="todo",
        database_url=f"sqlite:///{tmp / 'todo.db'}",
        origin=f"http://127.0.0.1:{port}",
    )
    app = todo.create_app(config=config)
    migrate.upgrade_all(
        migrate.MigrationTarget(
            service_id="todo",
            database_url=str(app.extensions["srcore"].section["database-url"]),
            metadata=app.extensions["srcore"].metadata,
            versions_dir=Path(todo.__file__).parent / "migrations" / "versions",
        )
    )
    alice = create_user(app, "alice", user_type=UserType.active)
    with app.extensions["srcore"].db.transaction() as session:
        tracker = Tracker(
            owner_id=alice.id,
            name="website",
            description="Bugs and ideas for **the website**.",
            visibility=Visibility.public,
            ticket_count=4,
        )
        session.add(tracker)
        session.flush()
        titles = [
            ("Dark mode makes code blocks unreadable", TicketStatus.open),
            ("Search ignores accented letters", TicketStatus.open),
            ("Footer links point to the old domain", TicketStatus.resolved),
            ("Add an RSS feed of new tickets", TicketStatus.open),
        ]
        for number, (title, status) in enumerate(titles, start=1):
            session.add(
                Ticket(
                    tracker_id=tracker.id,
                    number=number,
                    title=title,
                    description="Steps to reproduce:\n\n1. Open the page\n2. Look",
                    status=status,
                    submitter_id=alice.id,
                )
            )
    cookie = session_cookie(app, alice)
    app.extensions["srcore"].db.dispose()
    with run_service("todo", config, port=port) as url:
        yield {"url": url, "cookie": cookie}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def page_for(browser: Any, site: dict[str, Any], *, scheme: str, viewport: str) -> Any:
    context = browser.new_context(viewport=VIEWPORTS[viewport], color_scheme=scheme)
    name, value = site["cookie"]
    context.add_cookies([{"name": name, "value": value, "url": site["url"]}])
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.console_errors = errors  # type: ignore[attr-defined]
    return page


def shoot(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_tracker_page(browser: Any, site: dict[str, Any], scheme: str, viewport: str) -> None:
    page = page_for(browser, site, scheme=scheme, viewport=viewport)
    response = page.goto(site["url"] + "/~alice/website")
    assert response.status == 200
    assert page.get_by_role("heading", name="website").first.is_visible()
    assert page.get_by_text("Dark mode makes code blocks unreadable").is_visible()
    assert page.get_by_text("alice").first.is_visible()  # logged in through the session cookie
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(c) for c in background[background.index("(") + 1 : -1].split(",")[:3])
    assert (red + green + blue < 3 * 128) == (scheme == "dark"), background
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= VIEWPORTS[viewport]["width"], "the page scrolls sideways"
    path = shoot(page, f"tracker-{scheme}-{viewport}")
    assert path.stat().st_size > 10_000
    assert page.console_errors == []
    page.context.close()


@pytest.mark.parametrize("viewport", ["desktop", "phone"])
@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_form_with_validation_errors(
    browser: Any, site: dict[str, Any], scheme: str, viewport: str
) -> None:
    page = page_for(browser, site, scheme=scheme, viewport=viewport)
    assert page.goto(site["url"] + "/~alice/website/new").status == 200
    page.get_by_label("Title").fill("   ")  # the browser sends it; the server strips it
    page.get_by_label("Description").fill("Steps:\n\n1. Open the page")
    with page.expect_response(lambda r: r.request.method == "POST") as posted:
        page.get_by_role("button", name="Submit ticket").click()
    assert posted.value.status == 400
    page.wait_for_load_state()
    title = page.get_by_label("Title")
    assert title.get_attribute("aria-invalid") == "true"
    described = title.get_attribute("aria-describedby") or ""
    error_id = next(part for part in described.split() if part.endswith("-error"))
    assert page.locator(f"#{error_id}").is_visible()
    assert "required" in page.locator(f"#{error_id}").inner_text()
    # what was typed is kept
    assert page.get_by_label("Description").input_value() == "Steps:\n\n1. Open the page"
    shoot(page, f"form-errors-{scheme}-{viewport}")
    # the 400 of the form itself is the one expected "failed" resource
    assert [e for e in page.console_errors if "status of 400" not in e] == []
    page.context.close()
