"""An outsider against meta's login: raw HTTP from other client addresses (each a source
address of 127.0.0.0/8), TOTP codes computed by pyotp, on both databases.

* Whoever has the password cannot guess the second step's codes without end: a right
  password clears the account's password counter, never the second step's, so logging in
  again between guesses (from a new address each time the last one is locked) gains
  nothing.
* Whoever knows a username can lock the account out of new browsers, but not out of the
  browsers its owner logged in from before (by password and code, or by passkey).
"""

from __future__ import annotations

import http.client
import re
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import pyotp
from meta_constants import PASSWORD

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
_COOKIE = re.compile(r"^([^=;\s]+)=([^;]*)")


class Browser:
    """A bare HTTP/1.1 client over :mod:`http.client` with a cookie jar, connecting from
    *source* (a 127.0.0.0/8 address): the client address meta counts."""

    def __init__(self, base: str, source: str = "127.0.0.1") -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.source = source
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, form: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str]:
        conn = http.client.HTTPConnection(
            self.host, self.port, timeout=30, source_address=(self.source, 0)
        )
        try:
            headers = {"Host": f"{self.host}:{self.port}"}
            if self.cookies:
                headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
            body = None
            if form is not None:
                body = urlencode(form).encode()
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            text = response.read().decode("utf-8", "replace")
            for value in response.headers.get_all("Set-Cookie") or []:
                match = _COOKIE.match(value)
                if match:
                    self.cookies[match.group(1)] = match.group(2)
            return response.status, dict(response.headers.items()), text
        finally:
            conn.close()

    def post(self, path: str, form: dict[str, str], page: str) -> tuple[int, dict[str, str], str]:
        """POST *form* with the CSRF token of *page*, as a browser sends a form it showed."""
        status, _headers, text = self.request("GET", page)
        assert status == 200, (page, status)
        match = _CSRF.search(text)
        assert match, page
        return self.request("POST", path, {**form, "csrf_token": match.group(1)})


def _no_delays(app: Any) -> None:
    """meta's throttles with no growing delays before the lockout (5 failures of an account,
    20 of an address): what a run counts does not depend on how fast it runs."""
    from meta.protection import LoginProtection

    from srcore.throttle import Throttle, make_store

    store, lockout = make_store(""), timedelta(minutes=15)
    app.extensions["meta"].protection = LoginProtection(
        account=Throttle(store, max_failures=5, free_failures=5, lockout=lockout, prefix="t"),
        address=Throttle(store, max_failures=20, free_failures=20, lockout=lockout, prefix="t"),
    )


def _turn_on(app: Any, user_id: int) -> str:
    from meta import totp

    secret = pyotp.random_base32(32)
    with app.extensions["srcore"].db.transaction() as session:
        totp.add_factor(session, user_id, secret, 0)
    return secret


def _wrong_codes(secret: str, count: int) -> list[str]:
    """*count* codes no step near now has (a step either side and one more, for a slow run)."""
    now = datetime.now(UTC)
    valid = {pyotp.TOTP(secret).at(now + timedelta(seconds=30 * offset)) for offset in range(-3, 4)}
    return [code for code in (f"{n:06d}" for n in range(count + len(valid))) if code not in valid][
        :count
    ]


def test_a_right_password_does_not_buy_more_guesses_at_the_code(
    app: Any, app_url: str, accounts: Any
) -> None:
    """Password, three wrong codes, the password again from a new address, three more...:
    the second step's counter holds across sessions and addresses, so at most
    ``login-max-failures`` codes are ever checked, and then the right code waits too."""
    _no_delays(app)
    alice = accounts.make("alice")
    secret = _turn_on(app, alice.id)
    guesses = iter(_wrong_codes(secret, 30))
    checked = refused = 0
    for round_ in range(10):
        attacker = Browser(app_url, f"127.0.0.{10 + round_}")
        status, headers, _ = attacker.post(
            "/login", {"login": "alice", "password": PASSWORD}, "/login"
        )
        if status == 429:
            # The password form itself is locked for the account by the wrong codes.
            refused += 1
            continue
        assert status == 302 and headers["Location"].endswith("/login/verify"), status
        for _ in range(3):
            status, _headers, text = attacker.post(
                "/login/verify", {"code": next(guesses)}, "/login/verify"
            )
            assert status in (400, 429), status
            if status == 400:
                assert "This code is not right." in text
                checked += 1
            else:
                refused += 1
    assert checked == 5, f"{checked} wrong codes were checked"
    assert refused > 0
    # Now even the right code from a fresh address is refused until the lockout passes.
    late = Browser(app_url, "127.0.0.99")
    status, _headers, _ = late.post("/login", {"login": "alice", "password": PASSWORD}, "/login")
    if status == 302:
        status, _headers, _ = late.post(
            "/login/verify", {"code": pyotp.TOTP(secret).now()}, "/login/verify"
        )
    assert status == 429


