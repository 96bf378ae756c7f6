"""Passkeys: adding, naming and removing them, logging in with one (without a password, or
after it), and the answers that are refused: forged, garbled, replayed, from another
origin, another account's key, a counter gone back. Each audited event is looked up."""

from __future__ import annotations

import contextlib
import re
from datetime import timedelta
from typing import Any

import pytest
from passkey_helpers import SoftKey
from sqlalchemy import select

from srcore.testing import log_in_client

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
JSON = {"Accept": "application/json"}


def token(client: Any, path: str = "/login") -> str:
    match = _CSRF.search(client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def post_json(client: Any, path: str, body: Any, page: str = "/forgot") -> Any:
    headers = {**JSON, "X-CSRFToken": token(client, page)}
    if isinstance(body, str | bytes):
        return client.post(path, data=body, headers=headers, content_type="application/json")
    return client.post(path, json=body, headers=headers)


def post_form(client: Any, path: str, data: dict[str, str], page: str, **kw: Any) -> Any:
    return client.post(path, data={**data, "csrf_token": token(client, page)}, **kw)


def entries(app: Any, user_id: int | None = None, kind: str | None = None) -> list[Any]:
    from meta.models import AuditEntry

    stmt = select(AuditEntry).order_by(AuditEntry.id)
    if user_id is not None:
        stmt = stmt.where(AuditEntry.user_id == user_id)
    if kind is not None:
        stmt = stmt.where(AuditEntry.kind == kind)
    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(stmt).all()
        session.expunge_all()
        return list(rows)


def amr_of(app: Any, client: Any) -> list[str]:
    from meta import logic
    from meta.views import SESSION_ID

    with client.session_transaction() as cookie:
        secret = cookie.get(SESSION_ID)
    with app.extensions["srcore"].db.transaction() as session:
        return logic.web_session_amr(session, secret)


def soft_key(app: Any, **kw: Any) -> SoftKey:
    from meta.passkeys import RelyingParty

    rp = RelyingParty.from_origin(str(app.extensions["srcore"].section["origin"]), "x")
    return SoftKey(rp_id=rp.id, origin=rp.origin, **kw)


def add_passkey(app: Any, client: Any, password: str, name: str = "laptop", **kw: Any) -> SoftKey:
    """Add a passkey through the two steps the Security page's script takes."""
    key = soft_key(app, **kw)
    options = post_form(
        client,
        "/security/passkeys/options",
        {"name": name, "current_password": password},
        "/security/passkeys",
        headers=JSON,
    )
    assert options.status_code == 200, options.get_data(as_text=True)
    done = post_json(client, "/security/passkeys", key.create(options.get_json()), "/security")
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.get_json() == {"redirect": "/security#passkeys"}
    return key


def passwordless_options(client: Any) -> dict[str, Any]:
    response = post_json(client, "/login/passkey/options", {})
    assert response.status_code == 200
    result: dict[str, Any] = response.get_json()
    return result


def strict_throttle(app: Any) -> None:
    """Five failures, then the lockout: no growing delays, which a slow run could outlast."""
    from meta.protection import LoginProtection

    from srcore.throttle import Throttle, make_store

    store, lockout = make_store(""), timedelta(minutes=15)
    app.extensions["meta"].protection = LoginProtection(
        account=Throttle(store, max_failures=5, free_failures=5, lockout=lockout, prefix="t"),
        address=Throttle(store, max_failures=20, free_failures=20, lockout=lockout, prefix="t"),
    )


@pytest.fixture
def alice(accounts: Any) -> Any:
    return accounts.make("alice")


@pytest.fixture
def alice_client(app: Any, alice: Any) -> Any:
    return log_in_client(app.test_client(), alice)


# -- plain functions ----------------------------------------------------------------------


def test_the_relying_party_comes_from_metas_origin() -> None:
    from meta.passkeys import RelyingParty

    rp = RelyingParty.from_origin("https://id.example.org:8443/", "Example")
    assert (rp.id, rp.origin, rp.name) == (
        "id.example.org",
        "https://id.example.org:8443",
        "Example",
    )
    with pytest.raises(ValueError, match="not an origin"):
        RelyingParty.from_origin("id.example.org", "Example")


def test_amr_says_the_kind_of_key_and_whether_the_user_was_verified() -> None:
    from meta.passkeys import amr

    assert amr(user_verified=True, backup_eligible=False) == ["hwk", "pin"]
    assert amr(user_verified=False, backup_eligible=False) == ["hwk", "user"]
    assert amr(user_verified=True, backup_eligible=True) == ["swk", "pin"]


def test_a_challenge_is_good_once_for_its_purpose_and_account_until_it_expires(
    app: Any, alice: Any
) -> None:
    from meta import passkeys

    from srcore.db import utcnow

    now = utcnow()
    with app.app_context(), app.extensions["srcore"].db.transaction() as session:
        first = passkeys.new_challenge(session, "register", alice.id, now=now)
        assert not passkeys.spend_challenge(session, first, "login", alice.id, now=now)
        assert not passkeys.spend_challenge(session, first, "register", None, now=now)
        assert passkeys.spend_challenge(session, first, "register", alice.id, now=now)
        assert not passkeys.spend_challenge(session, first, "register", alice.id, now=now)
        late = passkeys.new_challenge(session, "login", None, now=now)
        after = now + timedelta(seconds=passkeys.CHALLENGE_SECONDS + 1)
        assert not passkeys.spend_challenge(session, late, "login", None, now=after)


# -- adding, naming, removing ----------------------------------------------------------------


def test_adding_a_passkey_needs_the_password_and_is_mailed_and_audited(
    app: Any, alice: Any, alice_client: Any, password: str, smtp_sink: Any
) -> None:
    refused = post_form(
        alice_client,
        "/security/passkeys/options",
        {"name": "laptop", "current_password": "not it"},
        "/security",
        headers=JSON,
    )
    assert refused.status_code == 400
    assert refused.get_json()["errors"][0]["field"] == "current_password"
    # No options were given: an answer now has no challenge to match.
    stray = post_json(
        alice_client,
        "/security/passkeys",
        soft_key(app).create({"challenge": "AAAA", "user": {"id": "AAAA"}}),
        "/security",
    )
    assert stray.status_code == 400

    add_passkey(app, alice_client, password, "laptop")
    [added] = entries(app, alice.id, "passkey-added")
    assert added.detail == "laptop"
    mail = smtp_sink.to("alice@example.org")[-1]
    assert "passkey" in mail["Subject"] and '"laptop"' in mail.get_content()
    page = alice_client.get("/security").get_data(as_text=True)
    assert 'value="laptop"' in page and "Passkey added" in page
    assert "passkeys.js" in page


def test_the_options_ask_for_a_discoverable_key_and_exclude_the_accounts_keys(
    app: Any, alice_client: Any, password: str
) -> None:
    key = add_passkey(app, alice_client, password)
    options = post_form(
        alice_client,
        "/security/passkeys/options",
        {"name": "phone", "current_password": password},
        "/security",
        headers=JSON,
    ).get_json()
    assert options["authenticatorSelection"]["residentKey"] == "required"
    assert [c["id"] for c in options["excludeCredentials"]] == [key.id]
    assert options["rp"]["id"] == soft_key(app).rp_id
    assert options["user"]["name"] == "alice"
    # The same handle as the first key's, and not the account id.
    assert options["user"]["id"] != "1"


def test_a_passkey_is_renamed_and_removed_with_the_password(
    app: Any, alice: Any, alice_client: Any, password: str, accounts: Any, smtp_sink: Any
) -> None:
    from meta.models import PasskeyCredential

    add_passkey(app, alice_client, password, "laptop")
    with app.extensions["srcore"].db.transaction() as session:
        key_id = session.scalars(select(PasskeyCredential.id)).one()
    renamed = post_form(
        alice_client, f"/security/passkeys/{key_id}/name", {"name": "work"}, "/security"
    )
    assert renamed.status_code == 302
    blank = post_form(alice_client, f"/security/passkeys/{key_id}/name", {"name": " "}, "/security")
    assert blank.status_code == 400
    # A name is one line that shows what it is: no bidi override turning it around.
    turned = {"name": "work\u202epot"}
    spoof = post_form(alice_client, f"/security/passkeys/{key_id}/name", turned, "/security")
    assert spoof.status_code == 400

    # Someone else's key is not found; a wrong password keeps it.
    bob = log_in_client(app.test_client(), accounts.make("bob"))
    other = post_form(
        bob, f"/security/passkeys/{key_id}/remove", {"current_password": password}, "/security"
    )
    assert other.status_code == 404
    wrong = post_form(
        alice_client, f"/security/passkeys/{key_id}/remove", {"current_password": "no"}, "/security"
    )
    assert wrong.status_code == 400
    assert "This is not your current password." in wrong.get_data(as_text=True)

    removed = post_form(
        alice_client,
        f"/security/passkeys/{key_id}/remove",
        {"current_password": password},
        "/security",
    )
    assert removed.status_code == 302
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalars(select(PasskeyCredential)).all() == []
    [entry] = entries(app, alice.id, "passkey-removed")
    assert entry.detail == "work"
    mail = smtp_sink.to("alice@example.org")[-1]
    assert "removed" in mail["Subject"] and "password alone logs you in now" in mail.get_content()


def test_a_removed_passkey_is_mailed_exactly_when_it_commits(
    app: Any,
    alice: Any,
    alice_client: Any,
    password: str,
    smtp_sink: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from meta import passkeys
    from meta.models import PasskeyCredential

    add_passkey(app, alice_client, password, "laptop")
    with app.extensions["srcore"].db.transaction() as session:
        key_id = session.scalars(select(PasskeyCredential.id)).one()
    smtp_sink.messages.clear()
    counted = passkeys.count_of

    def count_of(session: Any, user_id: int) -> int:
        left = counted(session, user_id)
        if left == 0:  # the mail's count, once the key is gone
            raise RuntimeError("the database went away")
        return left

    monkeypatch.setattr(passkeys, "count_of", count_of)
    form = {"current_password": password, "csrf_token": token(alice_client, "/security")}
    with pytest.raises(RuntimeError, match="went away"):
        alice_client.post(f"/security/passkeys/{key_id}/remove", data=form)
    with app.extensions["srcore"].db.transaction() as session:
        gone = session.scalars(select(PasskeyCredential)).all() == []
    mailed = ["removed" in m["Subject"] for m in smtp_sink.to("alice@example.org")]
    assert (gone, mailed) in ((True, [True]), (False, []))


def test_garbled_registrations_are_400s(app: Any, alice_client: Any, password: str) -> None:
    key = soft_key(app)
    good_options = None
    for body in (
        "not json",
        "[]",
        {},
        {"id": "x", "rawId": "y", "type": "public-key", "response": {}},
        {
            "id": "!!",
            "rawId": "!!",
            "type": "public-key",
            "response": {"clientDataJSON": "%%%", "attestationObject": "@@"},
        },
        "BAD_ORIGIN",
        "NOT_VERIFIED_ORIGIN_OK",
    ):
        response = post_form(
            alice_client,
            "/security/passkeys/options",
            {"name": "laptop", "current_password": password},
            "/security",
            headers=JSON,
        )
        good_options = response.get_json()
        if body == "BAD_ORIGIN":
            body = key.create(good_options, origin="http://127.0.0.1:1")
        elif body == "NOT_VERIFIED_ORIGIN_OK":
            continue
        answer = post_json(alice_client, "/security/passkeys", body, "/security")
        assert answer.status_code == 400, (body, answer.status_code)
        assert answer.get_json()["errors"][0]["reason"]
    assert good_options is not None


# -- logging in without a password ------------------------------------------------------------


def test_a_passkey_logs_in_without_a_password(
    app: Any, alice: Any, alice_client: Any, password: str
) -> None:
    key = add_passkey(app, alice_client, password)
    client = app.test_client()
    options = passwordless_options(client)
    assert options["userVerification"] == "required"
    assert options["allowCredentials"] == []
    done = post_json(client, "/login/passkey?next=/security", key.get(options))
    assert done.status_code == 200, done.get_data(as_text=True)
    assert done.get_json() == {"redirect": "/security"}
    assert amr_of(app, client) == ["hwk", "pin"]
    assert client.get("/profile").status_code == 200
    [used] = entries(app, alice.id, "passkey-used")
    assert used.detail == "laptop, without a password"
    assert entries(app, alice.id, "login")[-1].detail == "with passkey + user verified"


def test_a_synced_passkey_says_swk(app: Any, alice_client: Any, password: str) -> None:
    key = add_passkey(app, alice_client, password, backup_eligible=True)
    client = app.test_client()
    assert (
        post_json(client, "/login/passkey", key.get(passwordless_options(client))).status_code
        == 200
    )
    assert amr_of(app, client) == ["swk", "pin"]


def test_without_a_password_the_user_must_be_verified(
    app: Any, alice: Any, alice_client: Any, password: str
) -> None:
    key = add_passkey(app, alice_client, password)
    client = app.test_client()
    refused = post_json(
        client, "/login/passkey", key.get(passwordless_options(client), verified=False)
    )
    assert refused.status_code == 400
    [failed] = entries(app, alice.id, "passkey-failed")
    assert "verif" in failed.detail.lower()
    assert client.get("/profile").status_code == 302


def test_a_replayed_answer_is_refused_even_with_a_copied_cookie(
    app: Any, alice_client: Any, password: str
) -> None:
    key = add_passkey(app, alice_client, password)
    client = app.test_client()
    options = passwordless_options(client)
    answer = key.get(options)
    with client.session_transaction() as cookie:
        copied = dict(cookie)
    assert post_json(client, "/login/passkey", answer).status_code == 200
    # The same answer again on this browser: its challenge is gone from the session.
    again = post_json(client, "/login/passkey", answer)
    assert again.status_code == 400 and "expired" in again.get_json()["errors"][0]["reason"]
    # A second browser with a copy of the cookie as it was: the challenge is spent.
    thief = app.test_client()
    with thief.session_transaction() as cookie:
        cookie.update(copied)
    stolen = post_json(thief, "/login/passkey", answer)
    assert stolen.status_code == 400
    assert thief.get("/profile").status_code == 302


def test_a_counter_that_went_back_is_refused(
    app: Any, alice: Any, alice_client: Any, password: str
) -> None:
    key = add_passkey(app, alice_client, password)
    client = app.test_client()
    assert (
        post_json(
            client, "/login/passkey", key.get(passwordless_options(client), counter=5)
        ).status_code
        == 200
    )
    clone = app.test_client()
    refused = post_json(clone, "/login/passkey", key.get(passwordless_options(clone), counter=5))
    assert refused.status_code == 400
    assert "copied" in refused.get_json()["errors"][0]["reason"]
    assert "signature counter 5 not above 5" in entries(app, alice.id, "passkey-failed")[-1].detail


def test_answers_from_another_origin_or_unknown_keys_or_garbled_are_400s(
    app: Any, alice: Any, alice_client: Any, password: str
) -> None:
    key = add_passkey(app, alice_client, password)
    client = app.test_client()
    wrong_origin = post_json(
        client,
        "/login/passkey",
        key.get(passwordless_options(client), origin="http://evil.invalid"),
    )
    assert wrong_origin.status_code == 400
    assert "origin" in entries(app, alice.id, "passkey-failed")[-1].detail.lower()

    stranger = soft_key(app)
    unknown = post_json(client, "/login/passkey", stranger.get(passwordless_options(client)))
    assert unknown.status_code == 400
    assert "not registered" in unknown.get_json()["errors"][0]["reason"]
    assert entries(app, None, "passkey-failed")[-1].detail == "unknown passkey"

    forged = key.get(passwordless_options(client))
    forged["response"]["signature"] = forged["response"]["signature"][:-4] + "AAAA"
    bad_sig = post_json(client, "/login/passkey", forged)
    assert bad_sig.status_code == 400

    # Garbled answers, with the throttle off: each is its own 400, not a lockout.
    app.extensions["meta"].protection = None
    for body in (
        "{",
        "null",
        "[1]",
        {"id": 5},
        {"id": key.id},
        {"id": key.id, "response": "x"},
        {
            "id": key.id,
            "rawId": key.id,
            "type": "public-key",
            "response": {"clientDataJSON": "e30", "authenticatorData": "", "signature": ""},
        },
        {"id": "x" * 5000},
    ):
        passwordless_options(client)
        answer = post_json(client, "/login/passkey", body)
        assert answer.status_code == 400, (body, answer.status_code)
    # Without options first: no challenge.
    assert (
        post_json(app.test_client(), "/login/passkey", key.get({"challenge": "AAAA"})).status_code
        == 400
    )


def test_failed_passkeys_are_throttled_like_passwords_and_audited(
    app: Any, alice: Any, alice_client: Any, password: str
) -> None:
    strict_throttle(app)
    key = add_passkey(app, alice_client, password)
    client = app.test_client()
    statuses = []
    for _ in range(6):
        options = passwordless_options(client)
        statuses.append(
            post_json(client, "/login/passkey", key.get(options, verified=False)).status_code
        )
    assert statuses == [400] * 5 + [429], statuses
    locked = post_json(client, "/login/passkey", key.get(passwordless_options(client)))
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    throttled = entries(app, alice.id, "login-throttled")
    assert throttled and throttled[-1].detail == "passkey"


# -- a passkey as the second factor -------------------------------------------------------------


def log_in_with_password(client: Any, name: str, password: str) -> Any:
    return post_form(client, "/login", {"login": name, "password": password}, "/login")


def test_a_passkey_is_the_second_factor_after_the_password(
    app: Any, alice: Any, alice_client: Any, password: str
) -> None:
    key = add_passkey(app, alice_client, password)
    client = app.test_client()
    first = log_in_with_password(client, "alice", password)
    assert first.status_code == 302 and first.location.endswith("/login/verify")
    page = client.get("/login/verify").get_data(as_text=True)
    assert "Use a passkey" in page and 'name="code"' not in page
    response = post_json(client, "/login/verify/passkey/options", {}, "/login/verify")
    options = response.get_json()
    assert [c["id"] for c in options["allowCredentials"]] == [key.id]
    # Presence alone is enough after the password.
    done = post_json(
        client, "/login/verify/passkey", key.get(options, verified=False), "/login/verify"
    )
    assert done.status_code == 200, done.get_data(as_text=True)
    assert amr_of(app, client) == ["pwd", "hwk", "user"]
    assert entries(app, alice.id, "passkey-used")[-1].detail == "laptop, after the password"


def test_another_accounts_passkey_is_no_second_factor(
    app: Any, alice: Any, alice_client: Any, accounts: Any, password: str
) -> None:
    add_passkey(app, alice_client, password)
    bob = accounts.make("bob")
    bob_client = log_in_client(app.test_client(), bob)
    bobs_key = add_passkey(app, bob_client, password, "bob's")
    client = app.test_client()
    log_in_with_password(client, "alice", password)
    options = post_json(client, "/login/verify/passkey/options", {}, "/login/verify").get_json()
    refused = post_json(client, "/login/verify/passkey", bobs_key.get(options), "/login/verify")
    assert refused.status_code == 400
    assert "not one of your account's" in refused.get_json()["errors"][0]["reason"]
    assert entries(app, alice.id, "passkey-failed")[-1].detail == "another account's key"
    assert client.get("/profile").status_code == 302
    # Without a password step under way, there is nothing to answer.
    assert post_json(app.test_client(), "/login/verify/passkey/options", {}).status_code == 400


# -- the admin's reset, and the other audited events ------------------------------------------


def test_an_admin_reset_removes_passkeys_too(
    app: Any, alice: Any, alice_client: Any, accounts: Any, password: str
) -> None:
    from meta.models import PasskeyCredential

    from srcore.db import UserType

    add_passkey(app, alice_client, password)
    admin = log_in_client(app.test_client(), accounts.make("root1", user_type=UserType.admin))
    page = f"/admin/users/{alice.id}"
    assert "1 passkey" in admin.get(page).get_data(as_text=True)
    assert post_form(admin, f"{page}/factors/reset", {}, page).status_code == 302
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalars(select(PasskeyCredential)).all() == []
    [reset] = entries(app, alice.id, "factors-reset")
    assert reset.detail == "1 passkey"
    # The password alone logs in again.
    assert log_in_with_password(app.test_client(), "alice", password).location.endswith("/profile")


def test_throttled_password_logins_are_audited(app: Any, alice: Any, password: str) -> None:
    strict_throttle(app)
    client = app.test_client()
    statuses = [log_in_with_password(client, "alice", "wrong").status_code for _ in range(6)]
    assert statuses == [400] * 5 + [429], statuses
    throttled = entries(app, alice.id, "login-throttled")
    assert throttled and throttled[-1].detail == "password"


def test_deleting_an_account_is_audited(
    app: Any, alice: Any, alice_client: Any, password: str
) -> None:
    response = post_form(alice_client, "/delete", {"current_password": password}, "/delete")
    assert response.status_code == 302
    [deleted] = entries(app, alice.id, "account-deleted")
    assert deleted.detail == "alice, by its owner"


def test_turning_the_app_off_says_the_passkeys_are_still_asked_for(
    app: Any, alice: Any, alice_client: Any, password: str, smtp_sink: Any
) -> None:
    import pyotp
    from meta import totp

    add_passkey(app, alice_client, password)
    with app.extensions["srcore"].db.transaction() as session:
        totp.add_factor(session, alice.id, pyotp.random_base32(32), 0)
    off = post_form(
        alice_client, "/security/two-factor/disable", {"current_password": password}, "/security"
    )
    assert off.status_code == 302
    page = alice_client.get(off.location).get_data(as_text=True)
    assert "Your passkeys are still asked for." in page
    text = smtp_sink.to("alice@example.org")[-1].get_content()
    assert "asks for one of your passkeys" in text and "alone logs you in" not in text
    # The password alone is still not enough.
    assert log_in_with_password(app.test_client(), "alice", password).location.endswith(
        "/login/verify"
    )


def _json_values() -> Any:
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=40)
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(
                st.sampled_from(
                    [
                        "id",
                        "rawId",
                        "type",
                        "response",
                        "clientDataJSON",
                        "authenticatorData",
                        "signature",
                        "userHandle",
                        "attestationObject",
                        "transports",
                    ]
                )
                | st.text(max_size=8),
                inner,
                max_size=6,
            )
        ),
        max_leaves=12,
    )


