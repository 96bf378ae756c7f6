"""Two logins of two accounts at once in one browser: each second-step page answers for the
login it was shown for.

Tab A gets alice's second-step page, then tab B bob's (his password accepted after hers).
A code typed on alice's page is no guess at bob's code: it is checked against nobody,
counts on neither account's counters (the throttle's and the audit log's), and the page
that answers says the login was replaced. Bob's page still logs him in. The same for a
recovery code, for a passkey as the second factor, and for the proofs a reset page keeps
of a passkey (two accounts' reset links in two tabs). Flask's test client through the real
forms (SQLite and PostgreSQL), codes from pyotp, and one run in headless Chromium.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from passkey_helpers import SoftKey
from sqlalchemy import select
from test_meta_reset_second_factor import code_at, turn_on_totp

from srcore.testing import launch_chromium, log_in_client

REPLACED = "This login was replaced by a newer one for another account in this browser"
NEW_PASSWORD = "a brand new passphrase"
JSON = {"Accept": "application/json"}
STEP_MS = 15_000
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Page:
    """A page as a tab holds it: its form's token and what it was shown for."""

    def __init__(self, text: str) -> None:
        self.text = text
        match = _CSRF.search(text)
        assert match, text[:500]
        self.csrf = match.group(1)

    def login_id(self) -> str:
        match = re.search(r'name="login_token" value="([^"]+)"', self.text)
        assert match, "the second step's form names no login"
        return match.group(1)

    def data(self, name: str) -> str:
        match = re.search(rf'data-{name}="([^"]+)"', self.text)
        assert match, f"no data-{name} on the page"
        return html.unescape(match.group(1))


def open_page(client: Any, path: str) -> Page:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code)
    return Page(response.get_data(as_text=True))


def password_step(client: Any, name: str, password: str) -> Page:
    """The login form of a tab: *name*'s password; the second-step page it leads to."""
    form = open_page(client, "/forgot")
    sent = client.post(
        "/login", data={"login": name, "password": password, "csrf_token": form.csrf}
    )
    assert sent.status_code == 302 and sent.headers["Location"] == "/login/verify", sent.status_code
    return open_page(client, "/login/verify")


def send_code(client: Any, page: Page, code: str) -> Any:
    """The code typed on *page* and its form sent, as the tab holding it does."""
    data = {"code": code, "csrf_token": page.csrf}
    match = re.search(r'name="login_token" value="([^"]+)"', page.text)
    if match:
        data["login_token"] = match.group(1)
    return client.post("/login/verify", data=data)


def post_json(client: Any, path: str, body: Any, page: Page) -> Any:
    return client.post(path, json=body, headers={**JSON, "X-CSRFToken": page.csrf})


def one_failure_locks(app: Any) -> Any:
    """Throttles under which one counted failure locks an account's second step: whether
    a code was counted on an account is whether its counter refuses now."""
    from meta.protection import LoginProtection

    from srcore.throttle import Throttle, make_store

    store, lockout = make_store(""), timedelta(minutes=15)
    protection = LoginProtection(
        account=Throttle(store, max_failures=1, free_failures=1, lockout=lockout, prefix="t"),
        address=Throttle(store, max_failures=50, free_failures=50, lockout=lockout, prefix="t"),
    )
    app.extensions["meta"].protection = protection
    return protection


def second_step_open(protection: Any, user: Any) -> bool:
    """Whether *user*'s second-step counter (and account counter) would take a code now."""
    keys = [("account", f"user:{user.id}"), ("second-factor", f"user:{user.id}")]
    return bool(protection.account.check(keys).allowed)


def failures(app: Any, user_id: int) -> list[tuple[str, str]]:
    """The audit log's failed and refused attempts of *user_id*."""
    from meta.models import AuditEntry

    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(
            select(AuditEntry)
            .where(
                AuditEntry.user_id == user_id,
                AuditEntry.kind.in_(("login-failed", "login-throttled", "passkey-failed")),
            )
            .order_by(AuditEntry.id)
        )
        return [(str(row.kind), str(row.detail)) for row in rows]


def logged_in_as(app: Any, client: Any) -> int | None:
    with client.session_transaction() as cookie:
        uid = cookie.get("_uid")
    return uid if isinstance(uid, int) else None


# -- an authenticator app, a recovery code ----------------------------------------------------


