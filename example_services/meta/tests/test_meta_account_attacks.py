"""An outsider against meta's login: raw HTTP from other client addresses (each a source
address of 127.0.0.0/8), TOTP codes computed by pyotp, on both databases.

* Whoever has the password cannot guess the second step's codes without end: a right
  password clears the account's password counter, never the second step's, so logging in
  again between guesses (from a new address each time the last one is locked) gains
  nothing.
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
