"""A mailed reset link does not replace the password of an account with a second factor
unless the factor is given on the reset page too.

Whoever reads the mailbox could otherwise choose the password (ending every session and
token of the account, and locking its owner out of the password) though a login still
asks for the code. Wrong codes count on the login's second-step counter; the link stays
usable until it works or expires; nothing changes on a wrong code. Driven with Flask's
test client through the real forms, codes from pyotp, links from the SMTP sink.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
from passkey_helpers import SoftKey
from sqlalchemy import select

from srcore.testing import log_in_client

NEW_PASSWORD = "a brand new passphrase"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
JSON = {"Accept": "application/json"}


def token(client: Any, path: str) -> str:
    match = _CSRF.search(client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def post(client: Any, path: str, data: dict[str, str], page: str) -> Any:
    return client.post(path, data={**data, "csrf_token": token(client, page)})


def post_json(client: Any, path: str, body: Any, page: str) -> Any:
    return client.post(path, json=body, headers={**JSON, "X-CSRFToken": token(client, page)})


def turn_on_totp(app: Any, user: Any) -> tuple[str, list[str]]:
    from meta import totp

    secret = pyotp.random_base32(32)
    with app.extensions["srcore"].db.transaction() as session:
        codes = totp.add_factor(session, user.id, secret, 0)
    return secret, codes


def code_at(secret: str, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * offset))


def wrong_code(secret: str) -> str:
    good = {code_at(secret, n) for n in (-1, 0, 1, 2)}
    return next(c for c in ("000000", "111111", "222222", "333333", "444444") if c not in good)


def mailed_link(app: Any, csrf: Any, smtp_sink: Any, address: str = "alice@example.org") -> str:
    csrf.post(app.test_client(), "/forgot", {"email": address})
    return str(smtp_sink.last_link(address, "/reset/"))


def password_hash(app: Any, user_id: int) -> str:
    from meta.models import User

    with app.extensions["srcore"].db.transaction() as session:
        user = session.get(User, user_id)
        assert user is not None
        return str(user.password_hash)


def kinds(app: Any, user_id: int, kind: str) -> list[str]:
    from meta.models import AuditEntry

    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.user_id == user_id, AuditEntry.kind == kind)
            .order_by(AuditEntry.id)
        )
        return [str(row.detail) for row in rows]


def amr_of(app: Any, client: Any) -> list[str]:
    from meta import logic
    from meta.views import SESSION_ID

    with client.session_transaction() as cookie:
        secret = cookie.get(SESSION_ID)
    with app.extensions["srcore"].db.transaction() as session:
        return list(logic.web_session_amr(session, secret))


def strict_throttle(app: Any) -> None:
    """Five failures, then the lockout: no growing delays, which a slow run could outlast."""
    from meta.protection import LoginProtection

    from srcore.throttle import Throttle, make_store

    store, lockout = make_store(""), timedelta(minutes=15)
    app.extensions["meta"].protection = LoginProtection(
        account=Throttle(store, max_failures=5, free_failures=5, lockout=lockout, prefix="t"),
        address=Throttle(store, max_failures=50, free_failures=50, lockout=lockout, prefix="t"),
    )


def soft_key(app: Any) -> SoftKey:
    from meta.passkeys import RelyingParty

    rp = RelyingParty.from_origin(str(app.extensions["srcore"].section["origin"]), "x")
    return SoftKey(rp_id=rp.id, origin=rp.origin)


def add_passkey(app: Any, client: Any, password: str, name: str = "laptop") -> SoftKey:
    key = soft_key(app)
    options = client.post(
        "/security/passkeys/options",
        data={
            "name": name,
            "current_password": password,
            "csrf_token": token(client, "/security/passkeys"),
        },
        headers=JSON,
    )
    assert options.status_code == 200, options.get_data(as_text=True)
    done = post_json(client, "/security/passkeys", key.create(options.get_json()), "/security")
    assert done.status_code == 200, done.get_data(as_text=True)
    return key


# -- an authenticator app -------------------------------------------------------------------------


def test_a_reset_link_alone_does_not_change_a_two_factor_accounts_password(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any
) -> None:
    """The mailbox's reader sends the form without a code, then with wrong ones: the
    password, the owner's session and the link are as before."""
    alice = accounts.make("alice")
    secret, _codes = turn_on_totp(app, alice)
    owner = log_in_client(app.test_client(), alice)
    before = password_hash(app, alice.id)
    link = mailed_link(app, csrf, smtp_sink)
    reader = app.test_client()
    page = reader.get(link).get_data(as_text=True)
    assert 'name="code"' in page

    no_code = post(reader, link, {"password": NEW_PASSWORD}, link)
    assert no_code.status_code == 400
    wrong = post(reader, link, {"password": NEW_PASSWORD, "code": wrong_code(secret)}, link)
    assert wrong.status_code == 400
    assert "This code is not right." in wrong.get_data(as_text=True)
    recovery_like = post(reader, link, {"password": NEW_PASSWORD, "code": "abcde-fghij"}, link)
    assert recovery_like.status_code == 400

    assert password_hash(app, alice.id) == before
    assert owner.get("/profile").status_code == 200
    assert reader.get("/profile").status_code == 302
    assert kinds(app, alice.id, "password-changed") == []
    assert kinds(app, alice.id, "login-failed")[-1] == "wrong second-factor code, reset"
    # The link still works for whoever has the code.
    assert reader.get(link).status_code == 200


