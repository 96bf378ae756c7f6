"""meta's mailed links and one-time secrets, tried as an attacker and a confused user would:
a link altered, used twice, used by another logged-in account or after the account moved on;
the second step of a login fed hostile codes; the consent form forged; and two requests
racing to spend the same secret, of which exactly one may win."""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import pyotp
import pytest
from meta_constants import PASSWORD
from oauth_helpers import (
    authorize_url,
    exchange,
    get_code,
    oauth_app,
    pkce,
    query_of,
    register_client,
)
from sqlalchemy import func, select

from srcore.testing import log_in_client
from srcore.throttle import Throttle

__all__ = ["oauth_app"]  # a fixture used by this module

NEW_PASSWORD = "a brand new passphrase"
#: How long a racing request may wait for the other at the barrier (a bound, not a timing).
BARRIER_SECONDS = 10


def _token(client: Any, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def _post(client: Any, path: str, data: dict[str, str], page: str = "/forgot") -> Any:
    return client.post(path, data={**data, "csrf_token": _token(client, page)})


def _issue(app: Any, user: Any, purpose: str, email: str | None = None) -> str:
    from meta import logic
    from meta.models import TokenPurpose, User

    with app.extensions["srcore"].db.transaction() as session:
        row = session.get(User, user.id)
        if purpose == "change-email":
            row.pending_email = email
        return logic.issue_token(
            session,
            row,
            TokenPurpose(purpose),
            email=email or row.email,
            lifetime=timedelta(hours=1),
        )


def _password_is(app: Any, user_id: int, password: str) -> bool:
    user = _account(app, user_id)
    return bool(app.extensions["meta"].passwords.verify(user.password_hash, password))


def _account(app: Any, user_id: int) -> Any:
    from meta.models import User

    with app.extensions["srcore"].db.transaction() as session:
        return session.get(User, user_id)


def _audit_count(app: Any, user_id: int, kind: str) -> int:
    from meta.models import AuditEntry

    with app.extensions["srcore"].db.transaction() as session:
        return int(
            session.scalar(
                select(func.count(AuditEntry.id)).where(
                    AuditEntry.user_id == user_id, AuditEntry.kind == kind
                )
            )
            or 0
        )


def _uid(client: Any) -> Any:
    """The account this browser is logged in as at meta, or None."""
    if client.get("/profile").status_code != 200:
        return None
    with client.session_transaction() as cookie:
        return cookie.get("_uid")


# -- an altered link -------------------------------------------------------------------------


def _variants(secret: str) -> list[str]:
    """The link's token as a mail client, a copy and paste or an attacker may change it."""
    return [
        secret.swapcase(),
        secret[:-1],
        secret[:20],
        secret + "x",
        secret + "%00",
        "%00" + secret,
        secret + "%ED%A0%80",  # an encoded lone surrogate
        secret + "%FF",  # not UTF-8
        secret + "/",
        secret + "%2F",
        secret + "%20",
        secret + ";",
        secret + "." * 10_000,
        "x" * 10_000,
    ]


@pytest.mark.parametrize("purpose", ["confirm", "reset"])
def test_an_altered_link_opens_nothing_and_the_exact_one_still_works(
    app: Any, accounts: Any, purpose: str
) -> None:
    from srcore.db import UserType

    alice = accounts.make("alice", confirmed=purpose == "reset")
    secret = _issue(app, alice, purpose)
    client = app.test_client()
    for variant in _variants(secret):
        response = client.get(f"/{purpose}/{variant}")
        assert 400 <= response.status_code < 500, (variant[:40], response.status_code)
        assert "Traceback" not in response.get_data(as_text=True)
    assert _account(app, alice.id).user_type == (
        UserType.unconfirmed if purpose == "confirm" else UserType.active
    )
    # Percent-encoding every character is the same URL: it is the link itself.
    encoded = "".join(f"%{byte:02X}" for byte in secret.encode())
    if purpose == "confirm":
        assert client.get(f"/confirm/{encoded}").status_code == 302
        assert _account(app, alice.id).user_type == UserType.active
        assert client.get(f"/confirm/{secret}").status_code == 404  # spent
        return
    assert client.get(f"/reset/{encoded}").status_code == 200
    for variant in _variants(secret)[:4]:
        refused = client.post(
            f"/reset/{quote(variant)}",
            data={"password": NEW_PASSWORD, "csrf_token": _token(client, "/forgot")},
        )
        assert refused.status_code == 404
    assert _password_is(app, alice.id, PASSWORD)
    done = _post(client, f"/reset/{secret}", {"password": NEW_PASSWORD})
    assert done.status_code == 302
    assert _password_is(app, alice.id, NEW_PASSWORD)


def test_an_expired_reset_link_changes_nothing(app: Any, accounts: Any) -> None:
    from meta.models import EmailToken

    from srcore.db import utcnow

    alice = accounts.make("alice")
    secret = _issue(app, alice, "reset")
    client = app.test_client()
    page = _token(client, f"/reset/{secret}")
    with app.extensions["srcore"].db.transaction() as session:
        for token in session.scalars(select(EmailToken)):
            token.expires = utcnow() - timedelta(seconds=1)
    late = client.post(f"/reset/{secret}", data={"password": NEW_PASSWORD, "csrf_token": page})
    assert late.status_code == 404
    assert _password_is(app, alice.id, PASSWORD) and _uid(client) is None


# -- another account's link, a link the account moved past ----------------------------------


def test_bob_opening_alices_confirmation_link_confirms_alice_and_leaves_bob_alone(
    app: Any, accounts: Any
) -> None:
    from srcore.db import UserType

    alice = accounts.make("alice", confirmed=False)
    bob = accounts.make("bob")
    secret = _issue(app, alice, "confirm")
    browser = log_in_client(app.test_client(), bob)
    opened = browser.get(f"/confirm/{secret}", follow_redirects=True)
    assert opened.status_code == 200
    assert _account(app, alice.id).user_type == UserType.active
    assert _account(app, bob.id).email == "bob@example.org"
    assert _uid(browser) == bob.id
    # The page says whose address it was, not "your address" to bob.
    text = opened.get_data(as_text=True)
    assert "alice@example.org" in text and "Your address alice@example.org" not in text


def test_bob_opening_alices_email_change_link_moves_alices_address_not_his(
    app: Any, accounts: Any
) -> None:
    alice = accounts.make("alice")
    bob = accounts.make("bob")
    secret = _issue(app, alice, "change-email", "alice@new.example.org")
    browser = log_in_client(app.test_client(), bob)
    assert browser.get(f"/confirm/{secret}").status_code == 302
    assert _account(app, alice.id).email == "alice@new.example.org"
    assert _account(app, bob.id).email == "bob@example.org"
    assert _uid(browser) == bob.id
    assert _audit_count(app, bob.id, "email-changed") == 0


def test_bob_using_alices_reset_link_changes_alices_password_and_ends_his_session(
    app: Any, accounts: Any
) -> None:
    alice = accounts.make("alice")
    bob = accounts.make("bob")
    secret = _issue(app, alice, "reset")
    browser = log_in_client(app.test_client(), bob)
    with browser.session_transaction() as cookie:
        bobs_cookie = dict(cookie)
    done = _post(browser, f"/reset/{secret}", {"password": NEW_PASSWORD})
    assert done.status_code == 302
    assert _password_is(app, alice.id, NEW_PASSWORD) and _password_is(app, bob.id, PASSWORD)
    # The browser is the link's account now; the session bob had there is over.
    assert _uid(browser) == alice.id
    copy = app.test_client()
    with copy.session_transaction() as cookie:
        cookie.update(bobs_cookie)
    assert copy.get("/profile").status_code == 302


def test_bob_using_alices_reset_link_with_a_second_factor_logs_nobody_in_as_alice(
    app: Any, accounts: Any
) -> None:
    from meta import totp

    alice = accounts.make("alice")
    bob = accounts.make("bob")
    with app.extensions["srcore"].db.transaction() as session:
        totp.add_factor(session, alice.id, pyotp.random_base32(32), 0)
    secret = _issue(app, alice, "reset")
    browser = log_in_client(app.test_client(), bob)
    # The reset page asks for the code itself: without it, or with a wrong one, nothing
    # changes and bob stays bob.
    done = _post(browser, f"/reset/{secret}", {"password": NEW_PASSWORD})
    assert done.status_code == 400 and _uid(browser) == bob.id
    wrong = _post(browser, f"/reset/{secret}", {"password": NEW_PASSWORD, "code": "000000"})
    assert wrong.status_code == 400 and _uid(browser) == bob.id


@pytest.mark.parametrize("how", ["reset link", "password page"])
def test_a_pending_address_change_dies_with_a_password_change(
    app: Any, accounts: Any, how: str
) -> None:
    """Someone who knew the password asked to move the address to theirs; the owner takes
    the account back with a new password. The link in the other's mailbox must not then
    move the address (and with it every future reset link) to them."""
    alice = accounts.make("alice")
    hijack = _issue(app, alice, "change-email", "mallory@example.org")
    owner = app.test_client()
    if how == "reset link":
        reset = _issue(app, alice, "reset")
        assert _post(owner, f"/reset/{reset}", {"password": NEW_PASSWORD}).status_code == 302
    else:
        log_in_client(owner, alice)
        data = {"current_password": PASSWORD, "password": NEW_PASSWORD}
        assert _post(owner, "/password", data, "/password").status_code == 302
        shown = owner.get("/profile").get_data(as_text=True)
        assert "change of address to mallory@example.org is cancelled" in shown
    assert _account(app, alice.id).pending_email is None
    response = app.test_client().get(f"/confirm/{hijack}")
    assert response.status_code == 404
    assert _account(app, alice.id).email == "alice@example.org"


def test_a_confirmation_link_to_an_address_the_account_left_confirms_nothing(
    app: Any, accounts: Any
) -> None:
    from srcore.db import UserType

    alice = accounts.make("alice", confirmed=False)
    old = _issue(app, alice, "confirm")
    move = _issue(app, alice, "change-email", "alice@new.example.org")
    assert app.test_client().get(f"/confirm/{move}").status_code == 302
    refused = app.test_client().get(f"/confirm/{old}")
    assert refused.status_code in (400, 404)
    user = _account(app, alice.id)
    assert user.email == "alice@new.example.org" and user.user_type == UserType.active


# -- the login's second step -----------------------------------------------------------------


@pytest.fixture
def halfway(app: Any, accounts: Any) -> tuple[Any, Any, str, list[str]]:
    """alice with TOTP, and a browser that typed her password: (browser, alice, secret, codes)."""
    from meta import totp

    alice = accounts.make("alice")
    secret = pyotp.random_base32(32)
    with app.extensions["srcore"].db.transaction() as session:
        codes = totp.add_factor(session, alice.id, secret, 0)
    browser = app.test_client()
    first = _post(browser, "/login", {"login": "alice", "password": PASSWORD})
    assert first.headers["Location"] == "/login/verify"
    return browser, alice, secret, codes


def _right_code(secret: str) -> str:
    return pyotp.TOTP(secret).now()


def test_hostile_codes_are_a_clear_400_and_spend_nothing(
    app: Any, halfway: tuple[Any, Any, str, list[str]]
) -> None:
    browser, alice, secret, codes = halfway
    right = _right_code(secret)
    # The right code in full-width or superscript forms is the right code (read in NFKC
    # form, as test_two_factor shows); digits of another script are not.
    arabic = right.translate({ord(d): 0x0660 + int(d) for d in "0123456789"})
    texts = [
        right[:3] + "\x00" + right[3:],
        "\x00" * 6,
        arabic,
        " " * 6,
        "\t" + right + "\u200b",
        right + "0",
        "9" * 10_000,
        codes[0].upper().replace("-", "\u2010"),
    ]
    page = _token(browser, "/login/verify")
    for text in texts:
        response = browser.post("/login/verify", data={"code": text, "csrf_token": page})
        assert response.status_code in (400, 429), (text[:20], response.status_code)
        assert _uid(browser) is None
    # Raw bytes no decoder accepts: a lone surrogate, a byte that is not UTF-8.
    for raw in (b"%ED%A0%80%ED%A0%80", b"%FF%FE", b"12%C0%B0456"):
        response = browser.post(
            "/login/verify",
            data=b"code=" + raw + b"&csrf_token=" + page.encode(),
            content_type="application/x-www-form-urlencoded",
        )
        assert response.status_code in (400, 429), (raw, response.status_code)
    from meta import totp

    with app.extensions["srcore"].db.transaction() as session:
        assert totp.unused_recovery_codes(session, alice.id) == len(codes)
        factor = totp.factor_of(session, alice.id)
        assert factor is not None and factor.last_counter == 0


def test_a_second_step_needs_this_browsers_first_step(
    app: Any, accounts: Any, halfway: tuple[Any, Any, str, list[str]]
) -> None:
    _browser, alice, secret, _codes = halfway
    bob = accounts.make("bob")
    # Another browser, logged in as bob, sends alice's right code: there is no login of
    # alice's halfway there, so nothing happens to either account; bob, logged in, is
    # sent to his profile.
    other = log_in_client(app.test_client(), bob)
    response = _post(other, "/login/verify", {"code": _right_code(secret)})
    assert response.status_code == 302 and response.headers["Location"] == "/profile"
    assert _uid(other) == bob.id
    # A forged pending state (the cookie is signed) is not read as one.
    forged = app.test_client()
    forged.set_cookie("session", f'{{"_meta_2fa": {{"uid": {alice.id}, "at": 9e99}}}}')
    refused = _post(forged, "/login/verify", {"code": _right_code(secret)})
    assert refused.status_code == 302 and refused.headers["Location"] == "/login"
    assert _uid(forged) is None


# -- the consent form --------------------------------------------------------------------------


def _consents(app: Any, user_id: int) -> list[str]:
    from meta.oauth.models import Consent

    with app.extensions["srcore"].db.transaction() as session:
        return list(session.scalars(select(Consent.scope).where(Consent.user_id == user_id)))


def test_a_forged_consent_post_grants_nothing(oauth_app: Any, accounts: Any) -> None:
    gadget = register_client(oauth_app, accounts, confidential=True)
    alice = accounts.make("alice")
    bob = accounts.make("bob")
    alices = log_in_client(oauth_app.test_client(), alice)
    bobs = log_in_client(oauth_app.test_client(), bob)
    url = authorize_url(gadget["id"], "https://app.example/cb", challenge=pkce()[1])
    assert alices.get(url).status_code == 200
    bobs_token = _token(bobs, url)

    def refused(response: Any) -> None:
        assert response.status_code in (400, 401), response.status_code
        assert "Location" not in response.headers
        assert "code=" not in response.get_data(as_text=True)

    refused(alices.post(url, data={"decision": "approve"}))
    refused(alices.post(url, data={"decision": "approve", "csrf_token": bobs_token}))
    refused(alices.post(url, data={"decision": "approve", "csrf_token": "x" * 10_000}))
    # Parameters in the form beside the query's: a second value is refused, not chosen.
    token = _token(alices, url)
    for name, value in (
        ("scope", "todo/tickets:RW meta/profile:RW"),
        ("client_id", "todo"),
        ("redirect_uri", "https://evil.invalid/cb"),
        ("response_type", "token"),
    ):
        refused(alices.post(url, data={"decision": "approve", "csrf_token": token, name: value}))
    # A logged-out browser with a token of its own.
    stranger = oauth_app.test_client()
    own = _token(stranger, "/forgot")
    refused(stranger.post(url, data={"decision": "approve", "csrf_token": own}))
    assert _consents(oauth_app, alice.id) == [] and _consents(oauth_app, bob.id) == []


def test_a_replayed_consent_post_records_one_consent_and_a_new_code_each_time(
    oauth_app: Any, accounts: Any
) -> None:
    gadget = register_client(oauth_app, accounts, confidential=True)
    alice = accounts.make("alice")
    browser = log_in_client(oauth_app.test_client(), alice)
    url = authorize_url(gadget["id"], "https://app.example/cb", challenge=pkce()[1])
    token = _token(browser, url)
    first = browser.post(url, data={"decision": "approve", "csrf_token": token})
    second = browser.post(url, data={"decision": "approve", "csrf_token": token})
    codes = {query_of(r.headers["Location"])["code"] for r in (first, second)}
    assert len(codes) == 2
    assert _consents(oauth_app, alice.id) == ["meta/profile:RO"]
    # A denial after the approval takes nothing back by itself, and grants nothing new.
    denied = browser.post(url, data={"decision": "deny", "csrf_token": token})
    assert denied.status_code == 302
    assert _consents(oauth_app, alice.id) == ["meta/profile:RO"]


# -- two requests racing for one secret ------------------------------------------------------


def _race(*calls: Callable[[], Any]) -> list[Any]:
    """Run *calls* at once on threads (each with its own test client); their results."""
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(BARRIER_SECONDS * 3)
    assert not any(thread.is_alive() for thread in threads), "a racing request hung"
    assert errors == []
    return results


def _meet_after(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, parties: int) -> None:
    """Make *module.name* wait, after it returns, until *parties* callers have returned
    from it: every racer has read the secret as unspent before any spends it."""
    original = getattr(module, name)
    barrier = threading.Barrier(parties, timeout=BARRIER_SECONDS)

    def waiting(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        # A racer that left early (refused before reading) leaves the other to go on alone.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait()
        return result

    monkeypatch.setattr(module, name, waiting)


def test_two_racing_resets_with_one_link_change_the_password_once(
    app: Any, accounts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meta import logic

    alice = accounts.make("alice")
    secret = _issue(app, alice, "reset")
    passwords = [NEW_PASSWORD + " one", NEW_PASSWORD + " two"]
    clients = [app.test_client() for _ in passwords]
    pages = [_token(c, f"/reset/{secret}") for c in clients]
    _meet_after(monkeypatch, logic, "find_token", 2)

    def reset(i: int) -> Callable[[], Any]:
        return lambda: clients[i].post(
            f"/reset/{secret}", data={"password": passwords[i], "csrf_token": pages[i]}
        )

    results = _race(reset(0), reset(1))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [302, 404], statuses
    winner = next(i for i, r in enumerate(results) if r.status_code == 302)
    assert _password_is(app, alice.id, passwords[winner])
    assert _audit_count(app, alice.id, "password-changed") == 1
    assert [_uid(c) for c in clients].count(alice.id) == 1


def test_two_racing_openings_of_one_address_change_link_apply_it_once(
    app: Any, accounts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meta import logic

    alice = accounts.make("alice")
    secret = _issue(app, alice, "change-email", "alice@new.example.org")
    clients = [app.test_client() for _ in range(2)]
    _meet_after(monkeypatch, logic, "find_token", 2)
    results = _race(*(lambda c=c: c.get(f"/confirm/{secret}") for c in clients))
    assert sorted(r.status_code for r in results) == [302, 404]
    assert _account(app, alice.id).email == "alice@new.example.org"
    assert _audit_count(app, alice.id, "email-changed") == 1


@pytest.mark.parametrize("kind", ["recovery code", "app code"])
def test_two_racing_second_steps_with_one_code_log_in_once(
    app: Any, accounts: Any, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    from meta import totp

    alice = accounts.make("alice")
    secret = pyotp.random_base32(32)
    with app.extensions["srcore"].db.transaction() as session:
        codes = totp.add_factor(session, alice.id, secret, 0)
    clients = [app.test_client() for _ in range(2)]
    for client in clients:
        assert _post(client, "/login", {"login": "alice", "password": PASSWORD}).status_code == 302
    pages = [_token(c, "/login/verify") for c in clients]
    code = codes[0] if kind == "recovery code" else _right_code(secret)
    # One attempt of an account at a time (srcore.throttle's turns) refuses the second
    # before it reads the code: both are let through, so that what races is the spending.
    monkeypatch.setattr(Throttle, "take_turn", lambda self, keys: self.check(keys))
    _meet_after(monkeypatch, totp, "verify_totp", 2)

    def verify(i: int) -> Callable[[], Any]:
        return lambda: clients[i].post("/login/verify", data={"code": code, "csrf_token": pages[i]})

    results = _race(verify(0), verify(1))
    assert sorted(r.status_code for r in results) == [302, 400]
    assert [_uid(c) for c in clients].count(alice.id) == 1
    assert _audit_count(app, alice.id, "factor-used") == 1


def test_two_racing_exchanges_of_one_authorization_code_issue_tokens_once(
    oauth_app: Any, accounts: Any
) -> None:
    alice = accounts.make("alice")
    browser = log_in_client(oauth_app.test_client(), alice)
    verifier, challenge = pkce()
    code = get_code(browser, (verifier, challenge))
    clients = [oauth_app.test_client() for _ in range(2)]
    barrier = threading.Barrier(2, timeout=BARRIER_SECONDS)

    def spend(client: Any) -> Callable[[], Any]:
        def run() -> Any:
            barrier.wait()
            return exchange(client, code, verifier)

        return run

    results = _race(spend(clients[0]), spend(clients[1]))
    assert sorted(r.status_code for r in results) == [200, 400]


def test_a_reset_that_first_proves_the_address_drops_factors_added_before(
    app: Any, accounts: Any
) -> None:
    """Someone registers with alice's address (never confirmed) and adds a passkey and an
    app. Alice cannot register, so she resets "her" password with the mailed link: the
    account is hers from then on, and what the registrant added must not let them in (a
    passkey logs in alone) nor lock her out (the app's code she does not have)."""
    from meta import passkeys, totp
    from test_passkeys import add_passkey, passwordless_options, post_json

    squatter = accounts.make("squatter", email="alice@example.org", confirmed=False)
    theirs = log_in_client(app.test_client(), squatter)
    key = add_passkey(app, theirs, PASSWORD)
    with app.extensions["srcore"].db.transaction() as session:
        totp.add_factor(session, squatter.id, pyotp.random_base32(32), 0)
    link = _issue(app, squatter, "reset")
    alice = app.test_client()
    done = _post(alice, f"/reset/{link}", {"password": NEW_PASSWORD})
    assert done.status_code == 302 and done.headers["Location"] == "/profile"
    assert _uid(alice) == squatter.id
    with app.extensions["srcore"].db.transaction() as session:
        assert totp.factor_of(session, squatter.id) is None
        assert passkeys.count_of(session, squatter.id) == 0
    stranger = app.test_client()
    refused = post_json(stranger, "/login/passkey", key.get(passwordless_options(stranger)))
    assert refused.status_code != 200 and _uid(stranger) is None
    assert _audit_count(app, squatter.id, "factor-removed") == 1


@pytest.mark.parametrize("purpose", ["confirm", "change-email"])
def test_a_suspended_accounts_link_changes_nothing(app: Any, accounts: Any, purpose: str) -> None:
    from meta import logic

    from srcore.db import UserType

    alice = accounts.make("alice", confirmed=purpose == "change-email")
    secret = _issue(app, alice, purpose, None if purpose == "confirm" else "a@new.example.org")
    with app.extensions["srcore"].db.transaction() as session:
        logic.suspend(session, session.merge(_account(app, alice.id)), "spam")
    response = app.test_client().get(f"/confirm/{secret}")
    assert response.status_code in (400, 404)
    user = _account(app, alice.id)
    assert user.email == "alice@example.org" and user.user_type == UserType.suspended
    assert (user.email_confirmed_at is None) == (purpose == "confirm")


@pytest.mark.parametrize("script_name", ["@attacker.invalid", "//attacker.invalid", "/base", ""])
def test_a_mailed_link_stays_on_meta_whatever_the_script_name(app: Any, script_name: str) -> None:
    """SCRIPT_NAME comes from the server or a proxy in front of it; whatever it holds,
    the link carrying a secret points at meta's configured host."""
    from urllib.parse import urlsplit

    from meta.mails import absolute_url
    from werkzeug.test import EnvironBuilder

    origin = urlsplit(str(app.extensions["srcore"].section["origin"]))
    environ = EnvironBuilder(path="/").get_environ()
    environ["SCRIPT_NAME"] = script_name  # as the server hands it over
    with app.request_context(environ):
        link = urlsplit(absolute_url("accounts.login"))
    assert (link.scheme, link.netloc) == (origin.scheme, origin.netloc)
    assert link.path.endswith("/login")
