"""What the auth feature keeps per app: ``app.extensions["srcore.auth"]``.

A leaf of the auth package, so that the session, the bearer check and the OAuth client all
read it without importing :mod:`srcore.auth.extension`, which wires them together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from flask import Flask, Response, current_app

if TYPE_CHECKING:
    from srcore.auth.link import MetaLink
    from srcore.auth.tokens import TokenVerifier

__all__ = ["EXTENSION_KEY", "AuthState", "LoginBackend", "auth_state"]

#: Where an app keeps its :class:`AuthState`.
EXTENSION_KEY = "srcore.auth"


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
