"""Pages of two-factor sign-in and of the account's activity (its audit log).

``/security/two-factor`` turns TOTP on (the current password and a code from the app),
shows the recovery codes once, makes new ones, and turns it off (the current password, or
a code). ``/login/verify`` is the login's second step: after the right password, an account
with TOTP is not logged in until a code or a recovery code checks out; wrong codes count
against the same per-account and per-address throttles as wrong passwords.

One login waits for its second step per browser, under an id its page carries (the code
form's ``login_token`` field, the passkey requests' ``?login_token=``): a page answers for
the login it was shown for. Once another account's password was accepted in the same
browser (another tab), the older page's code is checked against nobody and counts on no
account: the page says its login was replaced (409) and to start again.
``/security/activity`` lists the account's audit log.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, NoReturn

from flask import (
    Blueprint,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

import srcore
from meta import audit, passkeys, totp
from meta.audit import Kind
from meta.mails import mail_on_commit, send_mail
from meta.models import User
from meta.settings import meta_settings
from srcore.auth.web import current_user, is_safe_next, login_required
from srcore.db import session as db
from srcore.errors import error_response, wants_json
from srcore.pagination import paginate_pages
from srcore.validation import Validation

__all__ = [
    "LOGIN_FIELD",
    "LOGIN_REPLACED",
    "PENDING",
    "Pending",
    "begin_second_step",
    "has_second_factor",
    "security_context",
    "twofactor",
    "waiting_login",
]

twofactor = Blueprint("twofactor", __name__)

#: The session key of a login waiting for its second factor: ``{"id", "uid", "at", "next"}``.
PENDING = "_meta_2fa"
#: The field of the second step's form (and the query parameter of its passkey requests)
#: naming the waiting login the page was shown for: a token of the page, not typed, so a
#: form sent again after another login (:func:`srcore.errors.form_again`) leaves it out.
LOGIN_FIELD = "login_token"
#: What a second-step page shown for a login that another one replaced is answered.
LOGIN_REPLACED = (
    "This login was replaced by a newer one for another account in this browser (in another "
    "tab or window), so what you sent was not checked and counts against no account. "
    "Start again: log in with your password."
)
#: The session key of the secret shown on the setup page, until a code confirms it.
SETUP_SECRET = "_meta_totp_setup"  # noqa: S105 - a session key
#: How long the second step may wait after the right password.
PENDING_SECONDS = 300
CODE_MAX = 64
PER_PAGE = 50
_MAX_PAGE = 1_000_000


def has_second_factor(user_id: int) -> bool:
    """Whether logging in with the password also asks for an app's code or a passkey."""
    return totp.factor_of(db, user_id) is not None or passkeys.count_of(db, user_id) > 0


def security_context(user_id: int) -> dict[str, Any]:
    """What ``/security`` shows of two-factor sign-in, passkeys and recent activity."""
    from meta.passkeys_views import passkey_context

    recent = db.scalars(audit.AuditFilter(user_id=user_id).statement().limit(10)).all()
    return {
        **passkey_context(user_id),
        "totp_enabled": totp.factor_of(db, user_id) is not None,
        "recovery_left": totp.unused_recovery_codes(db, user_id),
        "activity": recent,
        "kind_label": audit.kind_label,
    }


def _issuer() -> str:
    name = meta_settings().two_factor_issuer
    return name or str(srcore.state().config.global_["site-name"])


def _current() -> User:
    from meta.views import _user

    return _user()


# -- setting up, renewing, turning off ------------------------------------------------------


TWO_FACTOR = "meta/security/two_factor.html"


def _setup_context(user: User) -> dict[str, Any]:
    """The two-factor page before TOTP is on, but ``valid``: the key to scan."""
    secret = session.get(SETUP_SECRET)
    if not isinstance(secret, str) or len(secret) != 32:
        secret = session[SETUP_SECRET] = totp.new_secret()
    uri = totp.provisioning_uri(secret, account=user.username, issuer=_issuer())
    return {
        "user": user,
        "enabled": False,
        "secret": secret,
        "qr": totp.qr_svg(uri),
        "uri": uri,
        "codes": None,
    }


def _enabled_context(user: User, codes: list[str] | None = None) -> dict[str, Any]:
    """The two-factor page once TOTP is on, but ``valid``."""
    return {
        "user": user,
        "enabled": True,
        "recovery_left": totp.unused_recovery_codes(db, user.id),
        "codes": codes,
    }


