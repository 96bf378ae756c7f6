"""Per-request glue: request hygiene, request ids, CSRF checks, access logging and metrics.

One before-request and one after-request function do all of it, because every hook Flask
runs is paid on every request.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, g, request

from srcore.logsetup import log_safe
from srcore.redact import ENVIRON_KEY, is_secret_name, redact_target

if TYPE_CHECKING:
    from srcore.service import SrcoreState

__all__ = ["init_app", "request_id"]

access_log = logging.getLogger("srcore.access")
_INCOMING_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")


def request_id() -> str:
    """The id of the current request: the proxy's ``X-Request-Id`` if sane, else a new one.

    A new id is 64 random bits in hex: unique enough to find one request in the logs, and
    a quarter of the cost of a UUID (every response carries one). The header is read
    from the environ: a header lookup that misses raises and catches a KeyError inside.
    """
    rid: str | None = g.get("srcore_request_id")
    if rid is None:
        incoming = request.environ.get("HTTP_X_REQUEST_ID")
        if isinstance(incoming, str) and _INCOMING_ID.fullmatch(incoming):
            rid = incoming
        else:
            rid = os.urandom(8).hex()
        g.srcore_request_id = rid
    return rid


_VARIABLE = re.compile(r"<([^<>]+)>")


def _secret_routes(app: Flask) -> tuple[re.Pattern[str], ...]:
    """A pattern per route with a secret-named URL variable (``/reset/<token>``): its
    static text, then one path segment per variable, open at the end."""
    cached: tuple[re.Pattern[str], ...] | None = app.extensions.get("srcore_secret_routes")
    if cached is not None:
        return cached
    patterns = []
    for rule in app.url_map.iter_rules():
        names = [inner.rsplit(":", 1)[-1] for inner in _VARIABLE.findall(rule.rule)]
        if not any(is_secret_name(name) for name in names):
            continue
        pieces = _VARIABLE.split(rule.rule)  # static text and variables, alternately
        regex = "".join(
            re.escape(piece) if i % 2 == 0 else f"(?P<{piece.rsplit(':', 1)[-1]}>[^/]+)"
            for i, piece in enumerate(pieces)
        )
        patterns.append(re.compile(regex))
    found = app.extensions["srcore_secret_routes"] = tuple(patterns)
    return found


def _route_args(app: Flask) -> Mapping[str, Any] | None:
    """The URL variables the request's path gives its route, for redacting the log line.

    A request no route takes (a POST to ``/confirm/<token>``, a 405; the link with a slash
    or more pasted after it, a 404) reaches no view, so Flask has no ``view_args``; yet
    its path may hold a route's secret. Only then is it read against the routes with
    secret-named variables, as far as they go (such refusals are rare).
    """
    if request.view_args is not None:
        return request.view_args
    for pattern in _secret_routes(app):
        found = pattern.match(request.path)
        if found:
            return found.groupdict()
    return None


def init_app(app: Flask) -> None:
    """Register the request hooks on *app*."""
    from flask_wtf.csrf import CSRFProtect

    from srcore.hygiene import check_request
    from srcore.routing import API_PREFIX

    st: SrcoreState = app.extensions["srcore"]
    csrf: CSRFProtect = app.extensions["csrf"]
    unsafe = frozenset(app.config.get("WTF_CSRF_METHODS", ("POST", "PUT", "PATCH", "DELETE")))
    # The API authenticates with bearer tokens and meta's pushes under /_srcore/ are signed
    # JWS bodies: neither is a form a browser could be tricked into submitting.
    exempt = (API_PREFIX, "/_srcore/")

    def before() -> None:
        g.srcore_started = time.perf_counter()
        # Limits and control characters first: nothing below should see such a request.
        check_request(request)
        if (
            request.method in unsafe
            and not request.path.startswith(exempt)
            and app.config["WTF_CSRF_ENABLED"]
        ):
            # Views a service exempts with csrf.exempt (an OAuth token endpoint) are skipped.
            csrf.protect(apply_exemptions=True)

    def after(response: Response) -> Response:
        rid = request_id()
        response.headers["X-Request-Id"] = rid
        elapsed = time.perf_counter() - g.get("srcore_started", time.perf_counter())
        # The metrics feature's, when the app serves metrics (srcore.metrics.EXTENSION_KEY).
        metrics = app.extensions.get("srcore.metrics")
        if metrics is not None:
            metrics.observe(request, response, elapsed)
        # Tokens in paths and codes in queries never reach a log line, ours or the
        # server's (srcore.gunicorn_logging reads the target left in the environ); nor
        # do line breaks or terminal escapes, decoded from the path's %0d%0a or %1b.
        target = log_safe(
            redact_target(request.path, request.query_string.decode("latin-1"), _route_args(app))
        )
        request.environ[ENVIRON_KEY] = target
        if access_log.isEnabledFor(logging.INFO):
            access_log.info(
                '%s "%s %s" %d %.1fms rid=%s',
                st.service_id,
                log_safe(str(request.environ.get("REQUEST_METHOD", request.method))),
                target,
                response.status_code,
                elapsed * 1000,
                rid,
            )
        return response

    app.before_request(before)
    app.after_request(after)
