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

Tokens are remembered in Redis when ``[global] redis-url`` is set, shared by every worker;
otherwise in each process, so a form sent twice to two workers of one server may still be
taken twice (as the write limits count per process without Redis).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from flask import Flask, current_app, flash, redirect, request, session

__all__ = [
    "ONCE_FIELD",
    "REMEMBER",
    "WAIT",
    "MemoryTokens",
    "init_app",
    "once_per_form",
    "once_token",
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


class Tokens(Protocol):
    """Where used tokens are kept: each operation atomic for all who share it."""

    def claim(self, key: str) -> str | None:
        """Take *key* if nobody has (None), else say what it holds (pending: ``""``)."""

    def finish(self, key: str, location: str) -> None:
        """Remember that *key*'s form made what *location* shows."""

    def release(self, key: str) -> None:
        """Forget *key*: its form made nothing and may be sent again."""


class MemoryTokens:
    """Tokens kept in this process, each for :data:`REMEMBER` seconds, at most *max_keys*
    of them (the oldest dropped first)."""

    def __init__(self, *, max_keys: int = 100_000, remember: float = REMEMBER) -> None:
        self.max_keys = max_keys
        self.remember = remember
        self._lock = threading.Lock()
        self._kept: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def _live(self, key: str, now: float) -> str | None:
        found = self._kept.get(key)
        if found is None or found[0] <= now:
            self._kept.pop(key, None)
            return None
        return found[1]

    def claim(self, key: str) -> str | None:
        now = time.monotonic()
        with self._lock:
            held = self._live(key, now)
            if held is not None:
                return held
            self._kept[key] = (now + self.remember, _PENDING)
            while len(self._kept) > self.max_keys:
                self._kept.popitem(last=False)
        return None

    def finish(self, key: str, location: str) -> None:
        with self._lock:
            self._kept[key] = (time.monotonic() + self.remember, location)

    def release(self, key: str) -> None:
        with self._lock:
            self._kept.pop(key, None)


class RedisTokens:
    """Tokens kept in Redis, shared by every process; in this process while Redis cannot
    be reached (a form then is taken once per process, rather than the page failing)."""

    def __init__(self, url: str, fallback: MemoryTokens) -> None:
        import redis

        self._redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._errors: tuple[type[Exception], ...] = (redis.RedisError,)
        self.fallback = fallback
        self.remember = int(fallback.remember)

    def _failed(self, exc: Exception) -> None:
        log.warning("one-time form tokens kept in process: Redis failed (%s)", type(exc).__name__)

    def claim(self, key: str) -> str | None:
        try:
            for _ in range(3):  # taken, then freed before it could be read: try again
                if self._redis.set(key, _PENDING, nx=True, ex=self.remember):
                    return None
                held = self._redis.get(key)
                if isinstance(held, bytes):
                    return held.decode("utf-8", "replace")
                if isinstance(held, str):
                    return held
            return _PENDING
        except self._errors as exc:
            self._failed(exc)
            return self.fallback.claim(key)

    def finish(self, key: str, location: str) -> None:
        try:
            self._redis.set(key, location, ex=self.remember)
        except self._errors as exc:
            self._failed(exc)
            self.fallback.finish(key, location)

    def release(self, key: str) -> None:
        try:
            self._redis.delete(key)
        except self._errors as exc:
            self._failed(exc)
        self.fallback.release(key)


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
    service = current_app.extensions["srcore"].service_id
    return f"srcore:once:{service}:{nonce}"


def _tokens() -> Tokens:
    found: Tokens = current_app.extensions[_EXTENSION]
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
            held = tokens.claim(key)
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
            tokens.release(key)
            raise
        location = response.headers.get("Location")
        if 300 <= response.status_code < 400 and location:
            tokens.finish(key, location)
        else:
            tokens.release(key)
        return response

    return wrapper  # type: ignore[return-value]


def init_app(app: Flask) -> None:
    """Keep *app*'s used tokens (in Redis when ``[global] redis-url`` is set) and give its
    templates ``once_token()``. Nothing is connected until a form is sent."""
    memory = MemoryTokens()
    tokens: Tokens = memory
    st = app.extensions.get("srcore")
    redis_url = str(st.config.global_.get("redis-url") or "") if st is not None else ""
    if redis_url:
        tokens = RedisTokens(redis_url, memory)
    app.extensions[_EXTENSION] = tokens
    app.jinja_env.globals["once_token"] = once_token