def _setup_page(user: User) -> str:
    return render_template(TWO_FACTOR, valid=None, **_setup_context(user))


def _enabled_page(user: User, codes: list[str] | None = None) -> str:
    return render_template(TWO_FACTOR, valid=None, **_enabled_context(user, codes))


@twofactor.route("/security/two-factor")
@login_required
def settings() -> Any:
    user = _current()
    if totp.factor_of(db, user.id) is not None:
        return _enabled_page(user)
    return _setup_page(user)


@twofactor.route("/security/two-factor", methods=["POST"])
@login_required
def enable() -> Any:
    """Turn TOTP on: the current password, and a code proving the app has the secret."""
    from meta.views import _check_current_password, _password_throttled

    user = _current()
    if totp.factor_of(db, user.id) is not None:
        return _already_on(user)
    throttled = _password_throttled(user)
    if throttled is not None:
        return throttled
    valid = Validation.form(TWO_FACTOR, lambda: _setup_context(user))
    _check_current_password(valid, user)
    code = valid.require("code", max_length=CODE_MAX, label="The code from your app")
    secret = session.get(SETUP_SECRET)
    counter = None
    if code and isinstance(secret, str):
        counter = totp.verify_totp(secret, code, last_counter=None, now=srcore.db.utcnow())
        valid.expect(
            counter is not None,
            "This code is not right: check your device's clock, and type the newest code.",
            field="code",
        )
    elif code:
        # The key shown was lost with the session: the page shows a new one.
        valid.error("The key has changed: scan the new code, then type its code.", "code")
    valid.raise_if_invalid()
    # Without a code, a key or a right code, an error was recorded above.
    assert counter is not None and isinstance(secret, str)
    if totp.factor_of(db, user.id) is not None:
        # Another tab turned it on since this request looked (the password check holds
        # the account's row from then on): replacing its app and recovery codes would
        # leave those just shown there not working.
        return _already_on(user)
    try:
        codes = totp.add_factor(db, user.id, secret, counter)
    except IntegrityError:
        # The same, from a request that stored its app without holding the row.
        db.rollback()
        return _already_on(user)
    audit.record(db, Kind.factor_added, user.id, detail="authenticator app")
    db.commit()
    session.pop(SETUP_SECRET, None)
    send_mail("factor-added", user.email, user=user)
    return _enabled_page(user, codes)


#: Why a second authenticator app is not turned on.
ALREADY_ON = (
    "An authenticator app is already on for your account (turned on in another tab or "
    "window?), so the key shown here was not saved. To use this app instead, turn it off "
    "first, then set up the new one."
)


def _already_on(user: User) -> tuple[str, int]:
    """The answer to a setup form sent when the account has an app: the page as it is
    now, saying so (409), and the key that form showed forgotten."""
    session.pop(SETUP_SECRET, None)
    flash(ALREADY_ON, "warning")
    return _enabled_page(user), 409


@twofactor.route("/security/two-factor/recovery-codes", methods=["POST"])
@login_required
def renew_recovery_codes() -> Any:
    """New recovery codes (the old ones stop working); needs the current password."""
    from meta.views import _check_current_password, _password_throttled

    user = _current()
    if totp.factor_of(db, user.id) is None:
        return redirect(url_for("twofactor.settings"))
    throttled = _password_throttled(user)
    if throttled is not None:
        return throttled
    valid = Validation.form(TWO_FACTOR, lambda: _enabled_context(user))
    _check_current_password(valid, user)
    valid.raise_if_invalid()
    codes = totp.new_recovery_codes(db, user.id)
    audit.record(db, Kind.recovery_codes_renewed, user.id)
    db.commit()
    return _enabled_page(user, codes)


def check_password_or_code(valid: Validation, user: User) -> None:
    """Check the current password, or a code (app or recovery) given instead of it.

    What turning a factor off asks for: someone at an unlocked screen cannot remove a
    factor without one of them. Codes count against the same throttle as passwords.
    Raises the form's :class:`~srcore.validation.ValidationFailed` when neither checks out.
    """
    from meta import meta_state
    from meta.views import _check_current_password, _client_address, _throttle_key, _wait_text

    code = valid.optional("code", max_length=CODE_MAX)
    if code:
        protection = meta_state().protection
        key, address = _throttle_key(user, user.username), _client_address()
        if protection is not None:
            # The second step's counter too: codes guessed here are codes guessed.
            decision = protection.check(key, address, second_factor=True)
            if not decision.allowed:
                valid.error(
                    f"Too many wrong codes. Try again in {_wait_text(decision.retry_after)},"
                    " or use your password.",
                    "code",
                )
                valid.raise_if_invalid()
        if totp.check_code(db, user.id, code).ok:
            if protection is not None:
                protection.success(key, address, second_factor=True)
        else:
            if protection is not None:
                protection.failure(key, address, second_factor=True)
            valid.error("This code is not right.", "code")
    else:
        _check_current_password(valid, user)
    if valid.errors:
        db.rollback()
    valid.raise_if_invalid()