def _lock(app_url: str, name: str, source: str) -> None:
    """Fail five logins of *name* from *source*: the lockout of an account by whoever
    knows its name."""
    attacker = Browser(app_url, source)
    statuses = [
        attacker.post("/login", {"login": name, "password": "not the password"}, "/login")[0]
        for _ in range(6)
    ]
    assert statuses == [400] * 5 + [429], statuses


def test_a_stranger_locking_an_account_does_not_lock_out_its_owners_browser(
    app: Any, app_url: str, accounts: Any
) -> None:
    """Five wrong passwords for alice lock out new browsers (her name is no secret), but
    the browser she logged in from before still gets in with her password, and its own
    wrong passwords count on its own counter."""
    _no_delays(app)
    accounts.make("alice")
    owner = Browser(app_url, "127.0.0.2")
    status, _headers, _ = owner.post("/login", {"login": "alice", "password": PASSWORD}, "/login")
    assert status == 302
    assert owner.post("/logout", {}, "/profile")[0] == 302

    _lock(app_url, "alice", "127.0.0.66")
    stranger = Browser(app_url, "127.0.0.67")
    assert stranger.post("/login", {"login": "alice", "password": PASSWORD}, "/login")[0] == 429
    # Another account's known-device cookie does not make a browser known to alice.
    accounts.make("mallory")
    mallory = Browser(app_url, "127.0.0.68")
    assert mallory.post("/login", {"login": "mallory", "password": PASSWORD}, "/login")[0] == 302
    assert mallory.post("/logout", {}, "/profile")[0] == 302
    assert "meta_device" in mallory.cookies
    assert mallory.post("/login", {"login": "alice", "password": PASSWORD}, "/login")[0] == 429
    # Nor does a cookie that was not signed here.
    forged = Browser(app_url, "127.0.0.69")
    forged.cookies["meta_device"] = "W1sxLCJ4In1d.forged"
    assert forged.post("/login", {"login": "alice", "password": PASSWORD}, "/login")[0] == 429

    status, headers, _ = owner.post("/login", {"login": "alice", "password": PASSWORD}, "/login")
    assert status == 302 and headers["Location"].endswith("/profile"), status
    assert owner.request("GET", "/profile")[0] == 200
    assert owner.post("/logout", {}, "/profile")[0] == 302
    # Her browser's own failures lock her browser, as any browser's would.
    wrong = [
        owner.post("/login", {"login": "alice", "password": "a typo"}, "/login")[0]
        for _ in range(6)
    ]
    assert wrong == [400] * 5 + [429], wrong
    assert owner.post("/login", {"login": "alice", "password": PASSWORD}, "/login")[0] == 429


def test_the_owners_browser_passes_the_second_step_of_a_locked_account(
    app: Any, app_url: str, accounts: Any
) -> None:
    """The account locked by strangers, the owner's known browser is asked for the code
    and the code logs it in (the second step counts on the browser's counter too)."""
    _no_delays(app)
    alice = accounts.make("alice")
    secret = _turn_on(app, alice.id)
    owner = Browser(app_url, "127.0.0.3")
    owner.post("/login", {"login": "alice", "password": PASSWORD}, "/login")
    first = pyotp.TOTP(secret).at(datetime.now(UTC) - timedelta(seconds=30))
    status, headers, _ = owner.post("/login/verify", {"code": first}, "/login/verify")
    assert status == 302 and headers["Location"].endswith("/profile"), status
    assert owner.post("/logout", {}, "/profile")[0] == 302

    _lock(app_url, "alice", "127.0.0.77")
    status, headers, _ = owner.post("/login", {"login": "alice", "password": PASSWORD}, "/login")
    assert status == 302 and headers["Location"].endswith("/login/verify"), status
    later = pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30))
    status, headers, _ = owner.post("/login/verify", {"code": later}, "/login/verify")
    assert status == 302 and headers["Location"].endswith("/profile"), status
    # Changing the password asks for the current one, on the browser's counter too.
    status, _headers, _ = owner.post(
        "/password",
        {"current_password": PASSWORD, "password": "another long passphrase"},
        "/password",
    )
    assert status == 302, status


