"""Logging in through meta: the OAuth 2.0 client side of every service.

``login_required`` hands the browser to :class:`OAuthLogin`, which sends it to meta's
authorization endpoint (authorization code + PKCE S256 + state, RFC 6749 and 7636). meta
sends it back to ``/oauth/callback``, where the service exchanges the code, reads the
user's profile with the access token, keeps a local copy of it (the row's id is meta's
account id) and starts its own session.

All IO goes through :class:`MetaClient`, which takes an HTTP session, so tests hand it a
fake of meta's answers. A meta that cannot be reached gives a 503 "Account service
unavailable" page for a new login; existing sessions and tokens do not need meta.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from flask import Response, current_app, flash, redirect, request, session

from srcore.auth.link import (
    CALLBACK_PATH,
    LOGIN_SCOPE,
    MetaClient,
    MetaLink,
    MetaRefused,
    MetaUnavailable,
    build_meta_link,
)
from srcore.auth.state import LoginBackend, auth_state
from srcore.auth.users import profile_values, upsert_user
from srcore.auth.web import NoAccountService, is_safe_next, log_in
from srcore.db import release_request_connection
from srcore.identity.protocol import MAX_TIME

if TYPE_CHECKING:
    from werkzeug.wrappers import Response as BaseResponse

    from srcore.config import Config

__all__ = [
    "CALLBACK_PATH",
    "LOGIN_SCOPE",
    "MetaClient",
    "MetaLink",
    "MetaRefused",
    "MetaUnavailable",
    "OAuthLogin",
    "build_meta_link",
    "default_login_backend",
    "fetch_unknown_user",
    "init_app",
    "pkce_challenge",
    "profile_values",
    "upsert_user",
]

log = logging.getLogger("srcore.auth")

#: meta's end-session endpoint (its discovery document's ``end_session_endpoint``).
END_SESSION_PATH = "/oauth/logout"

_PENDING = "_oauth"
_PENDING_MAX = 5
_PENDING_LIFETIME = 600
#: The most characters of return paths that the pending logins keep between them. Any
#: page on any site can send a browser to ``/login?next=...``, and each visit is a pending
#: login in the session cookie: unbounded, a few such visits would push the cookie past
#: what browsers store (about 4 KB, so the user's own login would fail to start) and,
#: with every service of one host sending its cookie to all of them, the request's
#: ``Cookie`` header past the header limit (a 431 from every service of the host, for as
#: long as the cookies live).
_PENDING_NEXT_CHARS = 1024


def pkce_challenge(verifier: str) -> str:
    """The S256 code challenge of *verifier* (RFC 7636 section 4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def _link() -> MetaLink:
    link = auth_state().identity
    if link is None:
        raise RuntimeError("this service has no [meta] in its config")
    return link


def _unavailable() -> Response:
    from srcore.errors import error_response

    return error_response(
        503,
        "The network's account service cannot be reached right now, so you cannot log in. "
        "If you were already logged in, nothing changes. Try again in a minute.",
        title="Account service unavailable",
        headers=[("Retry-After", "30")],
    )


class OAuthLogin:
    """The login backend that logs users in through meta (the default with a [meta])."""

    def begin_login(self, next_url: str) -> Response:
        link = _link()
        try:
            endpoint = link.meta.authorization_endpoint()
        except (MetaUnavailable, MetaRefused) as exc:
            log.warning("cannot start a login at meta: %s", exc)
            return _unavailable()
        state = secrets.token_urlsafe(32)
        # 32 random bytes, 43 characters: RFC 7636's recommendation, and the least it allows.
        verifier = secrets.token_urlsafe(32)
        now = int(time.time())
        pending = _pending_logins(now)
        pending[state] = [verifier, _kept_next(next_url), now]
        while len(pending) > _PENDING_MAX or _next_chars(pending) > _PENDING_NEXT_CHARS:
            del pending[min(pending, key=lambda k: pending[k][2])]
        session[_PENDING] = pending
        params = {
            "response_type": "code",
            "client_id": link.meta.client_id or "",
            "redirect_uri": link.redirect_uri,
            "scope": LOGIN_SCOPE,
            "state": state,
            "code_challenge": pkce_challenge(verifier),
            "code_challenge_method": "S256",
        }
        separator = "&" if "?" in endpoint else "?"
        response = Response(status=302)
        response.headers["Location"] = endpoint + separator + urlencode(params)
        response.headers["Cache-Control"] = "no-store"
        return response

    def logout_url(self) -> str | None:
        # The service's session is over; meta's end-session endpoint (OIDC RP-Initiated
        # Logout 1.0) then asks the person whether to end the network's session too (a
        # link on any page can send a browser there, so meta asks rather than obeys), and
        # sends the browser back to this service's front page either way: meta accepts a
        # first-party client's own front page as its post-logout redirect URI.
        link = _link()
        params = {
            "client_id": link.meta.client_id or "",
            "post_logout_redirect_uri": link.origin + "/",
        }
        return link.meta.origin + END_SESSION_PATH + "?" + urlencode(params)


def _kept_next(next_url: str) -> str:
    """Where a login returns to, as its pending entry keeps it: *next_url* when it is
    safe and short enough to keep, else its path without the query when that is, else
    the front page."""
    if not is_safe_next(next_url):
        return "/"
    if len(next_url) <= _PENDING_NEXT_CHARS:
        return next_url
    path = next_url.split("?", 1)[0]
    return path if len(path) <= _PENDING_NEXT_CHARS else "/"


def _next_chars(pending: dict[str, list[Any]]) -> int:
    """The characters of return paths *pending* keeps, which a stranger's page chooses."""
    return sum(len(str(entry[1])) for entry in pending.values())


def _pending_logins(now: int) -> dict[str, list[Any]]:
    """The logins this browser started and has not finished, the stale ones dropped."""
    raw = session.get(_PENDING)
    pending: dict[str, list[Any]] = {}
    if isinstance(raw, dict):
        for key, value in raw.items():
            if (
                isinstance(key, str)
                and isinstance(value, list)
                and len(value) == 3
                and isinstance(value[2], int)
                and now - value[2] < _PENDING_LIFETIME
            ):
                pending[key] = value
    return pending


def _bad_callback(reason: str, status: int = 400) -> Response:
    from srcore.errors import error_response

    return error_response(status, reason, title="Login failed")


def callback() -> BaseResponse:
    """``GET /oauth/callback``: finish a login that :class:`OAuthLogin` started."""
    link = _link()
    now = int(time.time())
    pending = _pending_logins(now)
    given = request.args.get("state", "")
    found: list[Any] | None = None
    for state, entry in pending.items():
        if hmac.compare_digest(state.encode(), given.encode()):
            found = entry
            del pending[state]
            break
    if pending:
        session[_PENDING] = pending
    else:
        # A stranger's callback leaves no cookie behind, and a finished login no entry.
        session.pop(_PENDING, None)
    if found is None:
        return _bad_callback(_unknown_state_reason())
    verifier, next_url = str(found[0]), str(found[1])
    # RFC 9207: the answer names the server that gave it. One naming another server is a
    # mix-up (a code meant for meta sent elsewhere, or another server's code sent here):
    # nothing of it is used. One naming none comes from a meta older than the parameter.
    issuer = request.args.get("iss")
    if issuer is not None and not hmac.compare_digest(issuer.encode(), link.issuer.encode()):
        log.warning("login callback: the answer names another server (iss %r)", issuer[:200])
        return _bad_callback(
            "This answer came from another server than the account service. Log in again."
        )
    error = request.args.get("error")
    if error:
        if error == "access_denied":
            return _bad_callback("You did not allow the login.", 403)
        return _bad_callback(f"The account service refused the login ({error[:64]}).")
    code = request.args.get("code", "")
    if not code:
        return _bad_callback("The account service sent no authorization code. Log in again.")
    # Two calls to meta, then the copy of the profile in a transaction of its own: the
    # request's session (which a hook before this view may have read with) holds no
    # connection meanwhile. A GET's session cannot have written anything.
    release_request_connection()
    try:
        tokens = link.meta.exchange_code(code, verifier=verifier, redirect_uri=link.redirect_uri)
        profile = link.meta.profile(str(tokens["access_token"]))
        values = profile_values(profile)
    except MetaUnavailable as exc:
        log.warning("login callback: meta unavailable: %s", exc)
        return _unavailable()
    except MetaRefused as exc:
        log.warning("login callback: meta refused: %s", exc)
        return _bad_callback("The account service did not accept this login. Log in again.")
    except ValueError as exc:
        log.error("login callback: meta sent an unusable profile: %s", exc)
        return _unavailable()
    user = upsert_user(values)
    log_in(user, at=_issued_at(str(tokens["access_token"])))
    # log_in starts a fresh session, so the message goes in after it.
    flash(f"Logged in as {values['username']}.", "success")
    return redirect(next_url if is_safe_next(next_url) else "/")


def _unknown_state_reason() -> str:
    """Why a callback whose state this browser does not hold is refused: most often a
    second tab's login, whose pending entry the first tab's login cleared. The person is
    logged in then, and "log in again" would only bring them back as the same user."""
    from werkzeug.exceptions import HTTPException

    from srcore.auth.web import current_user

    try:
        user = current_user._get_current_object()
    except HTTPException:  # the session cannot be checked now: say nothing of it
        user = None
    if user is None:
        if current_app.session_interface.get_cookie_name(current_app) not in request.cookies:
            # The login started here keeps its state in this site's cookie, which did not
            # come back: "not started here" would send the person round again for nothing.
            return (
                "This login could not be finished: your browser did not send back this "
                "site's cookie, which keeps the login it started here (the cookie was "
                f"cleared meanwhile, or cookies are blocked for {request.host}). Logging in "
                "needs that cookie: let this site keep it, then log in again."
            )
        return "This login was not started here, or it took too long. Go back and log in again."
    return (
        f"This browser is already logged in here as {user.username}, maybe by a login "
        "in another tab, so this one was not used. To log in as someone else, log out "
        "first."
    )


def _issued_at(access_token: str) -> float | None:
    """When meta issued *access_token*, by meta's clock (its ``iat``); None if it holds no
    such time. Read without checking the signature: the token came straight from meta, in
    the answer to this service's own request."""
    from joserfc.errors import JoseError
    from joserfc.jws import extract_compact

    try:
        claims = json.loads(extract_compact(access_token.encode()).payload)
        issued = claims.get("iat") if isinstance(claims, dict) else None
    except (JoseError, ValueError):
        return None
    if isinstance(issued, int) and not isinstance(issued, bool) and 0 < issued < MAX_TIME:
        return float(issued)
    return None


def fetch_unknown_user(user_id: int) -> bool:
    """:func:`srcore.auth.link.fetch_unknown_user` through the current app's link to meta."""
    from srcore.auth.link import fetch_unknown_user as fetch

    return fetch(_link(), user_id)


def default_login_backend(config: Config, service_id: str) -> LoginBackend:
    """The login backend for *service_id* in the network described by *config*.

    Through meta when the config has a ``[meta]`` section and this service has its OAuth
    client id and secret; otherwise a backend that explains why nobody can log in.
    meta itself passes its own backend to :func:`srcore.create_app`.
    """
    if not config.has_service("meta") or service_id == "meta":
        return NoAccountService()
    section = config.section(service_id)
    if not section.get("oauth-client-id") or not section.get("oauth-client-secret"):
        return NoAccountService(
            f"Logging in needs this service's OAuth client id and secret: ask the operator "
            f"to set oauth-client-id and oauth-client-secret in the [{service_id}] section."
        )
    return OAuthLogin()


def init_app(app: Any) -> None:
    """Add ``/oauth/callback`` to an app whose login goes through meta."""
    app.add_url_rule(CALLBACK_PATH, endpoint="srcore_oauth_callback", view_func=callback)
