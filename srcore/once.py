"""Forms that create something do it once, however many times they are sent.

A form sent twice (a double click, Enter pressed again, a resend after a slow answer, a
browser without JavaScript, where ``forms.js`` cannot hold the second one back) would
otherwise create two tickets. The form carries a one-time token (``{{ forms.once() }}``
in its template) and its view is marked :func:`once_per_form`::

    @views.route("/new", methods=["GET", "POST"])
    @login_required
    @once_per_form
    def new_thing() -> Any: ...

The first POST with a token runs the view; when it answers with a redirect (to what it
made), that address is kept for :data:`REMEMBER` seconds, and a POST with the same token
meanwhile is answered ``303 See Other`` to it without running the view again. A second
POST that arrives while the first is still running waits for its answer (at most
:data:`WAIT` seconds). A first POST that made nothing (the form came back with errors)
frees its token. The token is bound to the session as the CSRF token is: one from another
session or user is refused like a bad CSRF token. A POST without the field (a script) is
served as before.

Used tokens are kept in the service's own database (table ``srcore_once_token``), which
every worker and host of the service shares, with or without Redis: a form sent twice is
taken once wherever its two POSTs land. A token is claimed by an INSERT the table's key
refuses to a second one, committed in a short transaction of its own before the view
runs; only a POST carrying the field touches the table. A database that cannot take the
claim (down, busy, read-only) is answered 503, as any request that needs it.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from flask import Flask, current_app, flash, redirect, request, session
from sqlalchemy import String, Text, delete, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from srcore.db import TYPE_ANNOTATION_MAP, Database, make_metadata, utcnow

__all__ = [
    "ONCE_FIELD",
    "REMEMBER",
    "WAIT",
    "DatabaseTokens",
    "OnceBase",
    "OnceToken",
    "init_app",
    "once_per_form",
    "once_token",
    "prune_expired",
]

log = logging.getLogger("srcore")

F = TypeVar("F", bound=Callable[..., Any])

#: The form field carrying the one-time token.
ONCE_FIELD = "form_once"
#: Seconds a used token is remembered with what its form made.
REMEMBER = 15 * 60
#: Seconds a second POST waits for the first one's answer before giving up (a 409).
WAIT = 10.0
_POLL = 0.1
#: What a token taken by a POST that has not answered yet holds.
_PENDING = ""
_EXTENSION = "srcore.once"
_TOKEN_MAX = 128
#: Expired rows a claim deletes at most: as many as claims add, so the table stays small
#: without a sweep of its own, and no claim waits on a long delete.
_PRUNE = 100


class OnceBase(DeclarativeBase):
    """The declarative base of the used-token table (copied into the core metadata)."""

    metadata = make_metadata()
    type_annotation_map = TYPE_ANNOTATION_MAP


class OnceToken(OnceBase):
    """A form's one-time token that a POST took, and what its form made."""

    __tablename__ = "srcore_once_token"

    #: The token's nonce (checked against the session before it gets here).
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    #: Where what the form made is shown; None while its first POST is being handled.
    location: Mapped[str | None] = mapped_column(Text)
    #: When the row counts no more and may go.
    expires: Mapped[datetime] = mapped_column(index=True)


class Tokens(Protocol):
    """Where used tokens are kept: each operation atomic for all who share it."""

    def claim(self, key: str) -> str | None:
        """Take *key* if nobody has (None), else say what it holds (pending: ``""``)."""

    def finish(self, key: str, location: str) -> None:
        """Remember that *key*'s form made what *location* shows."""

    def release(self, key: str) -> None:
        """Forget *key*: its form made nothing and may be sent again."""


class DatabaseTokens:
    """Tokens kept in *database*, each for *remember* seconds, in short transactions of
    their own (never the request's: a claim must be seen by others before the view runs,
    and stay seen whatever becomes of the view's transaction)."""

    def __init__(self, database: Database, *, remember: float = REMEMBER) -> None:
        self.database = database
        self.remember = timedelta(seconds=remember)

    def _insert(self, key: str, now: datetime) -> Any:
        """An INSERT of *key* as pending that an unexpired row of the same key refuses
        (it writes and returns no row then) and an expired one gives way to."""
        from sqlalchemy.dialects import postgresql, sqlite

        values = {"key": key, "location": None, "expires": now + self.remember}
        taken_over = {"location": None, "expires": now + self.remember}
        if self.database.engine.dialect.name == "postgresql":
            pg = postgresql.insert(OnceToken).values(values)
            return pg.on_conflict_do_update(
                index_elements=[OnceToken.key], set_=taken_over, where=OnceToken.expires <= now
            ).returning(OnceToken.key)
        lite = sqlite.insert(OnceToken).values(values)
        return lite.on_conflict_do_update(
            index_elements=[OnceToken.key], set_=taken_over, where=OnceToken.expires <= now
        ).returning(OnceToken.key)

    def claim(self, key: str) -> str | None:
        engine = self.database.engine
        for _ in range(3):  # taken, then freed before it could be read: try again
            now = utcnow()
            with engine.begin() as connection:
                # A row comes back when it was written; rowcount is not to be relied on
                # for an upsert (psycopg reports -1).
                taken = connection.execute(self._insert(key, now)).first() is not None
            if taken:
                self._prune(now)
                return None
            with engine.connect() as connection:
                held = connection.execute(
                    select(OnceToken.location).where(OnceToken.key == key, OnceToken.expires > now)
                ).first()
            if held is not None:
                return held[0] or _PENDING
        return _PENDING

    def _prune(self, now: datetime) -> None:
        """Delete a few expired rows; a failure only leaves them for the next claim."""
        expired = (
            select(OnceToken.key)
            .where(OnceToken.expires <= now)
            .order_by(OnceToken.expires)
            .limit(_PRUNE)
        )
        # Expired again in the DELETE itself: PostgreSQL reads the subquery once, then
        # waits for a row a claim is taking over, and would delete the fresh claim.
        still_expired = OnceToken.key.in_(expired), OnceToken.expires <= now
        try:
            with self.database.engine.begin() as connection:
                connection.execute(delete(OnceToken).where(*still_expired))
        except SQLAlchemyError as exc:
            log.info("used form tokens not pruned this time: %s", type(exc).__name__)

    def finish(self, key: str, location: str) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(
                update(OnceToken)
                .where(OnceToken.key == key)
                .values(location=location, expires=utcnow() + self.remember)
            )

    def release(self, key: str) -> None:
        with self.database.engine.begin() as connection:
            connection.execute(delete(OnceToken).where(OnceToken.key == key))


