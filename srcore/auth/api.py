"""Bearer-token authentication for API routes (RFC 6750), with scope checks.

Tokens are verified locally (see :mod:`srcore.auth.tokens`), so an API request costs no
call to meta, no database write and, unless the view reads ``current_user``, no query.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, ParamSpec, TypeVar

from flask import Response, current_app, g, request

from srcore.auth.scopes import parse_scope
from srcore.auth.state import auth_state, mark_guard

if TYPE_CHECKING:
    from flask import Flask

    from srcore.auth.tokens import AccessToken

__all__ = ["bearer_token", "current_token", "init_app", "insufficient_scope", "oauth"]

P = ParamSpec("P")
R = TypeVar("R")


def current_token() -> AccessToken | None:
    """The verified access token of the current API request, if any."""
    token: AccessToken | None = g.get("srcore_token")
    return token


def _challenge(
    status: int, reason: str, *, error: str | None, scope: str | None, field: str | None = None
) -> Response:
    from srcore.errors import error_response

    realm = current_app.extensions["srcore"].service_id
    parts = [f'realm="{realm}"']
    if error:
        parts.append(f'error="{error}"')
        parts.append('error_description="{}"'.format(reason.replace('"', "'")))
    if scope:
        parts.append(f'scope="{scope}"')
    header = ("WWW-Authenticate", "Bearer " + ", ".join(parts))
    return error_response(status, reason, headers=[header], field=field)


def insufficient_scope(reason: str, scope: str, *, field: str | None = None) -> Response:
    """The 403 for a token that lacks *scope* (RFC 6750 3.1), whose challenge names it;
    *field* is the input that asked for it, when the scope depends on the input."""
    return _challenge(403, reason, error="insufficient_scope", scope=scope, field=field)


def bearer_token() -> AccessToken | Response:
    """The request's verified bearer token, or the RFC 6750 error response to send instead."""
    from srcore.auth.tokens import TokenError, VerificationUnavailable

    header = request.headers.get("Authorization", "")
    kind, _, credentials = header.partition(" ")
    if kind.lower() != "bearer" or not credentials.strip():
        reason = "This API needs an access token: Authorization: Bearer <token>."
        return _challenge(401, reason, error=None, scope=None)
    verifier = auth_state().token_verifier
    if verifier is None:
        reason = "No account service is configured, so no access token can be checked."
        return _challenge(401, reason, error="invalid_token", scope=None)
    try:
        token: AccessToken = verifier.verify(credentials.strip())
    except TokenError as exc:
        return _challenge(401, exc.description, error=exc.error, scope=None)
    except VerificationUnavailable as exc:
        from srcore.errors import error_response

        reason = f"This token cannot be checked right now: {exc}"
        return error_response(503, reason, headers=[("Retry-After", "30")])
    return token


def oauth(scope: str) -> Callable[[Callable[P, R]], Callable[P, R | Response]]:
    """Require a bearer token granting *scope* (``SERVICE/NAME:RO|RW``).

    The scope must be one the service declares in its manifest; a typo fails the first
    request loudly instead of silently guarding a route with a scope nobody can hold.
    """
    required = parse_scope(scope)

    def decorator(view: Callable[P, R]) -> Callable[P, R | Response]:
        @functools.wraps(view)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | Response:
            st = current_app.extensions["srcore"]
            if required.service != st.service_id or st.manifest.scope(required.name) is None:
                raise RuntimeError(
                    f"{view.__name__} requires scope {scope!r}, which {st.service_id}'s "
                    "service.yaml does not declare"
                )
            token = bearer_token()
            if isinstance(token, Response):
                return token
            if not any(held.satisfies(required) for held in token.scopes):
                return insufficient_scope(f"This call needs the scope {scope}.", scope)
            g.srcore_token = token
            # The caller's user row is loaded only if the view asks for current_user:
            # a view that needs just the id (current_token().subject) costs no query.
            g.pop("srcore_user", None)
            return view(*args, **kwargs)

        # Read by the API description (srcore.openapi) for the operation's security.
        wrapper.srcore_scope = scope  # type: ignore[attr-defined]
        mark_guard(view, wrapper, f"@oauth({scope!r})")
        return wrapper

    return decorator


def _challenge_every_401(response: Response) -> Response:
    """RFC 6750 3 / RFC 7235 3.1: a 401 of the API names its scheme and realm, however
    it was raised (a view's ``abort(401)``, a token whose user is unknown here)."""
    from srcore.routing import API_PREFIX

    if (
        response.status_code != 401
        or "WWW-Authenticate" in response.headers
        or not request.path.startswith(API_PREFIX)
    ):
        return response
    realm = current_app.extensions["srcore"].service_id
    challenge = f'Bearer realm="{realm}"'
    if request.headers.get("Authorization", "").lower().startswith("bearer "):
        challenge += ', error="invalid_token"'
    response.headers["WWW-Authenticate"] = challenge
    return response


def init_app(app: Flask) -> None:
    """Make every 401 under the API prefix carry a Bearer challenge."""
    app.after_request(_challenge_every_401)