def test_the_right_code_on_the_reset_page_changes_the_password_and_logs_in(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any
) -> None:
    alice = accounts.make("alice")
    secret, _codes = turn_on_totp(app, alice)
    owner = log_in_client(app.test_client(), alice)
    link = mailed_link(app, csrf, smtp_sink)
    client = app.test_client()
    post(client, link, {"password": NEW_PASSWORD, "code": wrong_code(secret)}, link)
    done = post(client, link, {"password": NEW_PASSWORD, "code": code_at(secret)}, link)
    assert done.status_code == 302 and done.headers["Location"] == "/profile"
    assert amr_of(app, client) == ["pwd", "otp"]
    assert client.get("/profile").status_code == 200
    # A password change ends the other sessions; the link is spent.
    assert owner.get("/profile").status_code == 302
    assert client.get(link).status_code == 404
    assert kinds(app, alice.id, "password-changed") == ["with a reset link"]
    assert kinds(app, alice.id, "factor-used")[-1] == "authenticator app, for a password reset"
    # The new password logs in, and the login still asks for a code.
    fresh = app.test_client()
    first = post(fresh, "/login", {"login": "alice", "password": NEW_PASSWORD}, "/login")
    assert first.headers["Location"] == "/login/verify"


def test_a_recovery_code_does_for_the_reset_and_is_spent(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any
) -> None:
    alice = accounts.make("alice")
    _secret, codes = turn_on_totp(app, alice)
    link = mailed_link(app, csrf, smtp_sink)
    client = app.test_client()
    short = post(client, link, {"password": "short", "code": codes[0]}, link)
    assert short.status_code == 400
    # Refused for its password, the form did not use the code up.
    done = post(client, link, {"password": NEW_PASSWORD, "code": codes[0]}, link)
    assert done.status_code == 302 and done.headers["Location"] == "/profile"
    assert "9 left" in client.get("/profile").get_data(as_text=True)
    other = mailed_link(app, csrf, smtp_sink)
    again = post(
        app.test_client(), other, {"password": "another new passphrase", "code": codes[0]}, other
    )
    assert again.status_code == 400


def test_wrong_codes_on_the_reset_page_count_on_the_second_steps_counter(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any, password: str
) -> None:
    """Five wrong codes at the reset page lock the account as five at /login/verify do:
    the page, the login, and the second step's own counter, which a right password does
    not clear."""
    strict_throttle(app)
    alice = accounts.make("alice")
    secret, _codes = turn_on_totp(app, alice)
    before = password_hash(app, alice.id)
    link = mailed_link(app, csrf, smtp_sink)
    reader = app.test_client()
    for _ in range(5):
        answer = post(reader, link, {"password": NEW_PASSWORD, "code": wrong_code(secret)}, link)
        assert answer.status_code == 400
    locked = post(reader, link, {"password": NEW_PASSWORD, "code": code_at(secret)}, link)
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    assert password_hash(app, alice.id) == before
    assert kinds(app, alice.id, "login-throttled")[-1] == "second-factor code, reset"

    protection = app.extensions["meta"].protection
    assert not protection.account.check([("second-factor", f"user:{alice.id}")]).allowed
    client = app.test_client()
    assert (
        post(client, "/login", {"login": "alice", "password": password}, "/login").status_code
        == 429
    )


