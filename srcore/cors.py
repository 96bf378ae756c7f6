"""Cross-origin access for the routes that browser apps call with bearer tokens.

A browser app on another origin (a public OAuth client) can only read an API's answers if
the API says so with CORS headers. Every service's ``/api/`` is authenticated by bearer
tokens alone, never by cookies, so it answers ``Access-Control-Allow-Origin: *`` without
``Access-Control-Allow-Credentials``: the browser then sends no cookies, and a page that
relies on a cookie cannot be read cross-origin. Other routes that need the same (meta's
token endpoint, its metadata and keys) are added by endpoint name with :func:`allow`;
cookie-authenticated pages never get CORS headers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import Response, request

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["ALLOWED_HEADERS", "EXPOSED_HEADERS", "allow", "init_app", "is_cors_route"]

_KEY = "srcore.cors"
#: Request headers a cross-origin caller may send.
ALLOWED_HEADERS = "Authorization, Content-Type"
#: Response headers a cross-origin caller may read besides the simple ones.
EXPOSED_HEADERS = "WWW-Authenticate, Retry-After, Link, X-Request-Id"
_DEFAULT_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_PREFLIGHT_MAX_AGE = "600"


def is_cors_route(path: str, endpoint: str | None, endpoints: frozenset[str]) -> bool:
    """Whether the route at *path* (endpoint *endpoint*) answers cross-origin callers."""
    from srcore.routing import API_PREFIX

    return path.startswith(API_PREFIX) or (endpoint is not None and endpoint in endpoints)


def allow(app: Flask, *endpoints: str) -> None:
    """Answer cross-origin callers at *endpoints* too (they must not rely on cookies)."""
    app.extensions[_KEY] = frozenset(app.extensions.get(_KEY, frozenset())) | set(endpoints)


def _add_headers(response: Response) -> Response:
    response.headers["Access-Control-Allow-Origin"] = "*"
    response.headers.remove("Access-Control-Allow-Credentials")  # pop() raises inside
    preflight = request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers
    if preflight:
        methods = ", ".join(sorted(response.allow)) if response.allow else _DEFAULT_METHODS
        response.headers["Access-Control-Allow-Methods"] = methods
        response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
        response.headers["Access-Control-Max-Age"] = _PREFLIGHT_MAX_AGE
    else:
        response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS
    return response


def init_app(app: Flask) -> None:
    """Add CORS headers to the answers of ``/api/`` and of the endpoints :func:`allow` names."""
    app.extensions.setdefault(_KEY, frozenset())

    def after(response: Response) -> Response:
        # Sent whether or not the request names an Origin, so caches store one answer.
        if is_cors_route(request.path, request.endpoint, app.extensions[_KEY]):
            return _add_headers(response)
        return response

    app.after_request(after)
