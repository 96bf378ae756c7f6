"""meta's account pages: register, confirm, log in and out, reset, profile, email, delete.

Every form re-renders itself with its errors (status 400) when its input is invalid and
redirects after a successful POST. CSRF is checked by srcore on every POST; the templates
carry the token with ``forms.csrf()``. meta's ``/login`` and ``/logout`` replace the views
srcore gives every service (which would send the browser to meta: here, to itself).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

from flask import (
    Blueprint,
    Flask,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

import srcore
from meta import audit, logic, meta_state, signals
from meta.audit import Kind
from meta.mails import mail_on_commit, prepare_mail, send_mail
from meta.models import EmailToken, TokenPurpose, User
from meta.protection import AccountCounter
from meta.settings import meta_settings
from srcore.auth.web import current_user, is_safe_next, log_in, log_out, login_required
from srcore.conditional import form_version, opened_version_holds
from srcore.db import UserType, utcnow
from srcore.db import session as db
from srcore.errors import error_response
from srcore.sqlrows import lock_row
from srcore.validation import MAX_EMAIL_LENGTH, Validation

if TYPE_CHECKING:
    from datetime import timedelta

    from flask_limiter import Limiter

__all__ = ["MetaLogin", "accounts", "finish_login", "install"]

log = logging.getLogger("meta")

accounts = Blueprint("accounts", __name__)

INCORRECT = "Incorrect username or password."
BIO_MAX = 4096
FIELD_MAX = 256
#: The session key holding when this browser logged in (epoch seconds).
SESSION_STARTED = "_meta_at"
#: The session key holding the secret of this browser's server-side session.
SESSION_ID = "_meta_sid"


class MetaLogin:
    """meta's login backend: its own login page, not a redirect to itself over OAuth."""

    def begin_login(self, next_url: str) -> Response:
        target = next_url if is_safe_next(next_url) and next_url != "/" else None
        return redirect(url_for("accounts.login", next=target))

    def logout_url(self) -> str | None:
        return None

    def session_values(self, user_id: int, amr: Iterable[str] = ("pwd",)) -> dict[str, Any]:
        """Start a server-side session for *user_id* and commit it; return what the cookie
        adds to ``_uid``. The login pages use it, and tests that log a user in directly.
        *amr* says how the user proved who they are (``pwd``, ``otp``)."""
        secret = logic.start_web_session(
            db, user_id, lifetime=current_app.permanent_session_lifetime, amr=amr
        )
        db.commit()
        return {SESSION_ID: secret, SESSION_STARTED: time.time()}


def _user() -> User:
    user = cast("User | None", current_user._get_current_object())
    if user is None:  # login_required guards every caller
        abort(401)
    return user


def _next_url() -> str | None:
    target = request.values.get("next")
    return target if target and is_safe_next(target) else None


def _client_address() -> str:
    # An IPv6 client by its /64, as srcore's write limits count it: one subscriber holds
    # the whole /64, and each address of it must not be a fresh allowance.
    from srcore.ratelimit import client_address

    return client_address()


def _start_session(user: User, amr: Iterable[str] | None = None) -> None:
    """Log this browser in as *user*, with a new server-side session (ends the old one).

    Without *amr*, the new session keeps the old one's (a password change while logged in
    with two factors is still a two-factor session), else ``pwd``.
    """
    old = session.get(SESSION_ID)
    if amr is None:
        amr = logic.web_session_amr(db, old) or ["pwd"]
    logic.end_web_session(db, old)
    values = MetaLogin().session_values(user.id, amr)
    log_in(user.id)
    session.update(values)


def _wait_text(seconds: float) -> str:
    if seconds <= 90:
        whole = max(1, int(seconds + 0.999))
        return f"{whole} second{'s' if whole != 1 else ''}"
    minutes = int(seconds / 60 + 0.999)
    return f"{minutes} minutes"


def _reserved_names() -> set[str]:
    return set(srcore.state().config.services)


# -- log in and out ----------------------------------------------------------------------