# -- passkeys only --------------------------------------------------------------------------------


def test_a_passkey_only_account_checks_its_passkey_on_the_reset_page(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any, password: str
) -> None:
    alice = accounts.make("alice")
    key = add_passkey(app, log_in_client(app.test_client(), alice), password)
    bob = accounts.make("bob")
    bobs_key = add_passkey(app, log_in_client(app.test_client(), bob), password, "bob's")
    before = password_hash(app, alice.id)
    link = mailed_link(app, csrf, smtp_sink)
    client = app.test_client()
    page = client.get(link).get_data(as_text=True)
    assert "Use a passkey" in page and 'name="password"' not in page

    refused = post(client, link, {"password": NEW_PASSWORD}, link)
    assert refused.status_code == 400
    assert "Use your passkey first" in refused.get_data(as_text=True)
    assert password_hash(app, alice.id) == before

    options_path, finish_path = f"{link}/passkey/options", f"{link}/passkey"
    options = post_json(client, options_path, {}, link)
    assert options.status_code == 200, options.get_data(as_text=True)
    assert [c["id"] for c in options.get_json()["allowCredentials"]] == [key.id]
    wrong = post_json(client, finish_path, bobs_key.get(options.get_json()), link)
    assert wrong.status_code == 400
    assert kinds(app, alice.id, "passkey-failed")[-1] == "another account's key"
    assert post(client, link, {"password": NEW_PASSWORD}, link).status_code == 400

    options = post_json(client, options_path, {}, link).get_json()
    proved = post_json(client, finish_path, key.get(options, verified=False), link)
    assert proved.status_code == 200, proved.get_data(as_text=True)
    assert proved.get_json() == {"redirect": link}
    assert password_hash(app, alice.id) == before
    page = client.get(link).get_data(as_text=True)
    assert 'name="password"' in page and 'name="code"' not in page
    done = post(client, link, {"password": NEW_PASSWORD}, link)
    assert done.status_code == 302 and done.headers["Location"] == "/profile"
    assert amr_of(app, client) == ["pwd", "hwk", "user"]
    assert kinds(app, alice.id, "passkey-used")[-1] == "laptop, for a password reset"


def test_a_passkey_checked_for_one_link_does_not_open_another(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any, password: str
) -> None:
    """The proof is of the link it was asked on: a new link (the old one replaced) asks
    again."""
    alice = accounts.make("alice")
    key = add_passkey(app, log_in_client(app.test_client(), alice), password)
    link = mailed_link(app, csrf, smtp_sink)
    client = app.test_client()
    options = post_json(client, f"{link}/passkey/options", {}, link).get_json()
    assert post_json(client, f"{link}/passkey", key.get(options), link).status_code == 200
    other = mailed_link(app, csrf, smtp_sink)
    assert other != link
    assert post(client, other, {"password": NEW_PASSWORD}, other).status_code == 400
    assert 'name="password"' not in client.get(other).get_data(as_text=True)


# -- accounts without a second factor -------------------------------------------------------------


def test_only_an_account_with_a_confirmed_second_factor_is_asked_for_it(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any
) -> None:
    """alice has an app: asked. bob has no factor: the link alone, as before. carol added
    an app before her address was ever confirmed: the link removes it (the mailbox's owner
    takes the account back from whoever registered), asking nothing."""
    alice = accounts.make("alice")
    turn_on_totp(app, alice)
    accounts.make("bob")
    carol = accounts.make("carol", confirmed=False)
    turn_on_totp(app, carol)
    asked = {}
    for name in ("alice", "bob", "carol"):
        link = mailed_link(app, csrf, smtp_sink, f"{name}@example.org")
        client = app.test_client()
        page = client.get(link).get_data(as_text=True)
        done = post(client, link, {"password": NEW_PASSWORD}, link)
        asked[name] = 'name="code"' in page, done.status_code
        if done.status_code == 302:
            assert done.headers["Location"] == "/profile"
            assert amr_of(app, client) == ["pwd"]
    assert asked == {"alice": (True, 400), "bob": (False, 302), "carol": (False, 302)}
    assert kinds(app, carol.id, "factor-removed") == [
        "authenticator app, added before the address was confirmed"
    ]
