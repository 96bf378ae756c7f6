"""Pages and JSON endpoints of passkeys: add, name and remove them, and log in with one.

The ceremonies run in ``static/passkeys.js`` (no inline script: the pages' policy forbids
it). Each is two POSTs: one asks for the options (and a challenge), the other brings the
authenticator's answer as JSON and gets ``{"redirect": URL}`` back, or the standard error
body with a 4xx status. Adding a passkey needs the current password, removing one the
password or a code; both mail the account, as turning TOTP on and off does. Answers that
fail count against the login throttle like wrong passwords, and are audited.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.wrappers import Response

import srcore
from meta import audit, meta_state, passkeys, totp
from meta.audit import Kind
from meta.mails import mail_on_commit, send_mail
from meta.models import EmailToken, PasskeyCredential, User
from meta.passkeys import PasskeyError, Purpose, RelyingParty
from meta.protection import AccountCounter
from srcore.auth.web import is_safe_next, login_required
from srcore.db import session as db
from srcore.db import utcnow
from srcore.errors import error_response
from srcore.validation import Validation

if TYPE_CHECKING:
    from flask_limiter import Limiter

__all__ = ["CEREMONY", "MAX_PASSKEYS", "install", "passkey_pages"]

passkey_pages = Blueprint("passkeys", __name__)

#: The session key of the ceremony under way: ``{"c", "p", "u", "at", "name"}``.
CEREMONY = "_meta_passkey"
#: The most passkeys one account may have.
MAX_PASSKEYS = 20
#: The throttle key of answers from keys nobody registered (counted per address too).
_UNKNOWN_KEY = "passkey:unknown"
_BAD_ANSWER = "This is not a passkey's answer."
_EXPIRED = "This request has expired or was already used: try again."


def relying_party() -> RelyingParty:
    st = srcore.state()
    return RelyingParty.from_origin(str(st.section["origin"]), str(st.config.global_["site-name"]))


def _current() -> User:
    from meta.views import _user

    return _user()


def _fail(status: int, message: str) -> Response:
    return error_response(status, message)


def _redirect_json(target: str | Response) -> Response:
    """*target* (an address, or a login's redirect, whose cookies come along: the known
    device's) as the JSON the page's script follows."""
    if isinstance(target, str):
        return jsonify({"redirect": target})
    answer = jsonify({"redirect": target.location or url_for("accounts.profile")})
    for cookie in target.headers.getlist("Set-Cookie"):
        answer.headers.add("Set-Cookie", cookie)
    return answer


# -- the ceremony's challenge, in the session and in its table -------------------------------


def _begin(purpose: str, user_id: int | None, **extra: Any) -> bytes:
    challenge = passkeys.new_challenge(db, purpose, user_id, now=utcnow())
    db.commit()
    from webauthn.helpers import bytes_to_base64url

    session[CEREMONY] = {
        "c": bytes_to_base64url(challenge),
        "p": purpose,
        "u": user_id,
        "at": time.time(),
        **extra,
    }
    return challenge


def _take(purpose: str, user_id: int | None) -> tuple[bytes, dict[str, Any]] | None:
    """The challenge this browser was given for *purpose*, spent now (None: there is none,
    it expired, is for something else, or was already answered)."""
    from webauthn.helpers import base64url_to_bytes

    ceremony = session.pop(CEREMONY, None)
    if not isinstance(ceremony, dict) or ceremony.get("p") != purpose:
        return None
    started, encoded = ceremony.get("at"), ceremony.get("c")
    if ceremony.get("u") != user_id or not isinstance(encoded, str):
        return None
    if not isinstance(started, int | float) or time.time() - started > passkeys.CHALLENGE_SECONDS:
        return None
    try:
        challenge = base64url_to_bytes(encoded)
    except ValueError:
        return None
    spent = passkeys.spend_challenge(db, challenge, purpose, user_id, now=utcnow())
    db.commit()
    return (challenge, ceremony) if spent else None


def _answer() -> object:
    """The JSON body: the authenticator's answer as the script sends it."""
    return request.get_json(silent=True)


# -- managing the account's passkeys ----------------------------------------------------------


def passkey_context(user_id: int) -> dict[str, Any]:
    """What the Security page shows of the account's passkeys."""
    return {"passkeys": passkeys.credentials_of(db, user_id), "passkey_max": MAX_PASSKEYS}


def _form(user: User) -> Validation:
    """The posted form; a failed validation shows the passkeys page again (400)."""
    return Validation.form("meta/security/passkeys.html", lambda: passkey_context(user.id))


@passkey_pages.route("/security/passkeys")
@login_required
def settings() -> Any:
    context = passkey_context(_current().id)
    return render_template("meta/security/passkeys.html", valid=None, **context)


@passkey_pages.route("/security/passkeys/options", methods=["POST"])
@login_required
def register_options() -> Any:
    """Step one of adding a passkey: its name and the current password; gives the options."""
    from meta.views import _check_current_password, _password_throttled

    user = _current()
    throttled = _password_throttled(user)
    if throttled is not None:
        return throttled
    valid = Validation(request)
    name = valid.require(
        "name", max_length=passkeys.NAME_MAX, text="name", label="The passkey's name"
    )
    _check_current_password(valid, user)
    valid.expect(
        passkeys.count_of(db, user.id) < MAX_PASSKEYS,
        f"An account has at most {MAX_PASSKEYS} passkeys: remove one first.",
    )
    if valid.errors:
        db.rollback()
    # The page's script asks for JSON: it gets the standard error body, as from _fail.
    valid.raise_if_invalid()
    assert name is not None  # require() recorded an error otherwise
    handle = passkeys.user_handle(db, user.id)
    challenge = _begin(Purpose.register, user.id, name=name, handle=handle)
    return jsonify(
        passkeys.registration_options(
            db,
            relying_party(),
            user_id=user.id,
            username=user.username,
            handle=handle,
            challenge=challenge,
        )
    )


@passkey_pages.route("/security/passkeys", methods=["POST"])
@login_required
def register() -> Any:
    """Step two of adding a passkey: the authenticator's new credential."""
    user = _current()
    taken = _take(Purpose.register, user.id)
    if taken is None:
        return _fail(400, _EXPIRED)
    challenge, ceremony = taken
    name = str(ceremony.get("name") or "Passkey")[: passkeys.NAME_MAX]
    handle = ceremony.get("handle")
    if not isinstance(handle, str) or not handle:
        return _fail(400, _EXPIRED)
    try:
        registered = passkeys.verify_registration(relying_party(), _answer(), challenge)
        key = passkeys.add_credential(db, user.id, registered, name, handle, most=MAX_PASSKEYS)
    except PasskeyError as exc:
        db.rollback()
        audit.record(db, Kind.passkey_failed, user.id, detail=f"adding {name}: {exc.detail}")
        db.commit()
        return _fail(400, exc.message)
    audit.record(db, Kind.passkey_added, user.id, detail=key.name)
    db.commit()
    send_mail("passkey-added", user.email, user=user, passkey=key.name)
    flash(f"The passkey “{key.name}” is added.", "success")
    return _redirect_json(url_for("oauth_security.security", _anchor="passkeys"))


def _own_key(user: User, key_id: int) -> PasskeyCredential:
    key = db.get(PasskeyCredential, key_id)
    if key is None or key.user_id != user.id:
        abort(404)
    return key


@passkey_pages.route("/security/passkeys/<id:key_id>/name", methods=["POST"])
@login_required
def rename(key_id: int) -> Any:
    user = _current()
    key = _own_key(user, key_id)
    valid = _form(user)
    name = valid.require(
        "name", max_length=passkeys.NAME_MAX, text="name", label="The passkey's name"
    )
    valid.raise_if_invalid()
    assert name is not None  # require() recorded an error otherwise
    key.name = name
    db.commit()
    flash(f"The passkey is now called “{name}”.", "success")
    return redirect(url_for("oauth_security.security", _anchor="passkeys"))


@passkey_pages.route("/security/passkeys/<id:key_id>/remove", methods=["POST"])
@login_required
def remove(key_id: int) -> Any:
    """Remove a passkey: the current password, or a code (app or recovery)."""
    from meta.twofactor import check_password_or_code
    from meta.views import _password_throttled

    user = _current()
    key = _own_key(user, key_id)
    throttled = _password_throttled(user)
    if throttled is not None:
        return throttled
    check_password_or_code(_form(user), user)
    name = key.name
    passkeys.remove_credential(db, user.id, key.id)
    audit.record(db, Kind.passkey_removed, user.id, detail=name)
    mail_on_commit(
        db,
        "passkey-removed",
        user.email,
        user=user,
        passkey=name,
        left=passkeys.count_of(db, user.id),
        totp_on=totp.factor_of(db, user.id) is not None,
    )
    db.commit()
    flash(f"The passkey “{name}” is removed.", "success")
    return redirect(url_for("oauth_security.security", _anchor="passkeys"))


# -- logging in with a passkey --------------------------------------------------------------


def _target() -> str | None:
    target = request.args.get("next")
    return target if target and is_safe_next(target) else None


@passkey_pages.route("/login/passkey/options", methods=["POST"])
def login_options() -> Any:
    """Step one of a login without a password: a challenge for any of this site's keys."""
    challenge = _begin(Purpose.login, None)
    return jsonify(
        passkeys.authentication_options(
            db, relying_party(), challenge=challenge, user_id=None, require_user_verification=True
        )
    )


def _throttled(
    user_id: int | None, account: str | AccountCounter, *, second_factor: bool = False
) -> Response | None:
    """A 429 (audited) if the account or this address may not try now (with
    *second_factor*, the second step's counter of the account too)."""
    from meta.views import _client_address, _too_many

    protection = meta_state().protection
    if protection is None:
        return None
    decision = protection.check(account, _client_address(), second_factor=second_factor)
    if decision.allowed:
        return None
    audit.record(db, Kind.login_throttled, user_id, detail="passkey")
    db.commit()
    return _too_many(decision.retry_after, decision.retry_after_seconds)


def _refuse(
    user_id: int | None,
    account: str | AccountCounter,
    exc: PasskeyError,
    *,
    second_factor: bool = False,
) -> Response:
    from meta.views import _client_address

    db.rollback()
    protection = meta_state().protection
    if protection is not None:
        protection.failure(account, _client_address(), second_factor=second_factor)
    audit.record(db, Kind.passkey_failed, user_id, detail=exc.detail)
    db.commit()
    return _fail(400, exc.message)


@passkey_pages.route("/login/passkey", methods=["POST"])
def login() -> Any:
    """Step two of a login without a password: the key's answer, the user verified."""
    from meta.views import _client_address, _throttle_key, finish_login

    taken = _take(Purpose.login, None)
    if taken is None:
        return _fail(400, _EXPIRED)
    challenge, _ceremony = taken
    answer = _answer()
    try:
        key_id = passkeys.answer_credential_id(answer)
    except PasskeyError as exc:
        return _fail(400, exc.message)
    key = passkeys.find_credential(db, key_id)
    if key is None:
        throttled = _throttled(None, _UNKNOWN_KEY)
        if throttled is not None:
            return throttled
        return _refuse(
            None,
            _UNKNOWN_KEY,
            PasskeyError("This passkey is not registered here.", "unknown passkey"),
        )
    user = db.get(User, key.user_id)
    assert user is not None  # the key's row goes with its account
    account = _throttle_key(user, user.username)
    throttled = _throttled(user.id, account)
    if throttled is not None:
        return throttled
    name = key.name
    try:
        used = passkeys.verify_assertion(
            db, relying_party(), answer, key, challenge, require_user_verification=True
        )
    except PasskeyError as exc:
        exc.detail = f"{name}: {exc.detail}"[:200]
        return _refuse(user.id, account, exc)
    protection = meta_state().protection
    if protection is not None:
        protection.success(account, _client_address())
    if user.is_suspended:
        db.commit()
        return _fail(403, user.suspension_notice or "This account is suspended.")
    audit.record(db, Kind.passkey_used, user.id, detail=f"{name}, without a password")
    response = finish_login(user, used.amr, _target())
    return _redirect_json(response)


def _second_factor_options(user: User, **extra: Any) -> Response:
    """Step one of a passkey as the second factor of *user*: a challenge for its keys."""
    if passkeys.count_of(db, user.id) == 0:
        return _fail(400, "Your account has no passkey.")
    challenge = _begin(Purpose.second, user.id, **extra)
    return jsonify(
        passkeys.authentication_options(
            db,
            relying_party(),
            challenge=challenge,
            user_id=user.id,
            require_user_verification=False,
        )
    )


def _check_second_factor(
    user: User, link: str | None = None, login: str | None = None
) -> tuple[str, Any] | Response:
    """Step two of a passkey as the second factor of *user*: the name of the key that
    answered this browser's challenge and what it proved (:func:`passkeys.verify_assertion`),
    or the refusal to send. *link* is the hash of the reset link the challenge was given
    for, *login* the id of the waiting login (:class:`meta.twofactor.Pending`) it was
    given for: a challenge answers for those only. A refused answer counts on the second
    step's counter."""
    from meta.views import _client_address, _throttle_key

    account = _throttle_key(user, user.username)
    throttled = _throttled(user.id, account, second_factor=True)
    if throttled is not None:
        return throttled
    taken = _take(Purpose.second, user.id)
    if taken is None:
        return _fail(400, _EXPIRED)
    challenge, ceremony = taken
    if ceremony.get("link") != link or ceremony.get("login") != login:
        return _fail(400, _EXPIRED)
    answer = _answer()
    try:
        key_id = passkeys.answer_credential_id(answer)
    except PasskeyError as exc:
        return _fail(400, exc.message)
    key = passkeys.find_credential(db, key_id)
    if key is None or key.user_id != user.id:
        return _refuse(
            user.id,
            account,
            PasskeyError("This passkey is not one of your account's.", "another account's key"),
            second_factor=True,
        )
    name = key.name
    try:
        used = passkeys.verify_assertion(
            db, relying_party(), answer, key, challenge, require_user_verification=False
        )
    except PasskeyError as exc:
        exc.detail = f"{name}: {exc.detail}"[:200]
        return _refuse(user.id, account, exc, second_factor=True)
    protection = meta_state().protection
    if protection is not None:
        protection.success(account, _client_address(), second_factor=True)
    return name, used


@passkey_pages.route("/login/verify/passkey/options", methods=["POST"])
def second_step_options() -> Any:
    """Step one of a passkey as the second factor: a challenge for the keys of the account
    whose waiting login the page was shown for (``?login_token=``)."""
    from meta.twofactor import LOGIN_FIELD, waiting_login

    found = waiting_login(request.args.get(LOGIN_FIELD))
    if isinstance(found, Response):
        return found
    if found is None:
        return _fail(400, "Log in again: the wait for your second factor ran out.")
    return _second_factor_options(found.user, login=found.id)


@passkey_pages.route("/login/verify/passkey", methods=["POST"])
def second_step() -> Any:
    """Step two of a passkey as the second factor, after the right password: for the
    waiting login the page was shown for (``?login_token=``), and no other."""
    from meta.twofactor import LOGIN_FIELD, PENDING, waiting_login
    from meta.views import finish_login

    found = waiting_login(request.args.get(LOGIN_FIELD))
    if isinstance(found, Response):
        return found
    if found is None:
        session.pop(PENDING, None)
        return _fail(400, "Log in again: the wait for your second factor ran out.")
    user, target = found.user, found.target
    checked = _check_second_factor(user, login=found.id)
    if isinstance(checked, Response):
        return checked
    name, used = checked
    session.pop(PENDING, None)
    audit.record(db, Kind.passkey_used, user.id, detail=f"{name}, after the password")
    response = finish_login(user, ["pwd", *used.amr], target)
    return _redirect_json(response)


# -- a passkey as the second factor of a password reset -----------------------------------------


def _reset_account(token: str) -> tuple[EmailToken, User] | Response:
    """The reset link *token* and its account, if it asks for a second factor."""
    from meta.views import LINK_NOT_VALID, reset_asks_second_factor, reset_link

    link = reset_link(token)
    if link is None:
        return _fail(404, LINK_NOT_VALID)
    if not reset_asks_second_factor(link[1]):
        return _fail(400, "Your account has no passkey.")
    return link


@passkey_pages.route("/reset/<token>/passkey/options", methods=["POST"])
def reset_options(token: str) -> Any:
    """Step one of a passkey on a reset page: a challenge for the account's keys."""
    link = _reset_account(token)
    if isinstance(link, Response):
        return link
    found, user = link
    return _second_factor_options(user, link=found.token_hash)


@passkey_pages.route("/reset/<token>/passkey", methods=["POST"])
def reset_second_factor(token: str) -> Any:
    """Step two of a passkey on a reset page: once it checks out, the page takes the new
    password without a code (for a while, in this browser, for this link)."""
    from meta.views import prove_reset

    link = _reset_account(token)
    if isinstance(link, Response):
        return link
    found, user = link
    checked = _check_second_factor(user, found.token_hash)
    if isinstance(checked, Response):
        return checked
    name, used = checked
    audit.record(db, Kind.passkey_used, user.id, detail=f"{name}, for a password reset")
    db.commit()
    prove_reset(found, user, used.amr, name)
    return _redirect_json(url_for("accounts.reset", token=token))


# -- wiring ---------------------------------------------------------------------------------


def install(app: Flask, limiter: Limiter) -> None:
    """Put the login forms' rate limits on the passkey endpoints."""
    from meta.protection import RATE_LIMITS

    views = app.view_functions
    for endpoint, rule in (
        ("passkeys.login_options", RATE_LIMITS["login"]),
        ("passkeys.login", RATE_LIMITS["login"]),
        ("passkeys.second_step_options", RATE_LIMITS["login"]),
        ("passkeys.second_step", RATE_LIMITS["login"]),
        ("passkeys.reset_options", RATE_LIMITS["login"]),
        ("passkeys.reset_second_factor", RATE_LIMITS["login"]),
        ("passkeys.register_options", RATE_LIMITS["current-password"]),
        ("passkeys.register", RATE_LIMITS["current-password"]),
        ("passkeys.remove", RATE_LIMITS["current-password"]),
    ):
        decorate: Any = limiter.limit(rule, methods=["POST"])
        views[endpoint] = decorate(views[endpoint])
