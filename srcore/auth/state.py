"""What the auth feature keeps per app: ``app.extensions["srcore.auth"]``.

A leaf of the auth package, so that the session, the bearer check and the OAuth client all
read it without importing :mod:`srcore.auth.extension`, which wires them together.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from flask import Flask, Response, current_app

if TYPE_CHECKING:
    from srcore.auth.link import MetaLink
    from srcore.auth.tokens import TokenVerifier

__all__ = [
    "EXTENSION_KEY",
    "AuthState",
    "LoginBackend",
    "auth_state",
    "guards",
    "lost_guard",
    "mark_guard",
]

#: Where an app keeps its :class:`AuthState`.
EXTENSION_KEY = "srcore.auth"
#: Set on the wrapper an auth decorator (``@oauth``, ``@login_required``) returns, naming it.
_GUARD = "srcore_guard"
#: Set on the view such a decorator wrapped: registered without the wrapper, it lost it.
_GUARDED_BY = "srcore_guarded_by"


def mark_guard(view: object, wrapper: object, guard: str) -> None:
    """Note that *wrapper* guards *view* with *guard* (``@oauth('todo/tickets:RW')``), so
    that a route registering *view* itself is caught (:func:`lost_guard`). Set after
    ``functools.wraps`` copied *view*'s attributes: the wrapper does not carry the mark."""
    setattr(wrapper, _GUARD, (*guards(view), guard))
    # A bound method or a builtin takes no attribute: nothing to note then.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(view, _GUARDED_BY, guard)


def guards(view: object) -> tuple[str, ...]:
    """The auth decorators that guard *view* (``("@login_required",)``), outermost last."""
    found = getattr(view, _GUARD, ())
    return found if isinstance(found, tuple) else ()


def lost_guard(view: object) -> str | None:
    """The guard an auth decorator gave *view* that *view* itself does not carry: the
    decorator was written above the route's, which registered the bare view. None when
    *view* is a guard's wrapper or was never guarded."""
    guard = getattr(view, _GUARDED_BY, None)
    if guard is None or guards(view):
        return None
    return str(guard)


class LoginBackend(Protocol):
    """How a service gets a user logged in."""

    def begin_login(self, next_url: str) -> Response:
        """Answer a request that needs a logged-in user (usually: redirect to meta)."""

    def logout_url(self) -> str | None:
        """Where "log out" sends the browser, or None to log out of this service only."""


@dataclass
class AuthState:
    """One app's login backend, token verifier and link to meta."""

    login: LoginBackend
    #: Checks the API's bearer tokens (None: no account service, so no token is valid).
    token_verifier: TokenVerifier | None
    #: How this service talks to meta (None for meta itself and networks without meta).
    identity: MetaLink | None


def auth_state(app: Flask | None = None) -> AuthState:
    """The auth state of *app*, or of the current app."""
    target = app if app is not None else current_app
    result: AuthState = target.extensions[EXTENSION_KEY]
    return result
