"""Cross-origin access for the routes that browser apps call with bearer tokens.

A browser app on another origin (a public OAuth client) can only read an API's answers if
the API says so with CORS headers. Every service's ``/api/`` is authenticated by bearer
tokens alone, never by cookies, so it answers ``Access-Control-Allow-Origin: *`` without
``Access-Control-Allow-Credentials``: the browser then sends no cookies, and a page that
relies on a cookie cannot be read cross-origin. Other routes that need the same (meta's
token endpoint, its metadata and keys) are added by endpoint name with :func:`allow`;
cookie-authenticated pages never get CORS headers.

Such a caller sends what the API documents (``If-Match``, ``If-None-Match``) and reads what
it answers (``ETag``, ``Location``, ``Retry-After``...). A preflight under ``/api/`` is
answered 204 with every method, whether or not a route takes the path or the method
(:func:`answer_preflight`): the request itself then gets its 404 or 405 with the standard
error body, which the caller can read, instead of a CORS error that hides it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flask import Flask, Request, Response

__all__ = [
    "ALLOWED_HEADERS",
    "EXPOSED_HEADERS",
    "STEP_KEY",
    "allow",
    "answer_preflight",
    "init_app",
    "is_cors_route",
]

_KEY = "srcore.cors"
#: Request headers a cross-origin caller may send: its token, a JSON body, and the
#: conditional headers of srcore.conditional (each service's OpenAPI document lists them).
ALLOWED_HEADERS = "Authorization, Content-Type, If-Match, If-None-Match"
#: Response headers a cross-origin caller may read besides the CORS-safelisted ones
#: (Content-Type, Cache-Control...): a resource's ETag, a created one's Location, when to
#: retry, the Bearer challenge, and the id to quote when reporting a failed request.
EXPOSED_HEADERS = "ETag, Location, Link, Retry-After, WWW-Authenticate, X-Request-Id"
_DEFAULT_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_PREFLIGHT_MAX_AGE = "600"


def is_cors_route(path: str, endpoint: str | None, endpoints: frozenset[str]) -> bool:
    """Whether the route at *path* (endpoint *endpoint*) answers cross-origin callers."""
    from srcore.routing import API_PREFIX

    return path.startswith(API_PREFIX) or (endpoint is not None and endpoint in endpoints)


def _is_preflight(request: Request) -> bool:
    return request.method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in request.environ


def answer_preflight(request: Request) -> Response | None:
    """A 204 for a CORS preflight to a cross-origin route, before routing errors and views.

    Flask answers ``OPTIONS`` itself only where a route takes the path: a preflight to a
    path no route takes (a resource type this version lacks) was a 404, and one for a
    method the route lacks named only the route's methods, so the browser failed the
    request with a CORS error and its caller never saw the API's 404 or 405 body. The
    after-request step adds the CORS headers (every method, the allowed headers).
    A before-request step of :mod:`srcore.lifecycle`, added by the app factory.
    """
    if not _is_preflight(request):
        return None
    from flask import Response, current_app

    endpoints: frozenset[str] = current_app.extensions.get(_KEY, frozenset())
    if is_cors_route(request.path, request.endpoint, endpoints):
        return Response(status=204)
    return None


def allow(app: Flask, *endpoints: str) -> None:
    """Answer cross-origin callers at *endpoints* too (they must not rely on cookies)."""
    app.extensions[_KEY] = frozenset(app.extensions.get(_KEY, frozenset())) | set(endpoints)


#: Where the after-request function of :mod:`srcore.lifecycle` finds this module's step
#: (``srcore.lifecycle.CORS_STEP``; neither module imports the other).
STEP_KEY = "srcore.cors.step"

_PREFLIGHT = (
    ("Access-Control-Allow-Headers", ALLOWED_HEADERS),
    ("Access-Control-Max-Age", _PREFLIGHT_MAX_AGE),
)


def _put(
    response: Response, present: set[str], added: list[tuple[str, str]], name: str, value: str
) -> None:
    """Set header *name*: on the response if it has one already, else with the others."""
    if name.lower() in present:
        response.headers[name] = value
    else:
        added.append((name, value))


def _add_headers(
    request: Request, response: Response, present: set[str], added: list[tuple[str, str]]
) -> None:
    _put(response, present, added, "Access-Control-Allow-Origin", "*")
    if "access-control-allow-credentials" in present:
        response.headers.remove("Access-Control-Allow-Credentials")
    if _is_preflight(request):
        # Every method: the request itself is answered (a 405 with its body) by the API.
        _put(response, present, added, "Access-Control-Allow-Methods", _DEFAULT_METHODS)
        for name, value in _PREFLIGHT:
            _put(response, present, added, name, value)
    else:
        _put(response, present, added, "Access-Control-Expose-Headers", EXPOSED_HEADERS)


def init_app(app: Flask) -> None:
    """Add CORS headers to the answers of ``/api/`` and of the endpoints :func:`allow` names.

    They are added by srcore's one after-request function, after the security headers.
    """
    from srcore.routing import API_PREFIX

    app.extensions.setdefault(_KEY, frozenset())
    extensions = app.extensions

    def add_cors_headers(
        request: Request, response: Response, present: set[str], added: list[tuple[str, str]]
    ) -> None:
        # Sent whether or not the request names an Origin, so caches store one answer.
        if request.path.startswith(API_PREFIX) or (
            extensions[_KEY] and request.endpoint in extensions[_KEY]
        ):
            _add_headers(request, response, present, added)

    app.extensions[STEP_KEY] = add_cors_headers
