"""Passkeys in headless Chromium against meta under gunicorn, with Chrome's virtual
authenticator (the DevTools WebAuthn domain) standing in for a phone or a security key.

A person adds a passkey on the Security page, logs out, logs in with it and no password,
then with the password and the passkey as the second factor. An admin reads the audit log.
meta's origin is ``http://localhost:PORT``: browsers refuse WebAuthn on an IP address, and
localhost is a secure context. Screenshots go to artifacts/passkeys/ (git-ignored), or to
``$PASSKEY_SCREENSHOTS``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore import migrate
from srcore.app import migration_target
from srcore.testing import free_port, launch_chromium, run_service, write_config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(
    os.environ.get("PASSKEY_SCREENSHOTS")
    or Path(__file__).resolve().parents[3] / "artifacts" / "passkeys"
)
PASSWORD = "correct horse battery staple"
STEP_MS = 15_000
AUTHENTICATOR = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture(scope="module")
def meta_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """meta under gunicorn on a fresh SQLite database, with alice and an admin, root1."""
    import meta
    from meta import logic

    from srcore.db import UserType, utcnow

    tmp = tmp_path_factory.mktemp("passkeys")
    port = free_port()
    origin = f"http://localhost:{port}"
    config = write_config(
        tmp / "config.ini",
        service_id="meta",
        database_url=f"sqlite:///{tmp / 'meta.db'}",
        origin=origin,
    )
    migrate.upgrade_all(migration_target("meta", config))
    app = meta.create_app(config=config)
    passwords = app.extensions["meta"].passwords
    with app.app_context(), app.extensions["srcore"].db.transaction() as session:
        for name, kind in (("alice", UserType.active), ("root1", UserType.admin)):
            user = logic.create_user(
                session,
                username=name,
                email=f"{name}@example.org",
                password_hash=passwords.hash(PASSWORD),
            )
            user.user_type, user.email_confirmed_at = kind, utcnow()
    app.extensions["srcore"].db.dispose()
    with run_service("meta", config, port=port):
        yield origin


class Tab:
    """One browser tab that numbers its screenshots and collects console errors."""

    def __init__(self, context: Any, base: str) -> None:
        self.page = context.new_page()
        self.base = base
        self.errors: list[str] = []
        self.page.set_default_timeout(STEP_MS)
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def shoot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def at(self, path: str) -> None:
        self.page.wait_for_url(lambda url: url.split("?")[0].split("#")[0] == self.base + path)

    def log_in(self, username: str) -> None:
        self.page.goto(self.base + "/login")
        self.page.get_by_label("Username or email").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()

    def log_out(self) -> None:
        self.page.get_by_role("button", name="Log out", exact=True).click()
        self.at("/login")


def test_add_a_passkey_then_log_in_with_it_alone_and_as_a_second_factor(
    browser: Any, meta_url: str
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Tab(context, meta_url)
    page = tab.page
    cdp = context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    authenticator = cdp.send("WebAuthn.addVirtualAuthenticator", {"options": AUTHENTICATOR})
    try:
        # Log in with the password alone, and add a passkey on the Security page.
        tab.log_in("alice")
        tab.at("/profile")
        page.get_by_role("navigation", name="Account").get_by_role("link", name="Security").click()
        tab.at("/security")
        section = page.locator("#passkeys")
        assert section.get_by_role("button", name="Add a passkey").is_visible()
        assert not page.locator("#passkey-unsupported").is_visible()
        page.locator("#passkey-name").fill("laptop")
        page.locator("#passkey-password").fill(PASSWORD)
        section.get_by_role("button", name="Add a passkey").click()
        page.get_by_text("The passkey “laptop” is added.").wait_for()
        tab.at("/security")
        assert page.locator("#passkeys table input[name=name]").input_value() == "laptop"
        stored = cdp.send(
            "WebAuthn.getCredentials", {"authenticatorId": authenticator["authenticatorId"]}
        )
        [credential] = stored["credentials"]
        assert credential["isResidentCredential"]
        tab.shoot("01-security-page-with-a-passkey")

        # Log out; log in with the passkey and no password at all.
        tab.log_out()
        tab.shoot("02-login-page")
        page.get_by_role("button", name="Sign in with a passkey").click()
        tab.at("/profile")
        assert page.get_by_text("Logged in as alice.").is_visible()

        # With the password, the passkey is asked for as the second factor.
        tab.log_out()
        tab.log_in("alice")
        tab.at("/login/verify")
        tab.shoot("03-second-step")
        page.get_by_role("button", name="Use a passkey").click()
        tab.at("/profile")
        assert page.get_by_text("Logged in as alice.").is_visible()

        page.goto(meta_url + "/security")
        activity = page.locator("#activity")
        for words in ("Passkey used", "Passkey added", "Logged in"):
            assert activity.get_by_text(words).first.is_visible(), words
        assert activity.get_by_text("with passkey + user verified").first.is_visible()
        assert activity.get_by_text("with password + passkey + user verified").first.is_visible()
        tab.shoot("04-security-page-activity")
        assert tab.errors == [], tab.errors
    finally:
        context.close()

    # An admin reads it in the audit log.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    admin = Tab(context, meta_url)
    try:
        admin.log_in("root1")
        admin.at("/profile")
        admin.page.get_by_role("link", name="Audit log").click()
        admin.at("/admin/audit")
        log = admin.page.locator("#audit-log")
        for words in ("Passkey added", "Passkey used", "laptop, without a password"):
            assert log.get_by_text(words).first.is_visible(), words
        admin.shoot("05-audit-log")
        assert admin.errors == [], admin.errors
    finally:
        context.close()
