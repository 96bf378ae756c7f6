"""Two-factor sign-in in headless Chromium against meta under gunicorn.

A person turns TOTP on from the Security page (an app scans the QR code off the screen,
read here by zxing-cpp, and computes its codes by RFC 6238 with the standard library: nothing
meta uses itself), logs out, logs in with a code, logs in with a recovery code once, and is
refused the same recovery code a second time. An admin
then reads the audit log. Screenshots go to artifacts/two-factor/ (git-ignored).
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_two_factor_outsider import read_key_uri, totp_code

from srcore import migrate
from srcore.app import migration_target
from srcore.testing import free_port, launch_chromium, run_service, write_config

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[3] / "artifacts" / "two-factor"
PASSWORD = "correct horse battery staple"
STEP_MS = 15_000
#: What the operator named the codes: apps split a key URI's label at its colon.
ISSUER = "Acme: Code"


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

    tmp = tmp_path_factory.mktemp("two-factor")
    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id="meta",
        database_url=f"sqlite:///{tmp / 'meta.db'}",
        origin=f"http://127.0.0.1:{port}",
        extra=f"two-factor-issuer = {ISSUER}\n",
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
    with run_service("meta", config, port=port) as url:
        yield url


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
        self.page.wait_for_url(lambda url: url.split("?")[0] == self.base + path)

    def log_in(self, username: str) -> None:
        self.page.goto(self.base + "/login")
        self.page.get_by_label("Username or email").fill(username)
        self.page.get_by_label("Password").fill(PASSWORD)
        self.page.get_by_role("button", name="Log in").click()

    def second_step(self, code: str) -> None:
        self.at("/login/verify")
        self.page.get_by_label("Code").fill(code)
        self.page.get_by_role("button", name="Log in").click()

    def log_out(self) -> None:
        self.page.get_by_role("button", name="Log out", exact=True).click()
        self.at("/login")


def _code(secret: str, steps_ahead: int) -> str:
    """The code of a later 30-second step: one step ahead is accepted (clock drift), and a
    step is good once, so each login uses a step not used before."""
    return totp_code(secret, time.time() + 30 * steps_ahead)


def scan_qr(element: Any) -> str:
    """What a phone's camera reads off *element* on the screen."""
    import zxingcpp
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(element.screenshot())))
    assert len(found) == 1 and found[0].format == zxingcpp.BarcodeFormat.QRCode, found
    return str(found[0].text)


def test_turn_on_totp_sign_in_with_it_and_use_a_recovery_code_once(
    browser: Any, meta_url: str
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Tab(context, meta_url)
    page = tab.page
    try:
        # Log in with the password alone, and find two-factor sign-in on the Security page.
        tab.log_in("alice")
        tab.at("/profile")
        page.get_by_role("navigation", name="Account").get_by_role("link", name="Security").click()
        tab.at("/security")
        assert page.locator("#two-factor").get_by_text("Off").is_visible()
        page.get_by_role("link", name="Turn on two-factor sign-in").click()
        tab.at("/security/two-factor")
        key = read_key_uri(scan_qr(page.locator(".qr-code svg")))
        assert key["label_issuer"] == key["issuer"] == "Acme Code" and key["account"] == "alice"
        secret = key["secret"]
        # The key to type, when the camera cannot scan, is the same.
        assert page.locator("#totp-secret").inner_text().replace(" ", "") == secret
        tab.shoot("01-setup")

        # Turn it on: a code from the app and the password. The codes are shown once.
        page.get_by_label("Code from the app").fill(_code(secret, 0))
        page.get_by_label("Your password").fill(PASSWORD)
        page.get_by_role("button", name="Turn on").click()
        page.locator("#recovery-codes").wait_for()
        codes = [c.strip() for c in page.locator("#recovery-codes li code").all_inner_texts()]
        assert len(codes) == 10
        tab.shoot("02-recovery-codes")

        # Log out, log in again: the password is not enough, the code is.
        tab.log_out()
        tab.log_in("alice")
        tab.second_step("000000")
        assert page.get_by_text("This code is not right.").first.is_visible()
        tab.shoot("03-wrong-code")
        page.get_by_label("Code").fill(_code(secret, 1))
        page.get_by_role("button", name="Log in").click()
        tab.at("/profile")
        assert page.get_by_text("Logged in as alice.").is_visible()

        # A recovery code logs in once.
        tab.log_out()
        tab.log_in("alice")
        tab.second_step(codes[0])
        tab.at("/profile")
        assert page.get_by_text("9 left").is_visible()
        page.goto(meta_url + "/security")
        activity = page.locator("#activity")
        for words in ("Second factor used", "Two-factor sign-in turned on", "Failed login"):
            assert activity.get_by_text(words).first.is_visible(), words
        assert page.locator("#two-factor").get_by_text("9 unused recovery codes left").is_visible()
        tab.shoot("04-security-page")

        # The same recovery code a second time is refused.
        tab.log_out()
        tab.log_in("alice")
        tab.second_step(codes[0])
        assert page.get_by_text("This code is not right.").first.is_visible()
        page.goto(meta_url + "/profile")
        tab.at("/login")
        # The two refused codes are answered 400 (a form with its errors); nothing else failed.
        assert [e for e in tab.errors if "status of 400" not in e] == [], tab.errors
    finally:
        context.close()

    # An admin reads it all in the audit log, and narrows it down.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    admin = Tab(context, meta_url)
    try:
        admin.log_in("root1")
        admin.at("/profile")
        admin.page.get_by_role("link", name="Audit log").click()
        admin.at("/admin/audit")
        log = admin.page.locator("#audit-log")
        for words in ("Second factor used", "Two-factor sign-in turned on", "Failed login"):
            assert log.get_by_text(words).first.is_visible(), words
        assert log.get_by_text("recovery code").first.is_visible()
        admin.shoot("05-audit-log")
        admin.page.get_by_role("textbox", name="Account").fill("alice")
        admin.page.get_by_label("Event").select_option("factor-used")
        admin.page.get_by_role("button", name="Filter").click()
        admin.page.wait_for_url(lambda url: "kind=factor-used" in url)
        rows = admin.page.locator("#audit-log tbody tr")
        assert rows.count() == 2  # the code, then the recovery code
        admin.shoot("06-audit-log-filtered")
        assert admin.errors == [], admin.errors
    finally:
        context.close()