@pytest.mark.parametrize("kind", ["app code", "recovery code"])
def test_alices_code_on_her_replaced_page_counts_on_nobody(
    app: Any, accounts: Any, password: str, kind: str
) -> None:
    protection = one_failure_locks(app)
    alice, bob = accounts.make("alice"), accounts.make("bob")
    alice_secret, alice_codes = turn_on_totp(app, alice)
    bob_secret, _bob_codes = turn_on_totp(app, bob)
    browser = app.test_client()
    tab_a = password_step(browser, "alice", password)
    assert "<strong>alice</strong>" in tab_a.text
    tab_b = password_step(browser, "bob", password)
    assert "<strong>bob</strong>" in tab_b.text
    assert tab_a.login_id() != tab_b.login_id()

    typed = code_at(alice_secret) if kind == "app code" else alice_codes[0]
    stale = send_code(browser, tab_a, typed)
    assert stale.status_code == 409, stale.get_data(as_text=True)[:500]
    body = stale.get_data(as_text=True)
    assert REPLACED in body and "Start again" in body and 'href="/login"' in body
    assert logged_in_as(app, browser) is None
    # Checked against nobody: neither account's counter nor audit log has it.
    assert second_step_open(protection, bob) and second_step_open(protection, alice)
    assert failures(app, bob.id) == [] and failures(app, alice.id) == []
    if kind == "recovery code":
        from meta import totp

        with app.extensions["srcore"].db.transaction() as session:
            assert totp.unused_recovery_codes(session, alice.id) == totp.RECOVERY_CODES

    # Bob's page, his login, still logs him in with his code.
    done = send_code(browser, tab_b, code_at(bob_secret, 1))
    assert done.status_code == 302 and done.headers["Location"] == "/profile"
    assert logged_in_as(app, browser) == bob.id


def test_the_same_accounts_password_again_keeps_its_older_page_working(
    app: Any, accounts: Any, password: str
) -> None:
    """Only another account's login replaces one: alice's password typed again in a second
    tab leaves the first tab's page answering for her (the same person, the same account)."""
    alice = accounts.make("alice")
    secret, _codes = turn_on_totp(app, alice)
    browser = app.test_client()
    first = password_step(browser, "alice", password)
    second = password_step(browser, "alice", password)
    assert first.login_id() == second.login_id()
    done = send_code(browser, first, code_at(secret))
    assert done.status_code == 302 and logged_in_as(app, browser) == alice.id


# -- a passkey as the second factor -------------------------------------------------------------


def soft_key(app: Any) -> SoftKey:
    from meta.passkeys import RelyingParty

    rp = RelyingParty.from_origin(str(app.extensions["srcore"].section["origin"]), "x")
    return SoftKey(rp_id=rp.id, origin=rp.origin)


def add_passkey(app: Any, user: Any, password: str) -> SoftKey:
    client = log_in_client(app.test_client(), user)
    key = soft_key(app)
    page = open_page(client, "/security/passkeys")
    options = client.post(
        "/security/passkeys/options",
        data={"name": f"{user.username}'s", "current_password": password, "csrf_token": page.csrf},
        headers=JSON,
    )
    assert options.status_code == 200, options.get_data(as_text=True)
    done = post_json(client, "/security/passkeys", key.create(options.get_json()), page)
    assert done.status_code == 200, done.get_data(as_text=True)
    return key


def test_alices_passkey_on_her_replaced_page_counts_on_nobody(
    app: Any, accounts: Any, password: str
) -> None:
    protection = one_failure_locks(app)
    alice, bob = accounts.make("alice"), accounts.make("bob")
    alices_key, bobs_key = add_passkey(app, alice, password), add_passkey(app, bob, password)
    browser = app.test_client()
    tab_a = password_step(browser, "alice", password)
    tab_b = password_step(browser, "bob", password)

    # Her page's button asks for a challenge: none is given, for anyone's keys.
    asked = post_json(browser, tab_a.data("options"), {}, tab_a)
    assert asked.status_code == 409, asked.get_data(as_text=True)[:300]
    assert REPLACED in asked.get_json()["errors"][0]["reason"]
    # Nor is her key's answer (to a challenge bob's page was given) checked against bob.
    challenge = post_json(browser, tab_b.data("options"), {}, tab_b)
    assert challenge.status_code == 200
    answered = post_json(browser, tab_a.data("finish"), alices_key.get(challenge.get_json()), tab_a)
    assert answered.status_code == 409, answered.get_data(as_text=True)[:300]
    assert logged_in_as(app, browser) is None
    assert second_step_open(protection, bob) and second_step_open(protection, alice)
    assert failures(app, bob.id) == [] and failures(app, alice.id) == []

    # Bob's page, his passkey: in.
    challenge = post_json(browser, tab_b.data("options"), {}, tab_b)
    done = post_json(browser, tab_b.data("finish"), bobs_key.get(challenge.get_json()), tab_b)
    assert done.status_code == 200, done.get_data(as_text=True)[:300]
    assert logged_in_as(app, browser) == bob.id