@accounts.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """Log in with a username or address and a password."""
    target = _next_url()
    if request.method == "GET":
        # ?reauth=1: an OpenID client asked for a fresh login (prompt=login, max_age).
        if _logged_in() is not None and request.args.get("reauth") != "1":
            return redirect(target or url_for("accounts.profile"))
        return render_template("meta/login.html", valid=None, next=target)
    valid = Validation.form("meta/login.html", next=target)
    name = valid.require("login", max_length=FIELD_MAX, label="Username or email")
    password = valid.require("password", strip=False, max_length=logic.PASSWORD_MAX_LENGTH)
    valid.raise_if_invalid()
    assert name is not None and password is not None  # require() recorded an error otherwise

    state = meta_state()
    protection = state.protection
    address = _client_address()
    user = logic.find_login(db, name)
    # One counter per account, whether it is named by its username or its address.
    account = _throttle_key(user, name)
    if protection is not None:
        decision = protection.check(account, address)
        if not decision.allowed:
            audit.record(db, Kind.login_throttled, user.id if user else None, detail="password")
            db.commit()
            valid.error(
                f"Too many failed attempts. Try again in {_wait_text(decision.retry_after)}."
            )
            response = current_app.make_response(
                (render_template("meta/login.html", valid=valid, next=target), 429)
            )
            response.headers["Retry-After"] = str(decision.retry_after_seconds)
            return response

    # An unknown account costs one dummy verification, as long as a real one.
    if not state.passwords.verify(user.password_hash if user else None, password):
        if protection is not None:
            protection.failure(account, address)
        audit.record(
            db,
            Kind.login_failed,
            user.id if user else None,
            detail="wrong password" if user else "no such account",
        )
        db.commit()
        valid.fail(INCORRECT)
    assert user is not None
    # The account as it is now, held until the login is recorded: a password changed
    # (every session ended) or an account deleted since it was read and checked must not
    # leave a session started with the old password behind.
    verified = user.password_hash
    if not lock_row(db, user) or user.password_hash != verified:
        valid.fail(INCORRECT)
    if protection is not None:
        protection.success(account, address)
    if user.is_suspended:
        notice = user.suspension_notice or "This account is suspended."
        return error_response(403, notice, title="Account suspended")
    if state.passwords.needs_rehash(user.password_hash) or not state.passwords.hashed_normal(
        user.password_hash, password
    ):
        # A hash of the password as typed before passwords were normalised becomes a
        # hash of its normal form, which every form of it matches from now on.
        user.password_hash = state.passwords.hash(password)
    from meta.twofactor import begin_second_step, has_second_factor

    if has_second_factor(user.id):
        db.commit()
        return begin_second_step(user, target)
    return finish_login(user, ("pwd",), target)


def finish_login(user: User, amr: Iterable[str], target: str | None) -> Response:
    """The last step of every login: record it, start the session, go where asked."""
    amr = list(amr)
    user.last_login_at = utcnow()
    audit.record(
        db, Kind.login, user.id, detail="with " + " + ".join(_AMR_WORDS.get(m, m) for m in amr)
    )
    db.commit()
    _start_session(user, amr)
    flash(f"Logged in as {user.username}.", "success")
    response = redirect(target or url_for("accounts.profile"))
    _remember_device(response, user.id)
    return response


#: Words for the audit log of the RFC 8176 methods a login used (passkeys: see meta.passkeys).
_AMR_WORDS = {
    "pwd": "password",
    "otp": "one-time code",
    "hwk": "passkey",
    "swk": "synced passkey",
    "pin": "user verified",
    "user": "user present",
}


@accounts.route("/logout", methods=["POST"])
def logout() -> Response:
    """End this browser's session, and (through the OAuth half) the services' sessions."""
    user = _logged_in()
    logic.end_web_session(db, session.get(SESSION_ID))
    if user is not None:
        signals.logged_out.send(user)
        audit.record(db, Kind.logout, user.id)
    db.commit()
    log_out()
    flash("You are logged out.", "success")
    return redirect(url_for("accounts.login"))


@accounts.route("/logout/everywhere", methods=["POST"])
@login_required
def logout_everywhere() -> Response:
    """End every session of the account: every browser at meta, and at every service."""
    user = _user()
    logic.end_web_sessions(db, user.id)
    user.sessions_valid_after = utcnow()
    signals.logged_out.send(user)
    audit.record(db, Kind.logout, user.id, detail="everywhere")
    db.commit()
    log_out()
    flash("You are logged out everywhere.", "success")
    return redirect(url_for("accounts.login"))


# -- registration and confirmation ------------------------------------------------------------


@accounts.route("/register", methods=["GET", "POST"])
def register() -> Any:
    if meta_settings().registration != "open":
        return error_response(
            403, "Registration is closed on this network.", title="Registration closed"
        )
    if _logged_in() is not None:
        return redirect(url_for("accounts.profile"))
    min_length = meta_settings().password_min_length
    if request.method == "GET":
        return render_template("meta/register.html", valid=None, min_length=min_length)
    valid = Validation.form("meta/register.html", min_length=min_length)
    username = (valid.require("username", max_length=FIELD_MAX) or "").lower()
    email = _address_field(valid, "email", "Email address")
    password = valid.require("password", strip=False, max_length=logic.PASSWORD_MAX_LENGTH)
    if username:
        problem = logic.check_username(username, reserved=_reserved_names())
        valid.expect(problem is None, problem or "", field="username")
    _expect_free(valid, username, email)
    if password:
        problem = logic.check_password(password, min_length=min_length, username=username)
        valid.expect(problem is None, problem or "", field="password")
    valid.raise_if_invalid()
    assert email and password  # require() recorded an error otherwise

    state = meta_state()
    try:
        user = logic.create_user(
            db, username=username, email=email, password_hash=state.passwords.hash(password)
        )
    except IntegrityError:
        # Another registration took the name or the address since the check above (the
        # database holds one account per each): the form again, saying which.
        db.rollback()
        _expect_free(valid, username, email)
        valid.raise_if_invalid()
        raise
    secret = logic.issue_token(
        db,
        user,
        TokenPurpose.confirm,
        email=user.email,
        lifetime=meta_settings().confirmation_lifetime,
    )
    db.commit()
    log.info("account %s (%d) registered", user.username, user.id)
    sent = send_mail("confirm", user.email, user=user, token=secret)
    _start_session(user)
    if sent:
        flash(f"Welcome! We sent a link to {user.email}: follow it to confirm your address.")
    else:
        flash(
            "Your account is created, but the confirmation mail could not be sent. "
            "Try sending it again below.",
            "warning",
        )
    return redirect(url_for("accounts.profile"))


