"""The authorization request's OpenID Connect part: ``prompt`` and ``max_age``.

``prompt=login`` (or ``select_account``), or a login older than ``max_age``, sends the
browser to meta's login page again, with the request to come back to. The way back
carries a signed mark of the login it replaces, so the new login is known to be fresh
even when ``max_age`` is 0 and a second has passed: without it the request would ask
again, for ever. The mark names the client that asked: another client's request, which
the same browser could carry it to, forces a login of its own. ``prompt=none`` never
shows a page: the client gets ``login_required`` (or ``consent_required``) at its
redirect URI instead.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any
from urllib.parse import urlencode

from authlib.oauth2.rfc6749.errors import InvalidRequestError
from authlib.oidc.core.errors import LoginRequiredError
from flask import current_app, redirect, request, url_for
from werkzeug.wrappers import Response

from meta.oauth.oidc import Login, current_login
from srcore.identity.protocol import CLOCK_LEEWAY

__all__ = ["REAUTH_PARAMETER", "reauthentication"]

#: The parameter that marks a request coming back from a forced login.
REAUTH_PARAMETER = "meta_reauth"
#: How long a forced login may take before the request must start over.
REAUTH_WINDOW = 900
#: The longest max_age meta reads (about 30 years); longer ones mean "any login".
MAX_AGE_LIMIT = 10**9
_FORCING = frozenset({"login", "select_account"})


def _signature(issued: str, replaced: str, client_id: str) -> str:
    key = str(current_app.secret_key or "").encode()
    message = f"meta-oidc-reauth:{client_id}:{issued}:{replaced}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def make_mark(replaced: str, client_id: str, *, now: float | None = None) -> str:
    """The mark of a login *client_id* forced, replacing the login *replaced* (a sid, or "")."""
    issued = str(int(time.time() if now is None else now))
    return f"{issued}.{replaced}.{_signature(issued, replaced, client_id)}"


def read_mark(mark: str, client_id: str, *, now: float | None = None) -> str | None:
    """The sid a valid, recent *mark* of *client_id* names as replaced, or None."""
    issued, _, rest = mark.partition(".")
    replaced, _, signature = rest.partition(".")
    if not (issued.isascii() and issued.isdigit()) or len(issued) > 12 or not signature:
        return None
    if not hmac.compare_digest(signature, _signature(issued, replaced, client_id)):
        return None
    # Made by whichever of meta's processes (and hosts) took the first request: one whose
    # clock is a little ahead of this one's made it "in the future" by that much.
    age = (time.time() if now is None else now) - int(issued)
    return replaced if -CLOCK_LEEWAY <= age <= REAUTH_WINDOW else None


def parse_max_age(value: object, redirect_uri: str | None) -> int | None:
    """The request's ``max_age`` in seconds (None: not given); a bad one is the client's
    ``invalid_request``."""
    if value is None or value == "":
        return None
    text = str(value)
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise InvalidRequestError(
            "max_age must be a whole number of seconds.", redirect_uri=redirect_uri
        )
    return min(int(text), MAX_AGE_LIMIT)


def _fresh(login: Login | None, client_id: str) -> bool:
    """Whether this request of *client_id* comes back from a login it forced (and that
    login happened)."""
    mark = request.args.get(REAUTH_PARAMETER)
    if not mark or login is None or len(mark) > 200:
        return False
    replaced = read_mark(mark, client_id)
    return replaced is not None and replaced != login.sid


def reauthentication(grant: Any, prompts: set[str]) -> Response | None:
    """The redirect to the login page this OpenID request needs first, or None.

    Raises the OAuth error to send the client (``login_required`` for ``prompt=none``,
    ``invalid_request`` for a bad ``max_age``).
    """
    redirect_uri = grant.redirect_uri
    max_age = parse_max_age(grant.request.payload.data.get("max_age"), redirect_uri)
    login = current_login()
    client_id = str(grant.client.get_client_id())
    if _fresh(login, client_id):
        return None
    stale = login is None or (max_age is not None and time.time() - login.auth_time > max_age)
    if not stale and not (prompts & _FORCING):
        return None
    if "none" in prompts:
        raise LoginRequiredError(redirect_uri=redirect_uri)
    if request.method != "GET":
        raise InvalidRequestError("Log in again, then retry.", redirect_uri=redirect_uri)
    mark = make_mark(login.sid if login is not None else "", client_id)
    items = [
        (name, value)
        for name, value in request.args.items(multi=True)
        if name not in ("prompt", REAUTH_PARAMETER)
    ]
    rest = [p for p in str(request.args.get("prompt", "")).split() if p not in _FORCING]
    if rest:
        items.append(("prompt", " ".join(rest)))
    items.append((REAUTH_PARAMETER, mark))
    back = request.path + "?" + urlencode(items)
    return redirect(url_for("accounts.login", next=back, reauth="1"))
