"""Web sessions: the logged-in user of the current request and the login seam.

A service never sees a password. ``login_required`` hands the browser to the app's
:class:`LoginBackend`, which sends it to the network's account service; when the user
comes back, :func:`log_in` records the local user id in the service's own session cookie.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from flask import Response, abort, after_this_request, current_app, g, request, session
from werkzeug.local import LocalProxy

from srcore.auth.state import LoginBackend, auth_state, mark_guard
from srcore.sessions import LOGIN_KEY, any_session, confirm_login

if TYPE_CHECKING:
    pass

__all__ = [
    "LoginBackend",
    "NoAccountService",
    "current_user",
    "is_safe_next",
    "log_in",
    "log_out",
    "login_required",
    "refuse_inactive_token_user",
    "require_user",
]

P = ParamSpec("P")
R = TypeVar("R")
_U = TypeVar("_U")

_SESSION_USER = LOGIN_KEY
_SESSION_AT = "_at"
#: The session's id, which a logout records as ended (:mod:`srcore.auth.ended`).
_SESSION_ID = "_sid"
_UNSET = object()


class NoAccountService:
    """The login backend of a service that cannot log anyone in through meta."""

    def __init__(self, reason: str | None = None) -> None:
        self.reason = reason or (
            "Logging in needs the network's account service (meta), which is not "
            "configured here. Ask the operator to add a [meta] section to the config file."
        )

    def begin_login(self, next_url: str) -> Response:
        from srcore.errors import error_response

        return error_response(503, self.reason, title="Account service unavailable")

    def logout_url(self) -> str | None:
        return None


def is_safe_next(target: str | None) -> bool:
    """Whether *target* is a local path safe to redirect to after login (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return False
    return not any(c in target for c in "\\\r\n\t") and len(target) <= 2048


def log_in(user_id: int, *, at: float | None = None) -> None:
    """Start this service's session for *user_id* (a meta account id).

    The session records when it started (``_at``), so a "log out everywhere" from meta
    ends it. A login that meta confirmed after a revocation this service already knows
    of counts as later than it, even within the same second. *at* is when meta confirmed
    the login, by meta's clock: a logout's cut-off is meta's time too, so the two compare
    however far this host's clock is from meta's (without *at*, this host's clock).

    The session gets a new random id, which :func:`log_out` records as ended: a copy of
    the cookie stops counting there and then, and the user's other sessions do not.
    Nothing of the browser's previous session carries over (a cookie planted by someone
    else never becomes a login), and that session, if it held one, is recorded as ended
    as a logout would: logging in as someone else (or again) without logging out first
    must not leave a copy of the old cookie logged in.
    """
    import time

    from srcore.auth.ended import new_session_id

    at = time.time() if at is None else at
    link = auth_state().identity
    if link is not None:
        from srcore.auth.revocation import RevocationUnavailable

        try:
            not_before = link.store.user_not_before(user_id)
        except RevocationUnavailable:
            not_before = None
        if not_before is not None and int(at) <= not_before:
            at = float(not_before + 1)
    previous = _session_key()
    session.clear()
    session[_SESSION_USER] = user_id
    session[_SESSION_AT] = at
    session[_SESSION_ID] = new_session_id()
    session.permanent = True
    g.pop("srcore_user", None)
    g.pop("srcore_refused_user", None)
    if previous is not None and current_app.extensions["srcore"].user_model:
        _record_end(previous)


def log_out(*, everywhere: bool = True) -> None:
    """End this service's session: clear the cookie, and record the session as ended
    so that no copy of the cookie logs anyone in any more, at any process of the service.

    *everywhere* false only clears the cookie, for a session that already counts nowhere
    (meta ended it, or it was ended here). If the end cannot be recorded (the database is
    down) the cookie is still cleared and the failure logged: logging out must work.
    """
    sid = _session_key()
    session.clear()
    g.pop("srcore_user", None)
    g.pop("srcore_refused_user", None)
    if everywhere and sid is not None and current_app.extensions["srcore"].user_model:
        _record_end(sid)


def _session_key() -> str | None:
    """The id a logout records for this request's session: its ``_sid``, or for a session
    begun before sessions had ids, its user and login time (which tell logins apart)."""
    sid = session.get(_SESSION_ID)
    if isinstance(sid, str):
        return sid
    uid, at = session.get(_SESSION_USER), session.get(_SESSION_AT)
    if isinstance(uid, int) and isinstance(at, int | float):
        return f"at:{uid}:{float(at)!r}"
    return None


def _record_end(sid: str) -> None:
    import logging

    from sqlalchemy.exc import SQLAlchemyError

    from srcore.auth.ended import record_end

    database = current_app.extensions["srcore"].db
    try:
        with database.transaction() as db_session:
            record_end(db_session, sid, lifetime=current_app.permanent_session_lifetime)
    except SQLAlchemyError:
        logging.getLogger("srcore.auth").exception(
            "logout: the session's end could not be recorded; copies of its cookie "
            "stay valid until it expires"
        )


def _load_user() -> Any:
    user = g.get("srcore_user", _UNSET)
    if user is not _UNSET:
        return user
    from srcore.routing import API_PREFIX

    st = current_app.extensions["srcore"]
    model = st.user_model
    user = None
    if request.path.startswith(API_PREFIX):
        # API requests are authenticated by bearer tokens only; a cookie must never count.
        token = g.get("srcore_token")
        if token is not None and token.subject is not None and model is not None:
            user = _token_user(model, token.subject)
    else:
        uid = session.get(_SESSION_USER)
        if isinstance(uid, int) and model is not None:
            from srcore.db import session as db_session

            if not _session_stands(uid):
                log_out(everywhere=False)
            else:
                user, ended = _session_user(db_session, model, uid)
                if ended:
                    log_out(everywhere=False)
                elif user is None:
                    session.pop(_SESSION_USER, None)
                else:
                    confirm_login()  # standing: its cookie may be renewed
                    after_this_request(_not_stored)
                    user = _unless_refused(user)
    g.srcore_user = user
    return user


def _unless_refused(user: Any) -> Any:
    """*user*, or None when meta suspended or deleted the account (and this service has
    heard of it, by a profile push or a login, maybe before the revocation list says so).

    A page open to everyone that shows more to a logged-in viewer (their own private
    trackers, say) reads :data:`current_user`; a refused account must not count there
    any more than under :func:`login_required`, which shows it the reason instead. meta
    keeps its own rows: the row is the account there, and meta's pages tell its owner.
    """
    if not getattr(user, "is_suspended", False) or auth_state().identity is None:
        return user
    g.srcore_refused_user = user
    return None


def _session_user(db_session: Any, model: Any, uid: int) -> tuple[Any, bool]:
    """The session's user row, and whether the session was logged out at this service.

    Both come from one query (a page of a logged-in user loads the row anyway), so the
    check of the ended sessions costs no round trip of its own.
    """
    sid = _session_key()
    if sid is None:
        # No login of this service made it (it has no login time): nothing ended it here.
        return db_session.get(model, uid), False
    from sqlalchemy import select

    from srcore.auth.ended import ended_clause

    row = db_session.execute(select(model, ended_clause(sid)).where(model.id == uid)).first()
    if row is None:
        return None, False
    return (None, True) if row[1] else (row[0], False)


def _not_stored(response: Response) -> Response:
    """Keep a page made for a logged-in user out of every cache, the browser's own too.

    ``private`` still lets the browser keep it, and its Back button shows it from there
    after the user logged out: on a shared computer, the next person reads their private
    tickets and tokens. A view that chose its own caching keeps it."""
    if "Cache-Control" not in response.headers:
        response.headers["Cache-Control"] = "no-store"
    return response


def session_stands(uid: int) -> bool | None:
    """Whether this request's session of *uid* still stands: meta has not ended it since
    it started (a logout everywhere, a suspension). None while the revocation list
    cannot be read."""
    link = auth_state().identity
    if link is None:
        return True
    from srcore.auth.revocation import RevocationUnavailable

    at = session.get(_SESSION_AT)
    try:
        valid: bool = link.store.session_valid(uid, at if isinstance(at, int | float) else None)
    except RevocationUnavailable:
        return None
    return valid


def _session_stands(uid: int) -> bool:
    """:func:`session_stands`, or a 503 while it cannot be told."""
    stands = session_stands(uid)
    if stands is None:
        abort(503, "The revocation list cannot be read right now. Try again shortly.")
    return stands


def _token_user(model: Any, user_id: int) -> Any:
    """The row of a token's user, copied from meta the first time this service sees them.

    The copy waits for meta (up to the HTTP timeout) and then writes in a transaction of
    its own, so the request's session lets go of its connection first, when its
    transaction holds nothing but reads (:func:`srcore.db.release_request_connection`):
    else each such request would take two connections, one idle for the whole call, and
    a burst of new users on as many threads as the pool has connections would leave each
    thread holding one while waiting for a second. A view that wrote before reading
    :data:`current_user` keeps its connection (and its transaction) throughout.
    """
    from srcore.db import release_request_connection
    from srcore.db import session as db_session

    # Whether the look-up below begins the session's transaction, so that it holds
    # nothing else. A pending object would be flushed by it, a write the view made.
    fresh = not (
        db_session.in_transaction() or db_session.new or db_session.dirty or db_session.deleted
    )
    user = db_session.get(model, user_id)
    link = auth_state().identity
    if user is None and link is not None:
        from srcore.auth.link import MetaUnavailable, fetch_unknown_user

        release_request_connection(only_read=fresh)
        try:
            known = fetch_unknown_user(link, user_id)
        except MetaUnavailable:
            abort(503, "The account service is unavailable, so this user cannot be looked up.")
        if known:
            user = db_session.get(model, user_id)
    if user is None:
        abort(401, "The token's user is not known here.")
    refuse_inactive_token_user(user)
    return user


def refuse_inactive_token_user(user: Any) -> None:
    """Abort with a 403 unless *user*, a token's user row, may use the API: not a
    suspended account, nor an unconfirmed one (it may hold someone else's address,
    registered in advance).

    :func:`require_user` applies it; a view that reads the token's user row itself (in
    the query that answers the call, say) must apply it too, or that one call answers
    accounts every other call refuses.
    """
    from srcore.db import UserType

    if user.is_suspended:
        abort(403, "This account is suspended.")
    if getattr(user, "user_type", None) == UserType.unconfirmed:
        abort(403, "This account has not confirmed its email address; confirm it at meta.")


#: The logged-in user's row (the service's ``UserMixin`` model), or None.
current_user: Any = LocalProxy(_load_user)


def login_required(view: Callable[P, R]) -> Callable[P, R | Response]:
    """Let only a logged-in, unsuspended user see *view*; others are sent to log in.

    Flask's own answer to ``OPTIONS`` (the methods allowed, running no view) needs no
    login, on a route whose blueprint guards it with this in ``before_request`` too: it
    is answered there, and the hook's body does not run.
    """

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
        rule = request.url_rule
        if request.method == "OPTIONS" and getattr(rule, "provide_automatic_options", False):
            return current_app.make_default_options_response()
        user = _load_user()
        user = g.get("srcore_refused_user", user) if user is None else user
        if user is None:
            if request.method not in ("GET", "HEAD"):
                # A form sent after the session ended (meta logged the person out
                # everywhere): the login round trip would drop what they wrote.
                from srcore.errors import form_again

                again = form_again(
                    401,
                    "This was not sent: you were logged out after the page it came from "
                    "was opened (maybe in another tab, or at the account service).",
                    title="Not sent: you are logged out",
                )
                if again is not None:
                    return again
            backend = auth_state().login
            target = request.full_path.rstrip("?") if request.method == "GET" else "/"
            return backend.begin_login(target if is_safe_next(target) else "/")
        if getattr(user, "is_suspended", False):
            from srcore.errors import error_response

            if getattr(user, "is_deleted", False):
                return error_response(403, "This account was deleted.", title="Account deleted")
            notice = getattr(user, "suspension_notice", None) or "Your account is suspended."
            return error_response(403, notice, title="Account suspended")
        return view(*args, **kwargs)

    mark_guard(view, wrapper, "@login_required")
    return wrapper


def require_user(model: type[_U]) -> _U:
    """The current user as a row of *model*, for a view that acts for a user.

    A page behind :func:`login_required` always has one (else 401); an API call whose
    token was issued to a client alone gets a 403 saying it needs a user's token.
    """
    user = _load_user()
    if not isinstance(user, model):
        from flask import abort

        from srcore.errors import error_response
        from srcore.routing import API_PREFIX

        if request.path.startswith(API_PREFIX):
            abort(error_response(403, "This call acts for a user; use a token issued to a user."))
        abort(401)
    return user


def init_app(app: Any) -> None:
    """Add ``/login`` and ``/logout`` (POST, CSRF-checked) to *app*."""
    from flask import redirect
    from werkzeug.wrappers import Response as BaseResponse

    def login() -> BaseResponse:
        requested = request.args.get("next")
        target = requested if requested is not None and is_safe_next(requested) else "/"
        if _load_user() is not None:
            return redirect(target)
        backend = auth_state().login
        return backend.begin_login(target)

    def logout() -> BaseResponse:
        # Ends this service's session. With meta, the browser then goes to meta's
        # end-session endpoint, which asks whether to end the network's session too (and
        # with it every service's) and sends the browser back here either way.
        log_out()
        backend = auth_state().login
        return redirect(backend.logout_url() or "/")

    app.add_url_rule("/login", endpoint="srcore_login", view_func=login)
    # Whichever session the button's page was opened in: the person wants this browser
    # logged out (srcore.sessions.any_session).
    app.add_url_rule(
        "/logout", endpoint="srcore_logout", view_func=any_session(logout), methods=["POST"]
    )
