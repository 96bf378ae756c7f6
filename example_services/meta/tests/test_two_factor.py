"""Two-factor sign-in with TOTP: the codes' rules, turning it on and off, the login's second
step and its throttle, recovery codes, the admin's reset, and the session's ``amr``."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pyotp
import pytest
from sqlalchemy import select

from srcore.testing import log_in_client

NEW_PASSWORD = "a brand new passphrase"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"


def _token(client: Any, path: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', client.get(path).get_data(as_text=True))
    assert match, path
    return match.group(1)


def post(client: Any, path: str, data: dict[str, str], page: str = "/login") -> Any:
    return client.post(path, data={**data, "csrf_token": _token(client, page)})


def kinds(app: Any, user_id: int) -> list[tuple[str, str]]:
    from meta.models import AuditEntry

    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(
            select(AuditEntry).where(AuditEntry.user_id == user_id).order_by(AuditEntry.id)
        )
        return [(row.kind, row.detail) for row in rows]


def turn_on(app: Any, user: Any) -> tuple[str, list[str]]:
    """TOTP on for *user*, as the setup page leaves it: (secret, recovery codes)."""
    from meta import totp

    secret = pyotp.random_base32(32)
    with app.extensions["srcore"].db.transaction() as session:
        codes = totp.add_factor(session, user.id, secret, 0)
    return secret, codes


def code_at(secret: str, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(datetime.now(UTC) + timedelta(seconds=30 * offset))


def amr_of(app: Any, client: Any) -> list[str]:
    from meta import logic
    from meta.views import SESSION_ID

    with client.session_transaction() as cookie:
        secret = cookie.get(SESSION_ID)
    with app.extensions["srcore"].db.transaction() as session:
        return logic.web_session_amr(session, secret)


# -- the rules of codes ---------------------------------------------------------------------


def test_a_code_is_good_for_its_step_and_one_either_side_once() -> None:
    from meta.totp import verify_totp

    secret = pyotp.random_base32(32)
    now = datetime(2026, 12, 3, 12, 0, 10, tzinfo=UTC)
    totp = pyotp.TOTP(secret)
    step = totp.timecode(now)
    for offset in (-1, 0, 1):
        code = totp.generate_otp(step + offset)
        assert verify_totp(secret, code, last_counter=None, now=now) == step + offset
    assert verify_totp(secret, totp.generate_otp(step + 2), last_counter=None, now=now) is None
    assert verify_totp(secret, totp.generate_otp(step - 2), last_counter=None, now=now) is None
    current = totp.generate_otp(step)
    assert verify_totp(secret, current, last_counter=step, now=now) is None  # replayed
    assert verify_totp(secret, f" {current[:3]} {current[3:]} ", last_counter=None, now=now)
    for bad in ("", "12345", "1234567", "abcdef", "\u0661\u0662\u0663\u0664\u0665\u0666"):
        assert verify_totp(secret, bad, last_counter=None, now=now) is None
    # An input method set to full-width types the right digits in their full-width forms.
    wide = "".join(chr(ord(c) + 0xFEE0) for c in current)
    assert verify_totp(secret, wide, last_counter=None, now=now) == step


def test_recovery_codes_are_stored_hashed_and_work_once(app: Any, accounts: Any) -> None:
    from meta import totp
    from meta.models import RecoveryCode

    alice = accounts.make("alice")
    _secret, codes = turn_on(app, alice)
    assert len(codes) == totp.RECOVERY_CODES == len(set(codes))
    assert all(re.fullmatch(r"[a-z2-9]{5}-[a-z2-9]{5}", code) for code in codes)
    with app.extensions["srcore"].db.transaction() as session:
        stored = set(session.scalars(select(RecoveryCode.code_hash)))
        assert not stored & {c.replace("-", "") for c in codes} and not stored & set(codes)
        assert totp.check_code(session, alice.id, codes[0].upper().replace("-", " ")).method == (
            "recovery"
        )
        wide = "".join(chr(ord(c) + 0xFEE0) for c in codes[1].upper())
        assert totp.check_code(session, alice.id, wide).method == "recovery"
    with app.extensions["srcore"].db.transaction() as session:
        assert not totp.check_code(session, alice.id, codes[0]).ok
        assert totp.unused_recovery_codes(session, alice.id) == totp.RECOVERY_CODES - 2


def test_the_qr_code_is_an_svg_of_the_otpauth_uri() -> None:
    from meta.totp import provisioning_uri, qr_svg

    uri = provisioning_uri(SECRET, account="alice", issuer="Example Network")
    assert uri.startswith(f"otpauth://totp/Example%20Network:alice?secret={SECRET}")
    svg = qr_svg(uri)
    assert svg.startswith("<svg") and "<path" in svg and "<script" not in svg
    assert "<title>QR code of the key" in svg  # its name for screen readers


# -- turning it on and off ------------------------------------------------------------------------


def test_turning_it_on_needs_the_password_and_a_code_and_mails_the_owner(
    app: Any, accounts: Any, password: str, smtp_sink: Any
) -> None:
    alice = accounts.make("alice")
    client = log_in_client(app.test_client(), alice)
    page = client.get("/security/two-factor").get_data(as_text=True)
    shown = re.search(r'id="totp-secret">([A-Z2-7 ]+)<', page)
    assert shown and "<svg" in page
    # The same secret until it is confirmed: a reload does not break a half-done scan.
    assert shown.group(1) in client.get("/security/two-factor").get_data(as_text=True)
    code = pyotp.TOTP(shown.group(1).replace(" ", "")).now()
    page_path = "/security/two-factor"
    wrong_password = post(client, page_path, {"code": code, "current_password": "nope"}, page_path)
    assert wrong_password.status_code == 400
    wrong_code = post(
        client, page_path, {"code": "000000", "current_password": password}, page_path
    )
    assert wrong_code.status_code == 400 and "not right" in wrong_code.get_data(as_text=True)
    done = post(client, page_path, {"code": code, "current_password": password}, page_path)
    assert done.status_code == 200
    shown = re.findall(
        r"<li><code>([a-z2-9]{5}-[a-z2-9]{5})</code></li>", done.get_data(as_text=True)
    )
    assert len(shown) == 10
    assert ("factor-added", "authenticator app") in kinds(app, alice.id)
    assert [m["Subject"].split(" · ")[0] for m in smtp_sink.to("alice@example.org")] == [
        "Two-factor sign-in is on"
    ]
    # Shown once: the page does not show them again.
    again = client.get(page_path).get_data(as_text=True)
    assert shown[0] not in again and "10 unused recovery codes left" in again
    assert 'id="two-factor"' in client.get("/security").get_data(as_text=True)


def test_turning_it_off_needs_the_password_or_a_code_and_mails_the_owner(
    app: Any, accounts: Any, password: str, smtp_sink: Any
) -> None:
    from meta import totp

    alice = accounts.make("alice")
    secret, codes = turn_on(app, alice)
    client = log_in_client(app.test_client(), alice)
    path = "/security/two-factor/disable"
    page = "/security/two-factor"
    assert post(client, path, {"current_password": "wrong"}, page).status_code == 400
    assert post(client, path, {"code": "123456"}, page).status_code == 400
    assert post(client, path, {}, page).status_code == 400
    assert post(client, path, {"code": codes[3]}, page).status_code == 302
    with app.extensions["srcore"].db.transaction() as session:
        assert totp.factor_of(session, alice.id) is None
        assert totp.unused_recovery_codes(session, alice.id) == 0
    assert ("factor-removed", "authenticator app") in kinds(app, alice.id)
    turn_on(app, alice)
    assert post(client, path, {"current_password": password}, page).status_code == 302
    subjects = [m["Subject"].split(" · ")[0] for m in smtp_sink.to("alice@example.org")]
    assert subjects == ["Two-factor sign-in is off"] * 2
    assert secret  # the first factor's secret is gone with it


def test_turning_it_off_is_mailed_exactly_when_it_commits(
    app: Any, accounts: Any, password: str, smtp_sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meta import passkeys, totp

    alice = accounts.make("alice")
    turn_on(app, alice)
    client = log_in_client(app.test_client(), alice)
    token = _token(client, "/security/two-factor")
    counted = passkeys.count_of

    def count_of(session: Any, user_id: int) -> int:
        if totp.factor_of(session, user_id) is None:  # the mail's count, once it is off
            raise RuntimeError("the database went away")
        return counted(session, user_id)

    monkeypatch.setattr(passkeys, "count_of", count_of)
    form = {"current_password": password, "csrf_token": token}
    with pytest.raises(RuntimeError, match="went away"):
        client.post("/security/two-factor/disable", data=form)
    with app.extensions["srcore"].db.transaction() as session:
        off = totp.factor_of(session, alice.id) is None
    mailed = [m["Subject"].split(" · ")[0] for m in smtp_sink.to("alice@example.org")]
    assert (off, mailed) in ((True, ["Two-factor sign-in is off"]), (False, []))


def test_new_recovery_codes_end_the_old_ones(app: Any, accounts: Any, password: str) -> None:
    from meta import totp

    alice = accounts.make("alice")
    _secret, old = turn_on(app, alice)
    client = log_in_client(app.test_client(), alice)
    path, page = "/security/two-factor/recovery-codes", "/security/two-factor"
    assert post(client, path, {"current_password": "wrong"}, page).status_code == 400
    renewed = post(client, path, {"current_password": password}, page)
    assert renewed.status_code == 200
    new = re.findall(r"<li><code>([a-z2-9-]{11})</code></li>", renewed.get_data(as_text=True))
    assert len(new) == 10 and not set(new) & set(old)
    with app.extensions["srcore"].db.transaction() as session:
        assert not totp.check_code(session, alice.id, old[0]).ok
        assert totp.check_code(session, alice.id, new[0]).ok
    assert ("recovery-codes-renewed", "") in kinds(app, alice.id)


# -- logging in -------------------------------------------------------------------------------


def test_a_password_login_without_a_factor_is_pwd_only(
    app: Any, accounts: Any, password: str
) -> None:
    accounts.make("alice")
    client = app.test_client()
    assert post(client, "/login", {"login": "alice", "password": password}).status_code == 302
    assert amr_of(app, client) == ["pwd"]


def test_the_login_asks_for_the_code_after_the_password(
    app: Any, accounts: Any, password: str
) -> None:
    alice = accounts.make("alice")
    secret, _codes = turn_on(app, alice)
    client = app.test_client()
    first = post(client, "/login?next=/security", {"login": "alice", "password": password})
    assert first.status_code == 302 and first.headers["Location"] == "/login/verify"
    assert client.get("/profile").status_code == 302  # not logged in yet
    assert ("login", "with password") not in kinds(app, alice.id)
    wrong = post(client, "/login/verify", {"code": "000000"}, "/login/verify")
    assert wrong.status_code == 400
    assert ("login-failed", "wrong second-factor code") in kinds(app, alice.id)
    code = code_at(secret, 1)
    done = post(client, "/login/verify", {"code": code}, "/login/verify")
    assert done.status_code == 302 and done.headers["Location"] == "/security"
    assert client.get("/profile").status_code == 200
    assert amr_of(app, client) == ["pwd", "otp"]
    assert kinds(app, alice.id)[-2:] == [
        ("factor-used", "authenticator app"),
        ("login", "with password + one-time code"),
    ]
    # The same code cannot log anyone in again.
    other = app.test_client()
    post(other, "/login", {"login": "alice", "password": password})
    assert post(other, "/login/verify", {"code": code}, "/login/verify").status_code == 400
    # A password change while logged in with two factors keeps the session's amr.
    data = {"current_password": password, "password": NEW_PASSWORD}
    assert post(client, "/password", data, "/password").status_code == 302
    assert amr_of(app, client) == ["pwd", "otp"]


def test_a_recovery_code_logs_in_once(app: Any, accounts: Any, password: str) -> None:
    alice = accounts.make("alice")
    _secret, codes = turn_on(app, alice)
    client = app.test_client()
    post(client, "/login", {"login": "alice", "password": password})
    done = post(client, "/login/verify", {"code": codes[0]}, "/login/verify")
    assert done.status_code == 302
    assert "9 left" in client.get("/profile").get_data(as_text=True)
    assert ("factor-used", "recovery code") in kinds(app, alice.id)
    again = app.test_client()
    post(again, "/login", {"login": "alice", "password": password})
    refused = post(again, "/login/verify", {"code": codes[0]}, "/login/verify")
    assert refused.status_code == 400
    assert again.get("/profile").status_code == 302


def test_the_second_step_needs_the_first_and_expires(
    app: Any, accounts: Any, password: str
) -> None:
    from meta.twofactor import PENDING, PENDING_SECONDS

    alice = accounts.make("alice")
    secret, _codes = turn_on(app, alice)
    client = app.test_client()
    assert client.get("/login/verify").headers["Location"] == "/login"
    post(client, "/login", {"login": "alice", "password": password})
    with client.session_transaction() as cookie:
        cookie[PENDING] = {**cookie[PENDING], "at": time.time() - PENDING_SECONDS - 1}
    late = post(client, "/login/verify", {"code": code_at(secret, 1)}, "/login")
    assert late.status_code == 302 and late.headers["Location"] == "/login"
    assert client.get("/profile").status_code == 302


def test_wrong_codes_are_throttled_like_passwords(app: Any, accounts: Any, password: str) -> None:
    from meta.protection import LoginProtection

    from srcore.throttle import Throttle, make_store

    # Five failures, then the lockout: with the growing delays in between, whether the
    # last attempts wait out a delay (and count) depended on how fast the run was.
    store, lockout = make_store(""), timedelta(minutes=15)
    app.extensions["meta"].protection = LoginProtection(
        account=Throttle(store, max_failures=5, free_failures=5, lockout=lockout, prefix="t"),
        address=Throttle(store, max_failures=20, free_failures=20, lockout=lockout, prefix="t"),
    )
    alice = accounts.make("alice")
    secret, _codes = turn_on(app, alice)
    client = app.test_client()
    post(client, "/login", {"login": "alice", "password": password})
    statuses = [
        post(client, "/login/verify", {"code": "000000"}, "/login/verify").status_code
        for _ in range(6)
    ]
    assert statuses == [400] * 5 + [429], statuses
    locked = post(client, "/login/verify", {"code": code_at(secret, 1)}, "/login/verify")
    assert locked.status_code == 429 and "Retry-After" in locked.headers
    # The password form is locked for the account as well.
    fresh = app.test_client()
    assert post(fresh, "/login", {"login": "alice", "password": password}).status_code == 429


# -- the admin's reset ---------------------------------------------------------------------


def test_an_admin_resets_a_locked_out_users_factors(
    app: Any, accounts: Any, password: str, smtp_sink: Any
) -> None:
    from meta import totp

    from srcore.db import UserType

    admin = accounts.make("root1", user_type=UserType.admin)
    alice = accounts.make("alice")
    turn_on(app, alice)
    page = f"/admin/users/{alice.id}"
    assert (
        post(
            log_in_client(app.test_client(), alice), f"{page}/factors/reset", {}, "/profile"
        ).status_code
        == 404
    )
    client = log_in_client(app.test_client(), admin)
    assert "Reset second factors" in client.get(page).get_data(as_text=True)
    assert post(client, f"{page}/factors/reset", {}, page).status_code == 302
    with app.extensions["srcore"].db.transaction() as session:
        assert totp.factor_of(session, alice.id) is None
    from meta.models import AuditEntry

    with app.extensions["srcore"].db.transaction() as session:
        entry = session.scalar(select(AuditEntry).where(AuditEntry.kind == "factors-reset"))
        assert entry is not None and (entry.user_id, entry.actor_id) == (alice.id, admin.id)
    assert [m["Subject"].split(" · ")[0] for m in smtp_sink.to("alice@example.org")] == [
        "An administrator turned two-factor sign-in off"
    ]
    user = app.test_client()
    assert (
        post(user, "/login", {"login": "alice", "password": password}).headers["Location"]
        == "/profile"
    )


@pytest.mark.parametrize("path", ["/security/two-factor", "/security/activity"])
def test_the_pages_need_a_login(client: Any, path: str) -> None:
    assert client.get(path).status_code == 302


def test_a_password_reset_link_does_not_skip_the_second_factor(
    app: Any, accounts: Any, csrf: Any, smtp_sink: Any
) -> None:
    """Whoever reads the account's mail cannot choose a new password without a code: the
    reset page asks for it, and with it the new password logs in with both factors."""
    alice = accounts.make("alice")
    secret, _codes = turn_on(app, alice)
    csrf.post(app.test_client(), "/forgot", {"email": "alice@example.org"})
    link = smtp_sink.last_link("alice@example.org", "/reset/")
    client = app.test_client()
    refused = post(client, link, {"password": NEW_PASSWORD}, link)
    assert refused.status_code == 400
    assert client.get("/profile").status_code == 302
    done = post(client, link, {"password": NEW_PASSWORD, "code": code_at(secret, 1)}, link)
    assert done.status_code == 302 and done.headers["Location"] == "/profile"
    assert amr_of(app, client) == ["pwd", "otp"]


def test_a_lost_setup_key_is_said_so(app: Any, accounts: Any, password: str) -> None:
    from meta.twofactor import SETUP_SECRET

    alice = accounts.make("alice")
    client = log_in_client(app.test_client(), alice)
    client.get("/security/two-factor")
    with client.session_transaction() as cookie:
        del cookie[SETUP_SECRET]
    path = "/security/two-factor"
    lost = post(client, path, {"code": "123456", "current_password": password}, "/profile")
    assert lost.status_code == 400 and "The key has changed" in lost.get_data(as_text=True)


def test_a_reset_between_the_two_steps_sends_back_to_the_password(
    app: Any, accounts: Any, password: str
) -> None:
    from meta import totp

    alice = accounts.make("alice")
    turn_on(app, alice)
    client = app.test_client()
    assert (
        post(client, "/login", {"login": "alice", "password": password}).headers["Location"]
        == "/login/verify"
    )
    with app.extensions["srcore"].db.transaction() as session:
        totp.remove_factors(session, alice.id)
    back = client.get("/login/verify")
    assert back.status_code == 302 and back.headers["Location"] == "/login"
    assert "turned off" in client.get("/login").get_data(as_text=True)
    done = post(client, "/login", {"login": "alice", "password": password})
    assert done.headers["Location"] == "/profile"
    assert amr_of(app, client) == ["pwd"]