def _session_secret() -> str:
    """The session's CSRF secret (Flask-WTF keeps it in the session), made if missing."""
    from flask_wtf.csrf import generate_csrf

    generate_csrf()
    name = current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token")
    return str(session.get(name, ""))


def _mac(nonce: str, secret: str) -> str:
    key = current_app.config.get("WTF_CSRF_SECRET_KEY") or current_app.secret_key or ""
    key_bytes = key if isinstance(key, bytes) else str(key).encode("utf-8")
    message = f"srcore-once\0{secret}\0{nonce}".encode()
    return hmac.new(key_bytes, message, hashlib.sha256).hexdigest()[:32]


def once_token() -> str:
    """A new one-time token for a form of this session (a template global)."""
    nonce = secrets.token_urlsafe(16)
    return f"{nonce}.{_mac(nonce, _session_secret())}"


def _checked_key(token: str) -> str:
    """The key *token* is kept under, or a CSRF refusal when it is not this session's."""
    from flask_wtf.csrf import CSRFError

    nonce, _, mac = token.partition(".")
    secret = session.get(current_app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"))
    if (
        len(token) > _TOKEN_MAX
        or not nonce
        or not isinstance(secret, str)
        or not hmac.compare_digest(mac.encode("ascii", "replace"), _mac(nonce, secret).encode())
    ):
        raise CSRFError("The form's one-time token is not this session's.")
    return nonce  # the service's own table: no other service's keys to tell apart


def _tokens() -> Tokens:
    found: Tokens | None = current_app.extensions.get(_EXTENSION)
    if found is None:
        found = DatabaseTokens(current_app.extensions["srcore"].db)
        current_app.extensions[_EXTENSION] = found
    return found


def _already(location: str) -> Any:
    flash("This form was sent more than once; it was taken once.", "info")
    return redirect(location, 303)


def _busy() -> Any:
    from srcore.errors import error_response

    return error_response(
        409,
        "This form was sent already and its first sending is still being handled. "
        "Look for what it made before sending it again.",
    )


def _settle(action: Callable[[], None], what: str) -> None:
    """Finish or release a claim after the view ran; a failure is logged, not raised: the
    view's answer stands (what it made is made), and the row expires in its time."""
    try:
        action()
    except SQLAlchemyError as exc:
        log.warning("one-time form token not %s: %s", what, type(exc).__name__)


def once_per_form(view: F) -> F:
    """Run *view* once per one-time token its form carries (see the module's docstring).

    Put it below the login check, so a refused visitor's token is not taken.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = request.form.get(ONCE_FIELD) if request.method == "POST" else None
        if not token:
            return view(*args, **kwargs)
        key = _checked_key(token)
        tokens = _tokens()
        deadline = time.monotonic() + WAIT
        while True:
            held = tokens.claim(key)  # down, busy, read-only: srcore.errors answers 503
            if held is None:
                break
            if held != _PENDING:
                return _already(held)
            if time.monotonic() >= deadline:
                return _busy()
            time.sleep(_POLL)
        try:
            response = current_app.make_response(view(*args, **kwargs))
        except BaseException:
            _settle(lambda: tokens.release(key), "released")
            raise
        location = response.headers.get("Location")
        if 300 <= response.status_code < 400 and location:
            _settle(lambda: tokens.finish(key, location), "finished")
        else:
            _settle(lambda: tokens.release(key), "released")
        return response

    return wrapper  # type: ignore[return-value]


def init_app(app: Flask) -> None:
    """Keep *app*'s used tokens in its database and give its templates ``once_token()``.
    Nothing is queried until a form with a token is sent."""
    st = app.extensions.get("srcore")
    database = getattr(st, "db", None)
    if isinstance(database, Database):
        app.extensions[_EXTENSION] = DatabaseTokens(database)
    app.jinja_env.globals["once_token"] = once_token


def prune_expired(session: Session, now: datetime) -> int:
    """Delete every used token that counts no more; commit; return how many went. The
    webhook worker runs it every hour, so that the last claims' rows do not wait for
    claims that may never come (each claim deletes a few on the way)."""
    result = session.execute(delete(OnceToken).where(OnceToken.expires <= now))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
