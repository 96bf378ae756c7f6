"""Account rules as plain functions: usernames, passwords, mailed tokens, state changes.

Nothing here reads the request; views validate input, call these with a session, and
commit. The changes that other parts answer send a signal of :mod:`meta.signals` here,
inside the same transaction, so the revocation events its receivers write commit with it.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from meta import signals
from meta.models import EmailToken, TokenPurpose, User, WebSession, next_user_id
from srcore.db import UserType, utcnow
from srcore.identity.addresses import canonical_email

__all__ = [
    "RESERVED_USERNAMES",
    "USERNAME",
    "WEB_SESSION_USE_EVERY",
    "Passwords",
    "check_username",
    "consume_token",
    "create_user",
    "email_problem",
    "end_web_session",
    "end_web_sessions",
    "find_login",
    "find_token",
    "issue_token",
    "login_text",
    "normalize_email",
    "normalize_password",
    "record_web_session_use",
    "start_web_session",
    "web_session_amr",
    "web_session_last_used",
    "web_session_use_due",
    "web_session_valid",
    "withdraw_email_change",
]

log = logging.getLogger("meta")

#: 2-30 characters, lower-case letters, digits, '_' and '-', starting with a letter.
USERNAME = re.compile(r"[a-z][a-z0-9_-]{1,29}")

#: Names that would mislead (``admin``), collide with addresses (``login``) or with
#: services of the network; the configured service ids are refused as well.
RESERVED_USERNAMES = frozenset(
    (
        "abuse",
        "account",
        "accounts",
        "admin",
        "administrator",
        "anonymous",
        "api",
        "apps",
        "auth",
        "billing",
        "blog",
        "bot",
        "confirm",
        "contact",
        "dashboard",
        "delete",
        "docs",
        "email",
        "git",
        "global",
        "help",
        "hostmaster",
        "info",
        "login",
        "logout",
        "mail",
        "mailer",
        "meta",
        "moderator",
        "noreply",
        "no-reply",
        "null",
        "oauth",
        "operator",
        "owner",
        "password",
        "postmaster",
        "profile",
        "register",
        "reset",
        "root",
        "security",
        "settings",
        "signup",
        "site",
        "staff",
        "static",
        "status",
        "support",
        "sysadmin",
        "system",
        "team",
        "test",
        "todo",
        "user",
        "users",
        "webmaster",
        "www",
    )
)

#: A password longer than this is refused: hashing megabytes would be a cheap way to
#: make the server work hard.
PASSWORD_MAX_LENGTH = 1024


def check_username(name: str, *, reserved: Iterable[str] = ()) -> str | None:
    """Why *name* cannot be a username, or None if it can."""
    if not 2 <= len(name) <= 30:
        return "A username has 2 to 30 characters."
    if not name[0].isascii() or not name[0].isalpha():
        return "A username starts with a letter."
    if not USERNAME.fullmatch(name):
        return "A username has only lower-case letters, digits, '_' and '-'."
    if name in RESERVED_USERNAMES or name in set(reserved):
        return "This username is reserved."
    return None


def normalize_email(address: str) -> str:
    """The form addresses are stored and compared in: :func:`canonical_email`'s (NFKC,
    lower-cased, the domain in its ASCII form), so one mailbox is one address however it
    was typed. The entry points refuse an address without one (:func:`email_problem`); a
    stored one from before is stripped and lower-cased, as it was stored."""
    try:
        return canonical_email(address)
    except ValueError:
        return address.strip().lower()


def email_problem(address: str) -> str | None:
    """Why *address*, which passed the email rule as typed, cannot be an account's address
    (its canonical form is no address), or None if it can."""
    try:
        canonical_email(address)
    except ValueError as error:
        return str(error)
    return None


def login_text(login: str) -> str:
    """What a login form's name is compared as: stripped, NFKC (a username or an address
    typed in full-width forms is the one it reads as), lower-cased."""
    return unicodedata.normalize("NFKC", login.strip()).strip().lower()


def normalize_password(password: str) -> str:
    """The form a password is checked and hashed in: NFKC. What a person types arrives
    differently from one system or keyboard to the next (an accent composed with its letter
    or after it, full-width letters and digits from an input method); each is the same
    password to them, so it must be the same one here."""
    return unicodedata.normalize("NFKC", password)


def check_password(password: str, *, min_length: int, username: str = "") -> str | None:
    """Why *password* is not acceptable as a new password, or None (its normal form judged)."""
    password = normalize_password(password)
    if len(password) < min_length:
        return f"Use at least {min_length} characters."
    if len(password) > PASSWORD_MAX_LENGTH:
        return f"Use at most {PASSWORD_MAX_LENGTH} characters."
    if username and password.lower() == username.lower():
        return "Your password cannot be your username."
    return None


def _forms(password: str) -> list[str]:
    """The forms *password* is tried in: normal first, then as typed, composed, decomposed."""
    return list(
        dict.fromkeys(
            (
                normalize_password(password),
                password,
                unicodedata.normalize("NFC", password),
                unicodedata.normalize("NFD", password),
            )
        )
    )


class Passwords:
    """argon2id hashing with a dummy hash, so unknown accounts cost the same time."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self.hasher = hasher or PasswordHasher()
        self._dummy: str | None = None

    def hash(self, password: str) -> str:
        return self.hasher.hash(normalize_password(password))

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy

    def verify(self, stored: str | None, password: str) -> bool:
        """Whether *password*, in any of its forms, matches *stored*; with None, do the
        same work and say no.

        Its normal form matches a hash :meth:`hash` made. A hash stored before passwords
        were normalised was made from what its owner typed then, composed (NFC) on one
        system, decomposed (NFD) on another: it takes the password in either, so its owner
        gets in from any keyboard (and :meth:`hashed_normal` says to replace it)."""
        # Every form is tried (a list, not a generator): the time tells nothing of which
        # matched, only how many forms the typed password has.
        return any([self._verify(stored, p) for p in _forms(password)])

    def hashed_normal(self, stored: str, password: str) -> bool:
        """Whether *stored*, which *password* matched, is a hash of its normal form (not
        one of an older hash of another form, to be replaced by :meth:`hash`'s)."""
        if len(_forms(password)) == 1:
            return True
        return self._verify(stored, normalize_password(password))

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            if stored is None:
                self.hasher.verify(self._dummy_hash(), password)
                return False
            return bool(self.hasher.verify(stored, password))
        except VerifyMismatchError:
            return False
        except (VerificationError, InvalidHashError):
            log.warning("unreadable password hash; the login is refused")
            return False

    def needs_rehash(self, stored: str) -> bool:
        try:
            return bool(self.hasher.check_needs_rehash(stored))
        except (InvalidHashError, ValueError):
            return True


