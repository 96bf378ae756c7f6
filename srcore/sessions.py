"""The cookie session: the web pages' login, and nothing at all under the API.

API requests authenticate with bearer tokens only (:mod:`srcore.auth.api`); a cookie
must never count there, or a page on another site could make a browser call the API
with the user's rights. So an API request does not read the session cookie (nor verify
its signature, which costs every request), and its response neither refreshes nor sets
one, nor adds ``Vary: Cookie``. Its session is an empty mapping that refuses writes.
"""

from __future__ import annotations

from typing import Any, NoReturn

from flask import Flask, Request
from flask.sessions import NullSession, SecureCookieSession, SecureCookieSessionInterface

from srcore.routing import API_PREFIX

__all__ = ["ApiSession", "SessionInterface"]


class ApiSession(NullSession):
    """The session of an API request: always empty; a write is a bug in the view."""

    def _refuse(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError(
            "API requests have no cookie session: they are authenticated by their bearer "
            "token, and their responses set no cookie. Keep state in the database."
        )

    __setitem__ = __delitem__ = clear = pop = popitem = update = setdefault = _refuse


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session for pages; :class:`ApiSession` under the API prefix.

    Flask saves no null session, so an :class:`ApiSession` costs nothing on the way out.
    """

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(API_PREFIX):
            return ApiSession()
        return super().open_session(app, request)