def _address_field(valid: Validation, field: str, label: str) -> str | None:
    """The address in *field*, in the one form it is stored and compared in
    (:func:`logic.normalize_email`): ``Alice@Bücher.example`` and
    ``alice@xn--bcher-kva.example`` are one mailbox, so one account. None (with the error
    recorded) if it is missing or its canonical form is no address."""
    # Checked in that form: full-width letters, dots and at sign are the address they
    # read as, which the email rule refuses as typed.
    typed = valid.require(field, max_length=MAX_EMAIL_LENGTH, label=label)
    if typed is None:
        return None
    problem = logic.email_problem(typed)
    if problem is not None:
        valid.error(problem, field)
        return None
    return logic.normalize_email(typed)


def _expect_free(valid: Validation, username: str, email: str | None) -> None:
    """Record on *valid* that the username or the address belongs to an account already."""
    if username and not valid.error_for("username"):
        valid.expect(
            not logic.username_taken(db, username), "This username is taken.", field="username"
        )
    if email and not valid.error_for("email"):
        valid.expect(
            not logic.email_taken(db, email), "Another account uses this address.", field="email"
        )


@accounts.route("/confirm/<token>")
@srcore.writes_on_safe_method("the link in a confirmation mail is opened with GET")
def confirm(token: str) -> Any:
    """Follow a link from a confirmation mail (a new account's, or a new address's)."""
    found = logic.find_token(db, token, (TokenPurpose.confirm, TokenPurpose.change_email))
    result = logic.confirm(db, found) if found is not None else None
    if result is None:
        db.rollback()
        return error_response(
            404,
            "This link is invalid, was already used or has expired. Log in to ask for a new one.",
            title="Link not valid",
        )
    if not isinstance(result, str) and result.purpose == TokenPurpose.change_email:
        audit.record(db, Kind.email_changed, result.user.id, detail=f"to {result.email}")
    db.commit()
    if isinstance(result, str):
        return error_response(400, result, title="Link not valid")
    viewer = _logged_in()
    # Another account's link (a forwarded mail) confirms that account, not the viewer's.
    whose = "Your" if viewer is None or viewer.id == result.user.id else "The"
    flash(f"{whose} address {result.email} is confirmed.", "success")
    if viewer is None:
        return redirect(url_for("accounts.login"))
    return redirect(url_for("accounts.profile"))


@accounts.route("/confirm/resend", methods=["POST"])
@login_required
def resend_confirmation() -> Response:
    user = _user()
    if user.email_confirmed_at is not None and user.user_type != UserType.unconfirmed:
        flash("Your address is already confirmed.")
        return redirect(url_for("accounts.profile"))
    secret = logic.issue_token(
        db,
        user,
        TokenPurpose.confirm,
        email=user.email,
        lifetime=meta_settings().confirmation_lifetime,
    )
    db.commit()
    if send_mail("confirm", user.email, user=user, token=secret):
        flash(f"We sent a new confirmation link to {user.email}.", "success")
    else:
        flash("The mail could not be sent. Try again later.", "error")
    return redirect(url_for("accounts.profile"))


# -- forgotten passwords -------------------------------------------------------------------


@accounts.route("/forgot", methods=["GET", "POST"])
def forgot() -> Any:
    if request.method == "GET":
        return render_template("meta/forgot.html", valid=None, sent=False)
    valid = Validation.form("meta/forgot.html", sent=False)
    email = _address_field(valid, "email", "Email address")
    valid.raise_if_invalid()
    assert email  # require() recorded an error otherwise
    user = logic.find_login(db, email)
    response = current_app.make_response(
        render_template("meta/forgot.html", valid=None, sent=True, email=email)
    )
    if user is not None and not user.is_suspended:
        # The link is made and mailed once the answer is out: the answer costs the same
        # whether or not an account uses the address, so its timing tells nothing.
        response.call_on_close(_reset_mailer(user.id))
    # The same answer whether or not an account uses the address.
    return response


