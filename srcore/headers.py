"""Security headers on every response of every service.

The shared templates and static files use no inline script or style, so the content
security policy can allow the service's own origin and nothing else. No page may be framed
(``frame-ancestors 'none'`` and ``X-Frame-Options``): meta's consent page would otherwise
be open to clickjacking. HSTS is sent only in production over an https origin, where a
browser told to insist on https can always get it.

The headers are computed once per app from the config; a view that needs another value
(a page meant to be embedded, say) sets the header itself and keeps it.

A response made after reading the session (a logged-in page, a form with its CSRF token)
is ``Cache-Control: private`` unless the view said otherwise: ``Vary: Cookie`` alone keeps
it apart only in caches that honour it, and a proxy or CDN that does not would hand one
user's private tracker, or their token, to the next visitor.
"""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Request, Response, session

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "HSTS_MAX_AGE",
    "STEP_KEY",
    "init_app",
    "security_headers",
]

#: The policy of every page: the service's own scripts, styles, images and fonts only.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

#: Two years: the value browsers' preload lists ask for.
HSTS_MAX_AGE = 2 * 365 * 24 * 3600


def security_headers(*, production: bool, origin: str) -> dict[str, str]:
    """The headers every response of a service with *origin* carries."""
    headers = {
        "Content-Security-Policy": CONTENT_SECURITY_POLICY,
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "strict-origin-when-cross-origin",
    }
    if production and origin.lower().startswith("https://"):
        headers["Strict-Transport-Security"] = f"max-age={HSTS_MAX_AGE}"
    return headers


#: Where the after-request function of :mod:`srcore.lifecycle` finds this module's step
#: (``srcore.lifecycle.HEADERS_STEP``; neither module imports the other).
STEP_KEY = "srcore.headers.step"


def init_app(app: Flask) -> None:
    """Add the security headers to every response of *app* (error pages included).

    The headers are added by srcore's one after-request function, first of its steps.
    """
    st = app.extensions["srcore"]
    headers: Mapping[str, str] = security_headers(
        production=bool(st.is_production), origin=str(st.section["origin"])
    )
    # Built once per app: the pairs to add, and their names as the response's are compared.
    pairs = tuple(headers.items())
    names = frozenset(name.lower() for name in headers)

    def add_headers(
        request: Request, response: Response, present: set[str], added: list[tuple[str, str]]
    ) -> None:
        if names.isdisjoint(present):
            added.extend(pairs)
        else:  # a view set one of them itself, and keeps it
            added.extend(pair for pair in pairs if pair[0].lower() not in present)
        # Flask's proxy marks the session it hands out as accessed (so Flask adds Vary:
        # Cookie), as the proxy read here before: any response with a cookie session is
        # private unless it says otherwise; an API request's (the null one) is not.
        if "cache-control" not in present and not app.session_interface.is_null_session(
            session._get_current_object()  # type: ignore[attr-defined]
        ):
            added.append(("Cache-Control", "private"))

    app.extensions[STEP_KEY] = add_headers
