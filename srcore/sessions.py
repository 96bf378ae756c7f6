"""The cookie session: the web pages' login, and nothing at all under the API.

API requests authenticate with bearer tokens only (:mod:`srcore.auth.api`); a cookie
must never count there, or a page on another site could make a browser call the API
with the user's rights. So an API request does not read the session cookie (nor verify
its signature, which costs every request), and its response neither refreshes nor sets
one, nor adds ``Vary: Cookie``. Its session is an empty mapping that refuses writes.

A session holding a login (:data:`LOGIN_KEY`) is renewed, signed afresh unchanged, only
by a request that checked the login and found it standing (:func:`confirm_login`). Flask
renews a permanent session on every request, so a copy of a cookie logged out at the
service, sent to a page that never looks at the login (``/healthz``, a static file),
came back signed anew, and could be kept so until the record of its logout went, a
session lifetime later: then it logged in again.

A service whose origin is https names its cookie ``__Host-<service>_session``. Any host
of the same site (a sibling subdomain that is compromised, or serves what users upload)
may set a cookie with ``Domain=`` the parent domain and any ``Path``, and the browser
sends it along with the service's own: with two cookies of one name the service reads
the first, which a longer ``Path`` puts first. Such a "tossed" cookie could log the
victim into the attacker's session (whatever they then write lands in the attacker's
account) or make every login fail. A browser stores a ``__Host-`` cookie only when it
is ``Secure``, has ``Path=/`` and no ``Domain``, so only the service's own host can set
one. Plain http (the development network) keeps the plain name: browsers refuse the
prefix without TLS.

A form whose effect does not depend on who the session holds (logging in, logging out) is
marked :func:`any_session`: sent from the service's own page with a security token this
service gave an earlier session of the browser, it is taken. The person who pressed "Log
out" in a tab opened before they logged in again in another wants this browser logged
out, whoever it holds now; one who typed their password in a login form opened before
wants to log in. No other site can send it: its ``Origin`` says where it came from.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

from flask import Flask, Request, Response, g, request
from flask.sessions import (
    NullSession,
    SecureCookieSession,
    SecureCookieSessionInterface,
    SessionMixin,
)

from srcore.routing import API_PREFIX

__all__ = [
    "ANY_SESSION",
    "HOST_PREFIX",
    "LOGIN_KEY",
    "ApiSession",
    "SessionInterface",
    "any_session",
    "confirm_login",
]

#: The cookie prefix that only the host itself can set (RFC 6265bis, "Cookie Name Prefixes").
HOST_PREFIX = "__Host-"
#: The session key holding the logged-in user's id (written by :mod:`srcore.auth.web`).
LOGIN_KEY = "_uid"
_CONFIRMED = "srcore_login_confirmed"
#: The attribute :func:`any_session` sets on a view.
ANY_SESSION = "srcore_any_session"

_V = TypeVar("_V", bound=Callable[..., Any])


def any_session(view: _V) -> _V:
    """Mark *view* as a form that acts the same whichever session sends it (see the
    module's docstring): its security token may be one of an earlier session of the
    browser, when the form comes from the service's own page."""
    setattr(view, ANY_SESSION, True)
    return view


def confirm_login() -> None:
    """Say that this request checked the session's login and found it standing, so its
    cookie may be renewed (see the module's docstring)."""
    g.setdefault(_CONFIRMED, True)


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
    The cookie's name is ``SESSION_COOKIE_NAME`` with the ``__Host-`` prefix whenever the
    browser will accept it there (see the module's docstring).
    """

    def get_cookie_name(self, app: Flask) -> str:
        name = super().get_cookie_name(app)
        return HOST_PREFIX + name if _host_only(app) else name

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        if request.path.startswith(API_PREFIX):
            return ApiSession()
        return super().open_session(app, request)

    def should_set_cookie(self, app: Flask, session: SessionMixin) -> bool:
        """Flask's rule, except that an unchanged login is renewed only once this request
        found it standing: one logged out or ended since is left to age."""
        if session.modified or LOGIN_KEY not in session:
            return super().should_set_cookie(app, session)
        return bool(g.get(_CONFIRMED)) and super().should_set_cookie(app, session)

    def save_session(self, app: Flask, session: SessionMixin, response: Response) -> None:
        super().save_session(app, session, response)
        # The cookie a browser kept from before the prefix (a login made before the
        # upgrade) is no longer read; expire it rather than send it for its lifetime.
        legacy = super().get_cookie_name(app)
        if legacy != self.get_cookie_name(app) and legacy in request.cookies:
            response.delete_cookie(
                legacy,
                path=self.get_cookie_path(app),
                secure=self.get_cookie_secure(app),
                httponly=self.get_cookie_httponly(app),
                samesite=self.get_cookie_samesite(app),
            )


def _host_only(app: Flask) -> bool:
    """Whether *app*'s session cookie can carry the ``__Host-`` prefix: its origin is
    https and the cookie is ``Secure``, for the whole host (``Path=/``) and only it (no
    ``Domain``). A service that sets ``SESSION_COOKIE_DOMAIN`` to share its cookie with
    other hosts keeps the plain name, and so the exposure it asked for."""
    state = app.extensions.get("srcore")
    section = getattr(state, "section", None)
    origin = str(section["origin"]) if section is not None else ""
    return (
        origin.startswith("https://")
        and bool(app.config["SESSION_COOKIE_SECURE"])
        and not app.config["SESSION_COOKIE_DOMAIN"]
        and (app.config["SESSION_COOKIE_PATH"] or app.config["APPLICATION_ROOT"]) == "/"
    )