@twofactor.route("/security/two-factor/disable", methods=["POST"])
@login_required
def disable() -> Any:
    """Turn two-factor sign-in off: the current password, or a code (app or recovery)."""
    from meta.views import _password_throttled

    user = _current()
    if totp.factor_of(db, user.id) is None:
        return redirect(url_for("twofactor.settings"))
    throttled = _password_throttled(user)
    if throttled is not None:
        return throttled
    check_password_or_code(Validation.form(TWO_FACTOR, lambda: _enabled_context(user)), user)
    totp.remove_factors(db, user.id)
    audit.record(db, Kind.factor_removed, user.id, detail="authenticator app")
    keys_left = passkeys.count_of(db, user.id)
    mail_on_commit(db, "factor-removed", user.email, user=user, passkeys_left=keys_left)
    db.commit()
    if keys_left:
        flash("The authenticator app is off. Your passkeys are still asked for.", "success")
    else:
        flash("Two-factor sign-in is off. Your password alone logs you in now.", "success")
    return redirect(url_for("twofactor.settings"))


# -- the second step of a login ------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    """A login waiting in this browser for its second factor."""

    #: The id the second step's pages carry (:data:`LOGIN_FIELD`).
    id: str
    user: User
    #: Where the login goes once complete.
    target: str | None


def begin_second_step(user: User, target: str | None) -> Response:
    """After the right password: remember who is halfway in, and ask for a code.

    A browser has one waiting login: another account's replaces it, under a new id, and
    the pages shown for the one replaced are answered as such (:func:`waiting_login`).
    The same account's password again keeps the id: its older page is the same person's,
    for the same account, and still answers.
    """
    old = session.get(PENDING)
    login_id = None
    if isinstance(old, dict) and old.get("uid") == user.id and isinstance(old.get("id"), str):
        login_id = old["id"]
    session[PENDING] = {
        "id": login_id or secrets.token_urlsafe(16),
        "uid": user.id,
        "at": time.time(),
        "next": target,
    }
    return redirect(url_for("twofactor.verify"))


def _pending() -> Pending | None:
    """The account halfway through logging in on this browser, unless the wait ran out."""
    pending = session.get(PENDING)
    if not isinstance(pending, dict):
        return None
    login_id, uid = pending.get("id"), pending.get("uid")
    started, target = pending.get("at"), pending.get("next")
    if not isinstance(login_id, str) or not isinstance(uid, int):
        return None
    if not isinstance(started, int | float) or time.time() - started > PENDING_SECONDS:
        return None
    user = db.get(User, uid)
    if user is None or user.is_suspended:
        return None
    safe = target if isinstance(target, str) and is_safe_next(target) else None
    return Pending(login_id, user, safe)


def waiting_login(shown: str | None) -> Pending | Response | None:
    """The waiting login a second-step request answers for: the one whose page sent
    *shown* (its :data:`LOGIN_FIELD`), or, sent without one (no page of ours), the one
    waiting now. None: no login waits here (its wait ran out, or it was completed).

    The answer when another login replaced the page's (a 409 page, or the JSON error for
    the passkey requests) is returned instead: nothing is checked then, so no account's
    counters count what was typed for another.
    """
    found = _pending()
    if shown is None or (found is not None and found.id == shown):
        return found
    if found is None:
        return None
    if wants_json():
        return error_response(409, LOGIN_REPLACED, title="Login replaced")
    return make_response(render_template(REPLACED_PAGE, message=LOGIN_REPLACED), 409)


