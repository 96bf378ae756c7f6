"""The tracker's search box in a real browser: headless Chromium against gunicorn.

A screenshot of a search and one of a bad search go to artifacts/screenshots/ (git-ignored)
for people to look at; the assertions check what a person would check on them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore import migrate
from srcore.app import migration_target
from srcore.db import UserType
from srcore.testing import create_user, free_port, launch_chromium, run_service, write_config

pytestmark = pytest.mark.browser

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import todo
    from todo.models import Ticket, TicketStatus, Tracker, Visibility

    tmp = tmp_path_factory.mktemp("search-browser")
    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id="todo",
        database_url=f"sqlite:///{tmp / 'todo.db'}",
        origin=f"http://127.0.0.1:{port}",
    )
    app = todo.create_app(config=config)
    migrate.upgrade_all(migration_target("todo", config))
    alice = create_user(app, "alice", user_type=UserType.active)
    bob = create_user(app, "bob", user_type=UserType.active)
    tickets = [
        ("Crash on start with an empty config", TicketStatus.open, alice),
        ("Crash when saving a 100% full disk", TicketStatus.resolved, bob),
        ("Dark mode makes code blocks unreadable", TicketStatus.open, bob),
        ("Crash in the search box", TicketStatus.open, bob),
    ]
    with app.extensions["srcore"].db.transaction() as session:
        tracker = Tracker(
            owner_id=alice.id,
            name="website",
            visibility=Visibility.public,
            ticket_count=len(tickets),
        )
        session.add(tracker)
        session.flush()
        for number, (title, status, who) in enumerate(tickets, start=1):
            session.add(
                Ticket(
                    tracker_id=tracker.id,
                    number=number,
                    title=title,
                    status=status,
                    submitter_id=who.id,
                )
            )
    app.extensions["srcore"].db.dispose()
    with run_service("todo", config, port=port) as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


def shown_titles(page: Any) -> list[str]:
    return [t.strip() for t in page.locator(".item-title").all_inner_texts()]


def test_search_box_finds_only_matching_tickets(browser: Any, site: str) -> None:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(site + "/~alice/website")
    assert len(shown_titles(page)) == 3  # the open tickets
    box = page.get_by_role("searchbox", name="Search tickets")
    box.fill("crash !submitter:alice")
    with page.expect_navigation():
        box.press("Enter")
    assert "search=crash" in page.url
    assert shown_titles(page) == ["Crash in the search box", "Crash when saving a 100% full disk"]
    assert box.input_value() == "crash !submitter:alice"
    assert page.locator(".search-error").count() == 0
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "todo-search.png"), full_page=True)

    box.fill('"100%" status:resolved')
    page.get_by_role("button", name="Search").click()
    page.wait_for_load_state()
    assert shown_titles(page) == ["Crash when saving a 100% full disk"]


def test_bad_search_shows_its_message(browser: Any, site: str) -> None:
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    response = page.goto(site + "/~alice/website")
    assert response.status == 200
    box = page.get_by_role("searchbox", name="Search tickets")
    box.fill("crash status:closed")
    with page.expect_navigation() as navigation:
        box.press("Enter")
    assert navigation.value.status == 400
    error = page.locator(".search-error")
    assert error.is_visible()
    assert error.inner_text().strip() == "In status:closed: use one of open, resolved."
    assert box.get_attribute("aria-invalid") == "true"
    assert box.input_value() == "crash status:closed"
    assert shown_titles(page) == []
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "todo-search-error.png"), full_page=True)


def test_search_box_fits_a_phone(browser: Any, site: str) -> None:
    page = browser.new_context(viewport={"width": 375, "height": 780}).new_page()
    page.goto(site + "/~alice/website?search=crash")
    box = page.get_by_role("searchbox", name="Search tickets")
    assert box.is_visible()
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375  # nothing sticks out sideways
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "todo-search-phone.png"), full_page=True)