# -- reset links of two accounts in two tabs ----------------------------------------------------


def mailed_link(app: Any, csrf: Any, smtp_sink: Any, address: str) -> str:
    csrf.post(app.test_client(), "/forgot", {"email": address})
    return str(smtp_sink.last_link(address, "/reset/"))


def test_reset_pages_of_two_accounts_each_keep_their_passkeys_proof(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any, password: str
) -> None:
    """Alice's reset link in one tab, bob's in another, each proved with its account's
    passkey: bob's proof does not take the place of alice's, and each page then takes its
    new password (the other's proof outlives the login the first one starts)."""
    alice, bob = accounts.make("alice"), accounts.make("bob")
    alices_key, bobs_key = add_passkey(app, alice, password), add_passkey(app, bob, password)
    alices_link = mailed_link(app, csrf, smtp_sink, "alice@example.org")
    bobs_link = mailed_link(app, csrf, smtp_sink, "bob@example.org")
    browser = app.test_client()
    for link, key in ((alices_link, alices_key), (bobs_link, bobs_key)):
        page = open_page(browser, link)
        options = post_json(browser, f"{link}/passkey/options", {}, page)
        assert options.status_code == 200, options.get_data(as_text=True)[:300]
        proved = post_json(browser, f"{link}/passkey", key.get(options.get_json()), page)
        assert proved.status_code == 200, proved.get_data(as_text=True)[:300]

    for link, user in ((alices_link, alice), (bobs_link, bob)):
        page = open_page(browser, link)
        assert 'name="password"' in page.text, f"{user.username}'s page asks for a passkey again"
        done = browser.post(link, data={"password": NEW_PASSWORD, "csrf_token": page.csrf})
        assert done.status_code == 302, done.get_data(as_text=True)[:500]
        assert logged_in_as(app, browser) == user.id
    assert failures(app, alice.id) == [] and failures(app, bob.id) == []


# -- two tabs of Chromium ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.mark.browser
@pytest.mark.slow
def test_two_tabs_of_chromium_each_answer_for_their_own_login(
    app: Any, app_url: str, accounts: Any, password: str, chromium: Any
) -> None:
    protection = one_failure_locks(app)
    alice, bob = accounts.make("alice"), accounts.make("bob")
    alice_secret, _codes = turn_on_totp(app, alice)
    bob_secret, _codes = turn_on_totp(app, bob)
    context = chromium.new_context()
    try:
        tabs = {name: context.new_page() for name in ("alice", "bob")}
        for name, tab in tabs.items():
            tab.set_default_timeout(STEP_MS)
            tab.goto(app_url + "/login")
            tab.get_by_label("Username or email").fill(name)
            tab.get_by_label("Password").fill(password)
            tab.get_by_role("button", name="Log in").click()
            tab.wait_for_url(app_url + "/login/verify")

        tab_a = tabs["alice"]
        tab_a.get_by_label("Code").fill(code_at(alice_secret))
        tab_a.get_by_role("button", name="Log in").click()
        tab_a.get_by_role("heading", name="Login replaced").wait_for()
        assert REPLACED in tab_a.locator("#login-replaced").inner_text()
        assert second_step_open(protection, bob) and second_step_open(protection, alice)
        assert failures(app, bob.id) == [] and failures(app, alice.id) == []

        tab_b = tabs["bob"]
        assert tab_b.locator(".page-header strong").inner_text() == "bob"
        tab_b.get_by_label("Code").fill(code_at(bob_secret, 1))
        tab_b.get_by_role("button", name="Log in").click()
        tab_b.wait_for_url(app_url + "/profile")
        assert "Logged in as bob." in tab_b.content()
    finally:
        context.close()
