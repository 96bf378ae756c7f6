"""The admin pages in headless Chromium against meta under gunicorn: an admin finds an
account, suspends it with a hostile notice and reads the log; a forged page on another
origin posts to the admin actions in the admin's browser; a visitor and a plain user are
shown nothing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from srcore import migrate
from srcore.app import migration_target
from srcore.testing import free_port, launch_chromium, run_service, write_config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery staple"
#: A notice with markup, a script, a right-to-left override and more than the log keeps.
NOTICE = "<script>window.pwned=1</script><b>bold</b> \u202eevil " + "x" * 300


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def meta_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """meta under gunicorn on a fresh SQLite database: root1 (admin), alice and bob."""
    import meta
    from meta import logic

    from srcore.db import UserType, utcnow

    tmp = tmp_path_factory.mktemp("admin-browser")
    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id="meta",
        database_url=f"sqlite:///{tmp / 'meta.db'}",
        origin=f"http://127.0.0.1:{port}",
    )
    migrate.upgrade_all(migration_target("meta", config))
    app = meta.create_app(config=config)
    passwords = app.extensions["meta"].passwords
    with app.app_context(), app.extensions["srcore"].db.transaction() as session:
        for name, kind in (
            ("root1", UserType.admin),
            ("alice", UserType.active),
            ("bob", UserType.active),
        ):
            user = logic.create_user(
                session,
                username=name,
                email=f"{name}@example.org",
                password_hash=passwords.hash(PASSWORD),
            )
            user.user_type, user.email_confirmed_at = kind, utcnow()
    app.extensions["srcore"].db.dispose()
    with run_service("meta", config, port=port) as url:
        yield url


def _log_in(page: Any, base: str, username: str) -> None:
    page.goto(base + "/login")
    page.get_by_label("Username or email").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(lambda url: "/login" not in url)


def _serving(html: str) -> Any:
    """A route handler answering with *html* (the attacker's page)."""

    def serve(route: Any) -> None:
        route.fulfill(body=html, content_type="text/html")

    return serve


def test_visitors_and_users_see_nothing_of_the_admin_pages(browser: Any, meta_url: str) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(meta_url + "/admin/users")
        assert "/login" in page.url
        _log_in(page, meta_url, "bob")
        for path in ("/admin/users", "/admin/users/1", "/admin/audit"):
            response = page.goto(meta_url + path)
            assert response is not None and response.status == 404, path
            assert "alice@example.org" not in page.content()
    finally:
        context.close()


def test_a_forged_form_on_another_origin_changes_nothing(browser: Any, meta_url: str) -> None:
    """The admin's browser is sent a page that posts to every admin action (the cookie is
    SameSite=Lax, and the page has no CSRF token): each is refused."""
    context = browser.new_context()
    try:
        page = context.new_page()
        _log_in(page, meta_url, "root1")
        page.goto(meta_url + "/admin/users?q=alice")
        page.get_by_role("link", name="alice").click()
        alice_page = page.url
        attacker = context.new_page()
        for action in ("suspend", "factors/reset", "unsuspend"):
            forged = (
                f'<form method="post" action="{alice_page}/{action}">'
                '<input name="notice" value="forged"></form>'
                "<script>document.forms[0].submit()</script>"
            )
            attacker.route("http://evil.invalid/", _serving(forged))
            with attacker.expect_navigation(url=f"{alice_page}/{action}") as sent:
                attacker.goto("http://evil.invalid/")
            response = sent.value
            assert response is not None and response.status in (400, 401), action
            attacker.unroute("http://evil.invalid/")
        page.reload()
        assert page.get_by_role("heading", name="Suspend").is_visible()
        page.goto(meta_url + "/admin/audit?user=alice")
        assert page.get_by_text("No entry matches").is_visible()
    finally:
        context.close()


def test_an_admin_suspends_with_a_hostile_notice_and_reads_it_inert(
    browser: Any, meta_url: str
) -> None:
    context = browser.new_context()
    try:
        page = context.new_page()
        _log_in(page, meta_url, "root1")
        page.goto(meta_url + "/admin/users?q=" + "%E2%80%AEalice")
        assert page.locator("bdi").filter(has_text="alice").count() == 1
        page.goto(meta_url + "/admin/users?q=alice")
        page.get_by_role("link", name="alice").click()
        page.get_by_label("Notice shown to the user").fill(NOTICE)
        page.get_by_role("button", name="Suspend account").click()
        page.get_by_role("heading", name="Suspended").wait_for()
        assert page.evaluate("window.pwned") is None
        assert page.locator("#suspension b").count() == 0
        page.get_by_role("link", name="This account's audit log").click()
        row = page.locator("#audit-log tbody tr").first
        # The click starts a navigation: read the log once its page has come.
        page.locator("#audit-log tbody tr").filter(has_text="Account suspended").first.wait_for()
        cells = row.locator("td").all_inner_texts()
        assert "Account suspended" in cells[1] and cells[3] == "root1"
        detail = cells[4]
        assert detail.startswith("<script>window.pwned=1</script><b>bold</b>")
        assert detail.endswith("\u2026") and len(detail) == 256
        assert page.evaluate("window.pwned") is None
        # Alice is shown the whole notice, as text, when she logs in.
        other = browser.new_context()
        try:
            tab = other.new_page()
            tab.goto(meta_url + "/login")
            tab.get_by_label("Username or email").fill("alice")
            tab.get_by_label("Password").fill(PASSWORD)
            tab.get_by_role("button", name="Log in").click()
            assert tab.get_by_text("x" * 300).count() == 1
            assert tab.evaluate("window.pwned") is None
        finally:
            other.close()
    finally:
        context.close()