def find_login(session: Session, login: str) -> User | None:
    """The account whose username or address is *login*, however it was typed: in any
    case, an address in any of its spellings (:func:`normalize_email`)."""
    login = login_text(login)
    if not login:
        return None
    if "@" in login:
        return session.scalar(select(User).where(func.lower(User.email) == normalize_email(login)))
    return session.scalar(select(User).where(func.lower(User.username) == login))


def username_taken(session: Session, name: str) -> bool:
    return session.scalar(select(User.id).where(User.username == name)) is not None


def email_taken(session: Session, address: str, *, exclude: int | None = None) -> bool:
    stmt = select(User.id).where(func.lower(User.email) == normalize_email(address))
    if exclude is not None:
        stmt = stmt.where(User.id != exclude)
    return session.scalar(stmt.limit(1)) is not None


def create_user(session: Session, *, username: str, email: str, password_hash: str) -> User:
    """Add an unconfirmed account with a fresh, never reused id."""
    user = User(
        id=next_user_id(session),
        username=username,
        email=normalize_email(email),
        user_type=UserType.unconfirmed,
        password_hash=password_hash,
    )
    session.add(user)
    session.flush()
    return user


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def issue_token(
    session: Session, user: User, purpose: TokenPurpose, *, email: str, lifetime: timedelta
) -> str:
    """Make a one-time link token; older unused tokens for the same purpose stop working.

    Returns the secret to put in the link; only its hash is stored.
    """
    session.execute(
        delete(EmailToken).where(EmailToken.user_id == user.id, EmailToken.purpose == purpose)
    )
    secret = secrets.token_urlsafe(32)
    session.add(
        EmailToken(
            user_id=user.id,
            purpose=purpose,
            token_hash=_digest(secret),
            email=normalize_email(email),
            expires=utcnow() + lifetime,
        )
    )
    session.flush()
    return secret