def _reset_mailer(user_id: int) -> Callable[[], None]:
    """Issue a reset link for *user_id* and mail it, outside the request (no request
    context: a transaction and an app context of its own)."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    lifetime = meta_settings().reset_lifetime
    protection = meta_state().protection

    def issue_and_send() -> None:
        try:
            if protection is not None and not protection.mail_allowed("reset", user_id):
                # Enough links are on their way to that mailbox; the last one still works.
                log.info("reset link for account %d not mailed: too many lately", user_id)
                return
            with app.app_context():
                with srcore.state(app).db.transaction() as session:
                    user = session.get(User, user_id)
                    if user is None or user.is_suspended:
                        return
                    secret = logic.issue_token(
                        session, user, TokenPurpose.reset, email=user.email, lifetime=lifetime
                    )
                    mail = prepare_mail("reset", user.email, user=user, token=secret)
                mail.send()
        except Exception:  # the answer is gone: nobody but the log can hear of it
            log.exception("cannot mail a reset link to account %d", user_id)

    return issue_and_send


#: The answer to a reset link that cannot be followed (now).
LINK_NOT_VALID = "This link is invalid, was already used or has expired. Ask for a new one."
#: The session key saying which reset links this browser answered with a passkey of their
#: account: ``{the link's hash: {"u", "at", "amr", "key"}}``. One per link: a link opened in
#: another tab (another account's) must not take the proof of the first one's page.
RESET_PROVEN = "_meta_reset_2fa"
#: How long a passkey checked on a reset page lets its password be chosen.
RESET_PROVEN_SECONDS = 300
#: How many links' proofs a browser keeps at once (the newest).
RESET_PROOFS_KEPT = 4


def reset_link(token: str) -> tuple[EmailToken, User] | None:
    """The reset link *token* and its account, if the link may be followed now."""
    found = logic.find_token(db, token, (TokenPurpose.reset,))
    user = db.get(User, found.user_id) if found is not None else None
    # A link is good only for the address it was mailed to, while the account has it.
    if (
        found is None
        or user is None
        or user.is_suspended
        or found.email != logic.normalize_email(user.email)
    ):
        return None
    return found, user


def reset_asks_second_factor(user: User) -> bool:
    """Whether a reset link of *user* also asks for the account's second factor.

    The link proves the mailbox only: whoever reads it must not replace the password of an
    account that logs in with two factors (ending its owner's sessions and tokens) without
    the second. An address never confirmed is the exception: its factors, added before
    anyone proved the mailbox, are removed by the reset (:func:`_drop_unproven_factors`).
    """
    from meta.twofactor import has_second_factor

    return user.email_confirmed_at is not None and has_second_factor(user.id)


def prove_reset(found: EmailToken, user: User, amr: Iterable[str], key: str) -> None:
    """Remember that this browser answered with *user*'s passkey *key* for reset link
    *found*: its password may be chosen for a while without a code. The proofs of other
    links stand (pages of two accounts' links may be open in two tabs)."""
    now = time.time()
    kept = [
        (link, proof)
        for link, proof in _reset_proofs().items()
        if link != found.token_hash and now - proof.get("at", 0) <= RESET_PROVEN_SECONDS
    ][-(RESET_PROOFS_KEPT - 1) :]
    session[RESET_PROVEN] = {
        **dict(kept),
        found.token_hash: {"u": user.id, "at": now, "amr": list(amr), "key": key},
    }


def _reset_proofs() -> dict[str, dict[str, Any]]:
    """The proofs this browser holds, by link hash (none if the session holds none)."""
    proofs = session.get(RESET_PROVEN)
    if not isinstance(proofs, dict):
        return {}
    return {
        link: proof
        for link, proof in proofs.items()
        if isinstance(link, str)
        and isinstance(proof, dict)
        and isinstance(proof.get("at"), int | float)
    }


def _reset_proof(found: EmailToken, user: User) -> tuple[list[str], str] | None:
    """The methods (RFC 8176) and the passkey's name this browser proved for the link
    *found*, unless it proved none for it, or too long ago."""
    proof = _reset_proofs().get(found.token_hash)
    if proof is None:
        return None
    started, amr, key = proof.get("at"), proof.get("amr"), proof.get("key")
    if proof.get("u") != user.id or not isinstance(started, int | float):
        return None
    if time.time() - started > RESET_PROVEN_SECONDS or not isinstance(key, str):
        return None
    if not isinstance(amr, list) or not all(isinstance(m, str) for m in amr):
        return None
    return amr, key


def _reset_context(token: str, found: EmailToken, user: User) -> dict[str, Any]:
    """The reset page, but ``valid``: which second factor it asks for, if any."""
    from meta import passkeys, totp

    asks = reset_asks_second_factor(user) and _reset_proof(found, user) is None
    return {
        "token": token,
        "user": user,
        "min_length": meta_settings().password_min_length,
        "asks_factor": asks,
        "totp_enabled": asks and totp.factor_of(db, user.id) is not None,
        "has_passkeys": asks and passkeys.count_of(db, user.id) > 0,
    }


@accounts.route("/reset/<token>", methods=["GET", "POST"])
def reset(token: str) -> Any:
    """Choose a new password with a mailed link; an account with a second factor gives it
    here too (a code, a recovery code, or a passkey checked on this page first)."""
    from meta import totp
    from meta.twofactor import CODE_MAX, codes_throttled, refuse_code

    link = reset_link(token)
    if link is None:
        return error_response(404, LINK_NOT_VALID, title="Link not valid")
    found, user = link
    if request.method == "GET":
        return render_template("meta/reset.html", valid=None, **_reset_context(token, found, user))
    protection = meta_state().protection
    key, address = _throttle_key(user, user.username), _client_address()
    second = reset_asks_second_factor(user)
    proof = _reset_proof(found, user) if second else None
    asks = second and proof is None
    # The login's second step's counters: a code guessed here is a code guessed.
    refused = codes_throttled(user, key, address, "second-factor code, reset") if asks else None
    if refused is not None:
        return refused
    valid = Validation.form("meta/reset.html", lambda: _reset_context(token, found, user))
    min_length = meta_settings().password_min_length
    password = valid.require("password", strip=False, max_length=logic.PASSWORD_MAX_LENGTH)
    code = None
    if asks:
        if totp.factor_of(db, user.id) is not None:
            code = valid.require("code", max_length=CODE_MAX, label="The code")
        else:
            valid.error("Use your passkey first, then choose your new password.")
    if password:
        problem = logic.check_password(password, min_length=min_length, username=user.username)
        valid.expect(problem is None, problem or "", field="password")
    valid.raise_if_invalid()
    assert password  # require() recorded an error otherwise
    amr = ["pwd"]
    used_code = None
    if code is not None:
        # Checked (and spent) last: a code is not used up by a form refused for its password.
        check = totp.check_code(db, user.id, code)
        if not check.ok:
            refuse_code(user, key, address, valid, "wrong second-factor code, reset")
        used_code = check.method
        amr.append("otp")
        detail = "authenticator app" if used_code == "otp" else "recovery code"
        audit.record(db, Kind.factor_used, user.id, detail=f"{detail}, for a password reset")
    elif proof is not None:
        amr = ["pwd", *proof[0]]
    if not logic.consume_token(db, found):
        # Another request followed the same link first: this one changes nothing.
        db.rollback()
        return error_response(404, LINK_NOT_VALID, title="Link not valid")
    # The mail reached the account's address: that confirms it too.
    if user.email_confirmed_at is None:
        user.email_confirmed_at = utcnow()
        if user.user_type == UserType.unconfirmed:
            user.user_type = UserType.active
        _drop_unproven_factors(user)
    logic.set_password(db, user, meta_state().passwords.hash(password))
    audit.record(db, Kind.password_changed, user.id, detail="with a reset link")
    db.commit()
    # The proofs of other links (another tab's page) outlive this login, which starts the
    # session afresh: their pages still take a password without asking again.
    others = _reset_proofs()
    others.pop(found.token_hash, None)
    if protection is not None:
        protection.success(key, address, second_factor=second)
    _start_session(user, amr)
    if others:
        session[RESET_PROVEN] = others
    flash("Your password is changed.", "success")
    if used_code == "recovery":
        left = totp.unused_recovery_codes(db, user.id)
        flash(
            f"You used a recovery code: {left} left. Make new ones on the two-factor page.",
            "warning",
        )
    return redirect(url_for("accounts.profile"))


def _drop_unproven_factors(user: User) -> None:
    """Remove the second factors of an account whose address a reset link proves first.

    Whoever registered may not own the address (anyone can register with someone else's):
    the mailbox's owner, taking the account with the link, must not find a passkey of theirs
    that logs in alone, nor an app whose codes only they have.
    """
    from meta import passkeys, totp

    removed = []
    if totp.remove_factors(db, user.id):
        removed.append("authenticator app")
    keys = passkeys.remove_all(db, user.id)
    if keys:
        removed.append(f"{keys} passkey{'s' if keys != 1 else ''}")
    if removed:
        audit.record(
            db,
            Kind.factor_removed,
            user.id,
            detail=", ".join(removed) + ", added before the address was confirmed",
        )


# -- the logged-in user's pages ----------------------------------------------------------------


@accounts.route("/")
@login_required
def index() -> Response:
    return redirect(url_for("accounts.profile"))


def profile_version(user: User) -> str:
    """A short digest of what the profile form changes, carried by the form as ``was``."""
    return form_version(user.url, user.location, user.bio)


@accounts.route("/profile", methods=["GET", "POST"])
@login_required
def profile() -> Any:
    user = _user()
    if request.method == "GET":
        return render_template(
            "meta/profile.html", valid=None, user=user, version=profile_version(user)
        )
    valid = Validation.form(
        "meta/profile.html", lambda: {"user": user, "version": profile_version(user)}
    )
    url = valid.optional("url", "url", label="Web site")
    location = valid.optional("location", max_length=FIELD_MAX, text="line")
    bio = valid.optional("bio", max_length=BIO_MAX, strip=False)
    bio = bio.strip() if bio else None
    valid.raise_if_invalid()
    # Read again, held: a save from a page opened before another tab's (or an
    # administrator's) save comes back with the person's text instead of replacing it.
    lock_row(db, user)
    opened_version_holds(
        valid,
        profile_version(user),
        "Your profile was changed (in another tab, say) since you opened this page. "
        "Your text is below, unsaved: save it again to replace the other change.",
    )
    valid.raise_if_invalid()
    if (user.url, user.location, user.bio) != (url, location, bio):
        user.url, user.location, user.bio = url, location, bio or None
        db.flush()
        signals.profile_changed.send(user)
        db.commit()
    flash("Your profile is saved.", "success")
    return redirect(url_for("accounts.profile"))


def _throttle_key(user: User | None, login: str) -> str | AccountCounter:
    """The login throttle's counter for *login*: the account's, by id, when it names one
    (so its username and its address share one count), else the name as typed.

    A browser the account logged in from before (:func:`_known_device`) is judged by a
    counter of its own instead: anyone can fail logins of a name they know, and while they
    keep the account's counter locked the owner's own browsers must still get in. Its
    failures count on the account's counter as well.
    """
    if user is not None:
        device = _known_device(user.id)
        if device is not None:
            return AccountCounter(f"device:{device}", also=(f"user:{user.id}",))
        return f"user:{user.id}"
    name = logic.login_text(login)
    return "name:" + (logic.normalize_email(name) if "@" in name else name)[:256]


#: The cookie naming the accounts that logged in from this browser (signed, see
#: :func:`_known_device`), and how many it keeps, the latest first.
DEVICE_COOKIE = "meta_device"
DEVICES_KEPT = 5
#: How long a browser stays known after its last login.
DEVICE_LIFETIME = 365 * 24 * 3600


def _device_cookie() -> str:
    """The known-device cookie's name: with the ``__Host-`` prefix wherever the session
    cookie has it (see :mod:`srcore.sessions`). A sibling host of the site could otherwise
    set its own ``meta_device`` (a valid one, of the attacker's account) ahead of the
    owner's, and the owner's browser would count on the account's locked counter again."""
    from srcore.sessions import HOST_PREFIX

    session_cookie = current_app.session_interface.get_cookie_name(current_app)
    prefix = HOST_PREFIX if session_cookie.startswith(HOST_PREFIX) else ""
    return prefix + DEVICE_COOKIE


def _device_serializer() -> Any:
    from itsdangerous import URLSafeSerializer

    return URLSafeSerializer(str(current_app.secret_key), salt="meta.known-device")


def _known_devices() -> list[tuple[int, str]]:
    """The (account id, device id) pairs of this browser's signed cookie; none if it has
    no cookie, or one that was not made here."""
    from itsdangerous import BadData

    raw = request.cookies.get(_device_cookie())
    if not raw or len(raw) > 2048:
        return []
    try:
        value = _device_serializer().loads(raw)
    except BadData:
        return []
    if not isinstance(value, list):
        return []
    return [
        (item[0], item[1])
        for item in value[:DEVICES_KEPT]
        if isinstance(item, list)
        and len(item) == 2
        and isinstance(item[0], int)
        and isinstance(item[1], str)
        and 0 < len(item[1]) <= 64
    ]


def _known_device(user_id: int) -> str | None:
    """This browser's id for *user_id* if the account logged in from it before (OWASP's
    "device cookies"): a random id in a cookie signed with the app's key, given at a
    complete login. It is no credential (it logs nobody in); it only says which login
    counter the browser's attempts count on."""
    for uid, device in _known_devices():
        if uid == user_id:
            return device
    return None


def _remember_device(response: Response, user_id: int) -> None:
    """Make this browser known to *user_id* (keeping its id if it was already)."""
    import secrets

    known = _known_devices()
    device = _known_device(user_id) or secrets.token_urlsafe(16)
    kept = [[user_id, device]] + [[u, d] for u, d in known if u != user_id]
    response.set_cookie(
        _device_cookie(),
        _device_serializer().dumps(kept[:DEVICES_KEPT]),
        max_age=DEVICE_LIFETIME,
        path="/",
        secure=bool(current_app.config["SESSION_COOKIE_SECURE"]),
        httponly=True,
        samesite="Lax",
    )


def _too_many(retry_after: float, seconds: int) -> Response:
    return error_response(
        429,
        f"Too many failed attempts. Try again in {_wait_text(retry_after)}.",
        title="Too many attempts",
        headers={"Retry-After": str(seconds)},
    )


def _password_throttled(user: User) -> Response | None:
    """A 429 answer if the account's password may not be tried now (as on the login form)."""
    protection = meta_state().protection
    if protection is None:
        return None
    decision = protection.check(_throttle_key(user, user.username), _client_address())
    if decision.allowed:
        return None
    audit.record(db, Kind.login_throttled, user.id, detail="current password")
    db.commit()
    return _too_many(decision.retry_after, decision.retry_after_seconds)


def _check_current_password(valid: Validation, user: User) -> None:
    """Check the current password of a sensitive change; failures count as failed logins."""
    password = valid.require(
        "current_password",
        strip=False,
        max_length=logic.PASSWORD_MAX_LENGTH,
        label="Your current password",
    )
    if password is None:
        return
    protection = meta_state().protection
    key = _throttle_key(user, user.username)
    verified = user.password_hash
    if meta_state().passwords.verify(verified, password):
        if protection is not None:
            protection.success(key, _client_address())
        # The account as it is now, held until the change commits: a reset (or another
        # tab's change) since this request began ended this session and made the
        # password checked the old one. Going on undid the reset with the old password.
        if (
            not lock_row(db, user)
            or user.password_hash != verified
            or not logic.web_session_valid(db, user.id, session.get(SESSION_ID))
        ):
            valid.error(
                "Your password was changed, or this session ended, meanwhile: log in again.",
                "current_password",
            )
        return
    if protection is not None:
        protection.failure(key, _client_address())
    valid.error("This is not your current password.", "current_password")


@accounts.route("/password", methods=["GET", "POST"])
@login_required
def password() -> Any:
    user = _user()
    min_length = meta_settings().password_min_length
    if request.method == "GET":
        return render_template("meta/password.html", valid=None, min_length=min_length)
    throttled = _password_throttled(user)
    if throttled is not None:
        return throttled
    valid = Validation.form("meta/password.html", min_length=min_length)
    _check_current_password(valid, user)
    new = valid.require(
        "password", strip=False, max_length=logic.PASSWORD_MAX_LENGTH, label="New password"
    )
    if new:
        problem = logic.check_password(new, min_length=min_length, username=user.username)
        valid.expect(problem is None, problem or "", field="password")
    valid.raise_if_invalid()
    assert new  # require() recorded an error otherwise
    amr = logic.web_session_amr(db, session.get(SESSION_ID))
    withdrawn = user.pending_email
    logic.set_password(db, user, meta_state().passwords.hash(new))
    audit.record(db, Kind.password_changed, user.id)
    # Sent at the commit: a failure starting the new session below must not lose it.
    mail_on_commit(db, "password-changed", user.email, user=user)
    db.commit()
    _start_session(user, amr or None)
    flash("Your password is changed. Other sessions were logged out.", "success")
    if withdrawn:
        flash(
            f"The change of address to {withdrawn} is cancelled with it: ask again if you"
            " still want it.",
            "warning",
        )
    return redirect(url_for("accounts.profile"))


@accounts.route("/email", methods=["GET", "POST"])
@login_required
def change_email() -> Any:
    user = _user()
    if request.method == "GET":
        return render_template("meta/email.html", valid=None, user=user)
    throttled = _password_throttled(user)
    if throttled is not None:
        return throttled
    valid = Validation.form("meta/email.html", user=user)
    email = _address_field(valid, "email", "New email address")
    _check_current_password(valid, user)
    taken = False
    if email:
        valid.expect(email != user.email, "This is already your address.", field="email")
        # Told to that address's mailbox only, never on this page: any account's owner
        # could otherwise ask, address after address, which of them have accounts.
        taken = logic.email_taken(db, email, exclude=user.id)
    valid.raise_if_invalid()
    assert email  # require() recorded an error otherwise
    user.pending_email = email
    # Issued either way (the same work): a taken address's link is never sent, and
    # following it would be refused anyway while that account has the address.
    secret = logic.issue_token(
        db,
        user,
        TokenPurpose.change_email,
        email=email,
        lifetime=meta_settings().confirmation_lifetime,
    )
    db.commit()
    if taken:
        sent = send_mail("change-email-taken", email, user=user)
    else:
        sent = send_mail("change-email", email, user=user, token=secret)
    if sent:
        send_mail("change-email-notice", user.email, user=user, new_email=email)
        flash(f"We sent a link to {email}: follow it to confirm the change.", "success")
    else:
        # No change may wait on a link that never went out: the profile would say it did.
        logic.withdraw_email_change(db, user)
        db.commit()
        flash("The mail could not be sent, so your address is unchanged. Try again later.", "error")
    return redirect(url_for("accounts.profile"))


@accounts.route("/email/cancel", methods=["POST"])
@login_required
def cancel_email_change() -> Response:
    user = _user()
    if user.pending_email:
        user.pending_email = None
        db.commit()
        flash("The change of address is cancelled.", "success")
    return redirect(url_for("accounts.profile"))


@accounts.route("/delete", methods=["GET", "POST"])
@login_required
def delete_account() -> Any:
    user = _user()
    if request.method == "GET":
        return render_template("meta/delete.html", valid=None, user=user)
    throttled = _password_throttled(user)
    if throttled is not None:
        return throttled
    valid = Validation.form("meta/delete.html", user=user)
    _check_current_password(valid, user)
    valid.raise_if_invalid()
    name = user.username
    # The entry outlives the account (entries keep no key to it), for admins to read.
    audit.record(db, Kind.account_deleted, user.id, detail=f"{name}, by its owner")
    logic.delete_user(db, user)
    db.commit()
    log.info("account %s deleted by its owner", name)
    log_out()
    flash(f"The account {name} is deleted.", "success")
    return redirect(url_for("accounts.login"))


# -- wiring ------------------------------------------------------------------------------------


def _logged_in() -> User | None:
    return cast("User | None", current_user._get_current_object())


#: srcore's endpoints that serve no page, whose answers do not depend on who is logged in:
#: the health check (which must ask the database nothing else), metrics and static files.
_NO_PAGE = frozenset(
    {"srcore_healthz", "srcore_metrics", "srcore_static", "srcore_favicon", "static"}
)


def _end_stale_session() -> None:
    """Log this browser out unless its server-side session still exists.

    The signed cookie is not enough: logging out, a password change or a suspension
    deletes the session's row, and a copy of the cookie made before stops working.
    What serves no page leaves the cookie alone: the next page looks at it.

    The row read here also says when the session was last used: once that is an hour
    old (less under a short ``session-lifetime``), this page records its use, in a write
    of its own: the login lasts ``session-lifetime`` past it, as the renewed cookie does.
    The other pages write nothing.
    """
    if request.endpoint in _NO_PAGE:
        return
    uid = session.get("_uid")
    if uid is None:
        return
    secret = session.get(SESSION_ID)
    last_used = logic.web_session_last_used(db, uid, secret) if isinstance(uid, int) else None
    if last_used is None:
        log_out()
        return
    user = _logged_in()
    if user is None:
        return
    cutoff = user.sessions_valid_after
    started = session.get(SESSION_STARTED)
    if cutoff is not None and (
        not isinstance(started, int | float) or started < cutoff.timestamp()
    ):
        log_out()
        return
    lifetime = current_app.permanent_session_lifetime
    if logic.web_session_use_due(last_used, lifetime):
        _record_use(str(secret), lifetime)


def _record_use(secret: str, lifetime: timedelta) -> None:
    """Record that this browser's session was used now, in a transaction of its own (a
    GET's request session writes nothing). A failure is logged and the page served: the
    next page tries again."""
    from sqlalchemy.exc import SQLAlchemyError

    from srcore.db import release_request_connection

    # A GET's read is over: its connection goes back to the pool rather than wait for
    # the write's (two at once, for every browser whose hour is up).
    release_request_connection()
    try:
        with srcore.state().db.transaction() as writing:
            logic.record_web_session_use(writing, secret, lifetime)
    except SQLAlchemyError as exc:
        log.warning("the last use of a web session could not be recorded: %s", exc)


def install(app: Flask, limiter: Limiter) -> None:
    """Make ``/login`` and ``/logout`` meta's own, and put rate limits on the forms."""
    from meta.protection import RATE_LIMITS

    views = app.view_functions
    for endpoint, rule in (
        ("accounts.login", RATE_LIMITS["login"]),
        ("accounts.register", RATE_LIMITS["register"]),
        ("accounts.forgot", RATE_LIMITS["forgot"]),
        ("accounts.resend_confirmation", RATE_LIMITS["resend"]),
        ("accounts.password", RATE_LIMITS["current-password"]),
        ("accounts.change_email", RATE_LIMITS["current-password"]),
        ("accounts.delete_account", RATE_LIMITS["current-password"]),
        ("twofactor.verify", RATE_LIMITS["login"]),
        ("twofactor.enable", RATE_LIMITS["current-password"]),
        ("twofactor.disable", RATE_LIMITS["current-password"]),
        ("twofactor.renew_recovery_codes", RATE_LIMITS["current-password"]),
    ):
        views[endpoint] = limiter.limit(rule, methods=["POST"])(views[endpoint])
    # srcore gives every service /login and /logout; here they are meta's pages.
    views["srcore_login"] = views["accounts.login"]
    views["srcore_logout"] = views["accounts.logout"]
    app.before_request(_end_stale_session)

    def has_endpoint(name: str) -> bool:
        return name in app.view_functions

    app.jinja_env.globals["has_endpoint"] = has_endpoint