def test_a_passkey_login_makes_the_browser_known_too(
    app: Any, app_url: str, accounts: Any, password: str
) -> None:
    """The JSON answer to a passkey login carries the known-device cookie as a password
    login's redirect does: that browser gets in with the password while strangers keep
    the account locked."""
    from test_passkeys import add_passkey, passwordless_options, post_form, post_json

    from srcore.testing import log_in_client

    _no_delays(app)
    alice = accounts.make("alice")
    key = add_passkey(app, log_in_client(app.test_client(), alice), password)
    client = app.test_client()
    done = post_json(client, "/login/passkey", key.get(passwordless_options(client)))
    assert done.status_code == 200, done.get_data(as_text=True)
    assert any(c.startswith("meta_device=") for c in done.headers.getlist("Set-Cookie"))
    assert post_form(client, "/logout", {}, "/profile").status_code == 302

    _lock(app_url, "alice", "127.0.0.88")
    again = post_form(client, "/login", {"login": "alice", "password": password}, "/login")
    # Her account has a passkey: the password leads to the second step, not to a 429.
    assert again.status_code == 302 and again.headers["Location"] == "/login/verify"


def _email_answer(browser: Browser, address: str) -> tuple[int, str, str]:
    """Ask to move the logged-in account to *address*: the status, where it leads, and
    the page it leads to with *address* blanked out."""
    status, headers, _ = browser.post(
        "/email", {"email": address, "current_password": PASSWORD}, "/email"
    )
    location = headers.get("Location", "")
    page = browser.request("GET", location)[2] if status == 302 else ""
    page = re.sub(r'name="csrf_token" value="[^"]+"', "", page)
    return status, location, page.replace(address, "ADDRESS")


def test_the_address_form_does_not_tell_which_addresses_have_accounts(
    app: Any, app_url: str, accounts: Any, smtp_sink: Any
) -> None:
    """Any account could ask to move to address after address and read which are taken:
    a taken one is answered as a free one is, and only its mailbox hears (no link)."""
    accounts.make("alice", email="alice@corp.example")
    accounts.make("mallory")
    mallory = Browser(app_url, "127.0.0.5")
    assert mallory.post("/login", {"login": "mallory", "password": PASSWORD}, "/login")[0] == 302

    free = _email_answer(mallory, "nobody@corp.example")
    taken = _email_answer(mallory, "alice@corp.example")
    assert taken == free
    assert taken[0] == 302
    [told] = smtp_sink.to("alice@corp.example")
    text = told.get_content()
    assert "mallory" in text and "nothing changes" in text
    assert "/confirm/" not in text
    # The old address hears of both requests alike.
    notices = smtp_sink.to("mallory@example.org")
    assert len(notices) == 2
    assert notices[0]["Subject"] == notices[1]["Subject"]


def test_many_addresses_asking_for_reset_links_do_not_fill_a_mailbox(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any
) -> None:
    """Twenty addresses each ask once for alice's reset link (each within its own limit):
    every one gets the same answer, alice gets three links, and the last one works."""
    accounts.make("alice")
    answers = set()
    for n in range(20):
        client = app.test_client()
        client.environ_base["REMOTE_ADDR"] = f"192.0.2.{n + 1}"
        response = csrf.post(client, "/forgot", {"email": "alice@example.org"})
        answers.add((response.status_code, response.get_data(as_text=True).count("alice@")))
    assert len(answers) == 1 and next(iter(answers))[0] == 200
    mails = smtp_sink.to("alice@example.org")
    assert len(mails) == 3, len(mails)
    link = smtp_sink.last_link("alice@example.org", "/reset/")
    assert app.test_client().get(link).status_code == 200