def find_token(
    session: Session, secret: str, purposes: Iterable[TokenPurpose], *, now: datetime | None = None
) -> EmailToken | None:
    """The unused, unexpired token for *secret* with one of *purposes*, or None."""
    if not secret or len(secret) > 128:
        return None
    token = session.scalar(select(EmailToken).where(EmailToken.token_hash == _digest(secret)))
    if token is None or token.purpose not in set(purposes) or token.used_at is not None:
        return None
    if token.expires <= (now or utcnow()):
        return None
    return token


def consume_token(session: Session, token: EmailToken) -> bool:
    """Spend *token*; False if another request spent or ended it since it was found.

    The update is conditional, so of two requests following one link at once exactly one
    wins: on PostgreSQL the second waits for the first's row lock, then matches nothing.
    """
    spent = session.execute(
        update(EmailToken)
        .where(EmailToken.id == token.id, EmailToken.used_at.is_(None))
        .values(used_at=utcnow())
        .execution_options(synchronize_session="fetch")
    )
    return int(getattr(spent, "rowcount", 0) or 0) == 1


@dataclass(frozen=True)
class Confirmed:
    """What following a confirmation link did."""

    user: User
    purpose: TokenPurpose
    email: str


def confirm(session: Session, token: EmailToken) -> Confirmed | str | None:
    """Apply a confirm or change-email token; a string says why it could not be, None
    that another request spent the token first (as if it had not been found)."""
    user = session.get(User, token.user_id)
    if user is None:
        return "This link is no longer valid."
    if user.is_suspended:
        # As a reset link: a suspended account changes nothing, its address included.
        return "This account is suspended: its links do nothing until it is restored."
    if not consume_token(session, token):
        return None
    if token.purpose == TokenPurpose.confirm:
        if token.email != normalize_email(user.email):
            return "This link was sent to an address the account no longer has."
        user.email_confirmed_at = utcnow()
        if user.user_type == UserType.unconfirmed:
            user.user_type = UserType.active
    else:
        if normalize_email(user.pending_email or "") != token.email:
            return "This link is for an address change that was replaced or cancelled."
        if email_taken(session, token.email, exclude=user.id):
            return "Another account uses this address now."
        user.email = token.email
        user.pending_email = None
        # A reset link mailed to the old address must not outlive the change.
        end_reset_links(session, user)
        user.email_confirmed_at = utcnow()
        if user.user_type == UserType.unconfirmed:
            user.user_type = UserType.active
        session.flush()
        signals.profile_changed.send(user)
    return Confirmed(user=user, purpose=token.purpose, email=token.email)


def end_reset_links(session: Session, user: User) -> None:
    """Make every unused password-reset link of *user* stop working."""
    session.execute(
        delete(EmailToken).where(
            EmailToken.user_id == user.id, EmailToken.purpose == TokenPurpose.reset
        )
    )


def withdraw_email_change(session: Session, user: User) -> None:
    """Drop *user*'s pending change of address and make its link stop working."""
    user.pending_email = None
    session.execute(
        delete(EmailToken).where(
            EmailToken.user_id == user.id, EmailToken.purpose == TokenPurpose.change_email
        )
    )


def set_password(session: Session, user: User, password_hash: str) -> None:
    """Replace the password; every session and token issued before now stops working.

    A pending change of address is withdrawn too: whoever asked for it knew the old
    password, and a new password is how an owner takes an account back. Its link, in
    someone else's mailbox, must not then move the address (and every later reset link).
    """
    user.password_hash = password_hash
    user.sessions_valid_after = utcnow()
    end_reset_links(session, user)
    withdraw_email_change(session, user)
    end_web_sessions(session, user.id)
    session.flush()
    signals.password_changed.send(user)


def suspend(session: Session, user: User, notice: str) -> None:
    user.user_type = UserType.suspended
    user.suspension_notice = notice
    user.sessions_valid_after = utcnow()
    end_web_sessions(session, user.id)
    session.flush()
    signals.account_suspended.send(user)


def unsuspend(session: Session, user: User) -> None:
    user.user_type = UserType.active if user.email_confirmed_at else UserType.unconfirmed
    user.suspension_notice = None
    session.flush()
    signals.account_unsuspended.send(user)