@twofactor.route("/login/verify", methods=["GET", "POST"])
def verify() -> Any:
    """The login's second step: a code from the app, or a recovery code."""
    from meta import meta_state
    from meta.views import _client_address, _throttle_key, finish_login

    shown = request.form.get(LOGIN_FIELD) if request.method == "POST" else None
    found = waiting_login(shown)
    if isinstance(found, Response):
        return found
    if found is None and current_user._get_current_object() is not None:
        # Logged in meanwhile (the code typed in another tab, say): nothing is waiting.
        session.pop(PENDING, None)
        return redirect(url_for("accounts.profile"))
    if found is None:
        session.pop(PENDING, None)
        flash("Log in again: the wait for your code ran out.", "warning")
        return redirect(url_for("accounts.login"))
    login: Pending = found
    user, target = login.user, login.target
    if not has_second_factor(user.id):
        # An admin reset the factors since the password was checked: log in again with it.
        session.pop(PENDING, None)
        flash("Two-factor sign-in was turned off for your account: log in again.", "warning")
        return redirect(url_for("accounts.login", next=target))
    if request.method == "GET":
        return render_template(VERIFY, valid=None, **_verify_context(login))
    protection = meta_state().protection
    key, address = _throttle_key(user, user.username), _client_address()
    refused = codes_throttled(user, key, address, "second-factor code")
    if refused is not None:
        return refused
    valid = Validation.form(VERIFY, lambda: _verify_context(login))
    code = valid.require("code", max_length=CODE_MAX, label="The code")
    valid.raise_if_invalid()
    assert code is not None  # require() recorded an error otherwise
    check = totp.check_code(db, user.id, code)
    if not check.ok:
        refuse_code(user, key, address, valid, "wrong second-factor code")
    if protection is not None:
        protection.success(key, address, second_factor=True)
    session.pop(PENDING, None)
    detail = "authenticator app" if check.method == "otp" else "recovery code"
    audit.record(db, Kind.factor_used, user.id, detail=detail)
    left = totp.unused_recovery_codes(db, user.id) if check.method == "recovery" else None
    response = finish_login(user, ("pwd", "otp"), target)
    if left is not None:
        flash(
            f"You used a recovery code: {left} left. Make new ones on the two-factor page.",
            "warning",
        )
    return response


def codes_throttled(user: User, key: Any, address: str, what: str) -> Response | None:
    """A 429 when the second step's counters refuse another code for *user* now (its own
    counter too, which a right password does not clear: the login's, whichever page asks
    for the code), audited as *what*; None when a code may be tried."""
    from meta import meta_state
    from meta.views import _too_many

    protection = meta_state().protection
    decision = None if protection is None else protection.check(key, address, second_factor=True)
    if decision is None or decision.allowed:
        return None
    audit.record(db, Kind.login_throttled, user.id, detail=what)
    db.commit()
    return _too_many(decision.retry_after, decision.retry_after_seconds)


def refuse_code(user: User, key: Any, address: str, valid: Validation, what: str) -> NoReturn:
    """Show the form again for a wrong code: nothing the request did stands, the failure
    counts on the second step's counters and is audited as *what*."""
    from meta import meta_state

    db.rollback()
    protection = meta_state().protection
    if protection is not None:
        protection.failure(key, address, second_factor=True)
    audit.record(db, Kind.login_failed, user.id, detail=what)
    db.commit()
    valid.fail("This code is not right.", "code")


VERIFY = "meta/security/verify.html"
REPLACED_PAGE = "meta/security/login_replaced.html"


def _verify_context(found: Pending) -> dict[str, Any]:
    """The second step's page, but ``valid``: a code form if the account has TOTP, a
    passkey button if it has passkeys, both bound to the waiting login *found*."""
    return {
        "username": found.user.username,
        "login_id": found.id,
        "totp_enabled": totp.factor_of(db, found.user.id) is not None,
        "has_passkeys": passkeys.count_of(db, found.user.id) > 0,
    }


# -- the account's activity ---------------------------------------------------------------------


@twofactor.route("/security/activity")
@login_required
def activity() -> Any:
    """Every entry of the account's audit log, newest first."""
    user = _current()
    query = Validation(data=request.args, source="form")
    page = query.optional("page", int, min=1, max=_MAX_PAGE, default=1) or 1
    if not query.ok:
        return render_template("meta/security/activity.html", listing=None, valid=query), 400
    listing = paginate_pages(
        db, audit.AuditFilter(user_id=user.id).statement(), page=page, per_page=PER_PAGE
    )
    return render_template(
        "meta/security/activity.html", listing=listing, kind_label=audit.kind_label, valid=None
    )