def test_any_json_answer_is_refused_with_a_passkey_error_only(app: Any, alice: Any) -> None:
    """Whatever JSON a client sends, checking it ends in PasskeyError (a 400), never in
    another exception (a 500)."""
    from hypothesis import HealthCheck, given, settings
    from meta import passkeys
    from meta.models import PasskeyCredential
    from meta.passkeys import PasskeyError, RelyingParty

    rp = RelyingParty.from_origin("http://localhost:5000", "x")
    real = SoftKey(rp_id=rp.id, origin=rp.origin)
    options = {"challenge": "AAAA", "user": {"id": "AAAA"}}
    template = real.get(options)
    key = PasskeyCredential(
        id=1,
        user_id=alice.id,
        credential_id=real.id,
        public_key=b"\xa0",
        sign_count=0,
        user_handle="AAAA",
        name="k",
        transports="",
        backup_eligible=False,
    )

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(_json_values(), _json_values())
    def check(answer: Any, response: Any) -> None:
        shaped = {**template, "response": response} if isinstance(response, dict) else answer
        for candidate in (answer, shaped):
            with pytest.raises(PasskeyError):
                passkeys.verify_registration(rp, candidate, b"challenge")
            with contextlib.suppress(PasskeyError):
                passkeys.answer_credential_id(candidate)
            db = app.extensions["srcore"].db
            with app.app_context(), db.transaction() as session, pytest.raises(PasskeyError):
                passkeys.verify_assertion(
                    session, rp, candidate, key, b"challenge", require_user_verification=True
                )

    check()