def delete_user(session: Session, user: User) -> None:
    """Delete the account; its id is never handed out again.

    Its webhook subscriptions at meta go too (their delivery logs with them): nothing
    else holds the receiver URLs and secrets of an account that is gone, and no owner is
    left to enable them again or to be told they were disabled.
    """
    from srcore.webhooks.models import Subscription

    session.execute(
        delete(Subscription).where(
            Subscription.owner_id == user.id, Subscription.trusted.is_(False)
        )
    )
    signals.account_deleted.send(user)
    end_web_sessions(session, user.id)
    session.delete(user)
    session.flush()


# -- web sessions ---------------------------------------------------------------------------


#: How long a session's recorded last use may lag behind its pages at most: a page records
#: its use only once the record is this old (or a tenth of ``session-lifetime``, if less),
#: so a browser costs a write an hour, not one per page.
WEB_SESSION_USE_EVERY = timedelta(hours=1)


def _use_every(lifetime: timedelta) -> timedelta:
    return min(WEB_SESSION_USE_EVERY, lifetime / 10)


def start_web_session(
    session: Session,
    user_id: int,
    *,
    lifetime: timedelta | None = None,
    amr: Iterable[str] = ("pwd",),
) -> str:
    """Record a new logged-in browser of *user_id*; return the secret its cookie carries.

    *amr* says how it logged in (RFC 8176 method references: ``pwd``, ``otp``), for the
    ID tokens and step-up decisions that read it later (:func:`web_session_amr`).

    Sessions of the account unused for longer than *lifetime* (whose cookies have expired:
    each page renews the cookie, and records the use at most :data:`WEB_SESSION_USE_EVERY`
    late) are forgotten on the way, so the table holds no more than the live ones and a
    few. A browser in use stays logged in, however long ago it logged in.
    """
    now = utcnow()
    if lifetime is not None:
        unused_since = now - lifetime - _use_every(lifetime)
        session.execute(
            delete(WebSession).where(
                WebSession.user_id == user_id, WebSession.last_used < unused_since
            )
        )
    secret = secrets.token_urlsafe(32)
    session.add(
        WebSession(
            user_id=user_id,
            secret_hash=_digest(secret),
            amr=" ".join(amr),
            created=now,
            last_used=now,
        )
    )
    session.flush()
    return secret


def web_session_amr(session: Session, secret: object) -> list[str]:
    """How the browser whose cookie carries *secret* logged in (empty: no such session)."""
    if not isinstance(secret, str) or not secret or len(secret) > 128:
        return []
    found = session.scalar(select(WebSession.amr).where(WebSession.secret_hash == _digest(secret)))
    return found.split() if found else []


def web_session_valid(session: Session, user_id: int, secret: object) -> bool:
    """Whether the cookie's *secret* names a session of *user_id* that was not ended."""
    return web_session_last_used(session, user_id, secret) is not None


def web_session_last_used(session: Session, user_id: int, secret: object) -> datetime | None:
    """When the session the cookie's *secret* names was last used, as recorded, if it is a
    session of *user_id* that was not ended; else None. One query, as a page's check."""
    if not isinstance(secret, str) or not secret or len(secret) > 128:
        return None
    found = session.execute(
        select(WebSession.user_id, WebSession.last_used).where(
            WebSession.secret_hash == _digest(secret)
        )
    ).first()
    return found.last_used if found is not None and found.user_id == user_id else None


def web_session_use_due(last_used: datetime, lifetime: timedelta) -> bool:
    """Whether a page of a session last recorded as used at *last_used* records its use
    again (:func:`record_web_session_use`): once an hour at most, or a tenth of
    *lifetime* if that is shorter."""
    return last_used <= utcnow() - _use_every(lifetime)


def record_web_session_use(session: Session, secret: str, lifetime: timedelta) -> None:
    """Record that the browser whose cookie carries *secret* was served a page now, unless
    a page did less than the interval of :func:`web_session_use_due` ago (another of its
    pages at the same time)."""
    now = utcnow()
    session.execute(
        update(WebSession)
        .where(
            WebSession.secret_hash == _digest(secret),
            WebSession.last_used <= now - _use_every(lifetime),
        )
        .values(last_used=now)
    )


def end_web_session(session: Session, secret: object) -> None:
    """End the one session whose cookie carries *secret* (a logout)."""
    if isinstance(secret, str) and secret:
        session.execute(delete(WebSession).where(WebSession.secret_hash == _digest(secret)))


def end_web_sessions(session: Session, user_id: int) -> None:
    """End every session of *user_id* (password change, suspension, log out everywhere)."""
    session.execute(delete(WebSession).where(WebSession.user_id == user_id))
