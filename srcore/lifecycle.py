"""Per-request glue: one before-request and one after-request function for all of srcore.

Flask pays for every hook on every request (a lookup, a coroutine check, a call through
``ensure_sync``), and each hook of its own would look the request up again. So srcore's
per-request work runs in these two functions, in a fixed order:

Before the view (:func:`init_app`'s ``before``):

1. request hygiene (:func:`srcore.hygiene.check_request`): limits and control
   characters first, so nothing below sees such a request;
2. the CSRF check of a form sent with an unsafe method (not under ``/api/``, which
   authenticates with bearer tokens, nor ``/_srcore/``, whose pushes are signed), then
   its ``Origin`` (:func:`srcore.hygiene.check_form_origin`);
3. the steps features add with :func:`add_before`, in the order they were added (a CORS
   preflight under ``/api/`` is answered first, :func:`srcore.cors.answer_preflight`; the
   write rate limit, :mod:`srcore.ratelimit`, is added last when the app is built: a
   write is counted once the request has passed every check above). A step that returns
   a response ends the request there, as a before-request function does.

After the view, on every response, error pages included (Flask runs after-request
functions on the response its error handlers made):

1. security headers and ``Cache-Control: private`` (:mod:`srcore.headers`), unless the
   response has its own (a logged-in user's page is ``no-store``: :mod:`srcore.auth.web`);
2. CORS headers on the routes that answer cross-origin callers (:mod:`srcore.cors`);
3. the steps features add with :func:`add_after`, in the order they were added;
4. ``X-Request-Id``;
5. metrics (when the app serves them), the redacted request target for the server's
   access log, srcore's access log line (when its logger is on).

:mod:`srcore.cors` and :mod:`srcore.headers` sit beside this module (neither imports the
other): each leaves its step in ``app.extensions`` under :data:`HEADERS_STEP` and
:data:`CORS_STEP`, which the after-request function reads once, at the app's first
request. The response's header names are read once for all the steps (each header
lookup or replacement would scan them again); a step appends the headers the response
lacks to one list, which is added at the end.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, Response, g, request

from srcore.logsetup import log_safe
from srcore.redact import ENVIRON_KEY, is_secret_name, redact_target

if TYPE_CHECKING:
    from flask.typing import ResponseReturnValue

    from srcore.service import SrcoreState

__all__ = [
    "CORS_STEP",
    "HEADERS_STEP",
    "AfterStep",
    "BeforeStep",
    "add_after",
    "add_before",
    "after_steps",
    "before_steps",
    "init_app",
    "request_id",
]

access_log = logging.getLogger("srcore.access")
_INCOMING_ID = re.compile(r"[A-Za-z0-9._-]{8,64}")

#: A step of the before-request function: given the request, None to go on, or a
#: response (or anything a view may return) to answer with instead of the view.
BeforeStep = Callable[[Request], "ResponseReturnValue | None"]
#: A step of the after-request function: ``step(request, response, present, added)``,
#: where *present* holds the lowercased names of the response's headers and *added* the
#: ``(name, value)`` pairs the response will be extended with. A step sets a header
#: already present on the response itself; it appends one that is not to *added*.
AfterStep = Callable[[Request, Response, set[str], list[tuple[str, str]]], None]

#: Where :mod:`srcore.headers` leaves its after-request step.
HEADERS_STEP = "srcore.headers.step"
#: Where :mod:`srcore.cors` leaves its after-request step.
CORS_STEP = "srcore.cors.step"
#: The metrics feature's object, when the app serves metrics (srcore.metrics.EXTENSION_KEY).
_METRICS = "srcore.metrics"
_BEFORE_STEPS = "srcore.lifecycle.before"
_AFTER_STEPS = "srcore.lifecycle.after"

# The request's id and start time live in its WSGI environ: a dict the request object
# already holds, where the flask.g proxy would cost a lookup and a call each time.
_ID_KEY = "srcore.request_id"
_STARTED_KEY = "srcore.started"


def request_id() -> str:
    """The id of the current request: the proxy's ``X-Request-Id`` if sane, else a new one.

    A new id is 64 random bits in hex: unique enough to find one request in the logs, and
    a quarter of the cost of a UUID (every response carries one).
    """
    return _request_id(request.environ)


def _request_id(environ: dict[str, Any]) -> str:
    rid = environ.get(_ID_KEY)
    if rid is None:
        incoming = environ.get("HTTP_X_REQUEST_ID")
        if isinstance(incoming, str) and _INCOMING_ID.fullmatch(incoming):
            rid = incoming
        else:
            rid = os.urandom(8).hex()
        environ[_ID_KEY] = rid
    return str(rid)


def before_steps(app: Flask) -> list[BeforeStep]:
    """The steps *app*'s before-request function runs after hygiene and CSRF, in order."""
    steps: list[BeforeStep] = app.extensions.setdefault(_BEFORE_STEPS, [])
    return steps


def add_before(app: Flask, step: BeforeStep) -> None:
    """Run *step* before each view of *app*, after the steps added before it.

    A feature adds its step here instead of registering a before-request function of its
    own: one function runs them all (see the module's docstring for the order).
    """
    before_steps(app).append(step)


def after_steps(app: Flask) -> list[AfterStep]:
    """The steps *app*'s after-request function runs after CORS, in order."""
    steps: list[AfterStep] = app.extensions.setdefault(_AFTER_STEPS, [])
    return steps


def add_after(app: Flask, step: AfterStep) -> None:
    """Run *step* on each response of *app*, after the steps added before it (see the
    module's docstring for where they run among srcore's own)."""
    after_steps(app).append(step)


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


def _unrouted_args(app: Flask, path: str) -> Mapping[str, Any] | None:
    """The URL variables of a route with secret-named ones that *path* falls under.

    A request no route takes (a POST to ``/confirm/<token>``, a 405; the link with a slash
    or more pasted after it, a 404) reaches no view, so Flask has no ``view_args``; yet
    its path may hold a route's secret. Only then is it read against the routes with
    secret-named variables, as far as they go (such refusals are rare).
    """
    for pattern in _secret_routes(app):
        found = pattern.match(path)
        if found:
            return found.groupdict()
    return None


#: The endpoints of the login and logout every service has (:mod:`srcore.auth.web`),
#: whichever views a service puts there (meta its own pages).
_LOGIN_ENDPOINTS = ("srcore_login", "srcore_logout")


def _token_of_an_earlier_session(app: Flask, req: Request) -> bool:
    """Whether *req*, refused by the CSRF check, is a form whose effect does not depend on
    the session (the service's login or logout, or a view marked
    :func:`srcore.sessions.any_session`), sent from the service's own page with a token
    this service signed for an earlier session of the browser: it is then taken."""
    from itsdangerous import BadData, URLSafeTimedSerializer

    from srcore.errors import from_own_page
    from srcore.sessions import ANY_SESSION

    views = app.view_functions
    view = views.get(req.endpoint or "")
    independent = view is not None and (
        getattr(view, ANY_SESSION, False) or any(view is views.get(e) for e in _LOGIN_ENDPOINTS)
    )
    if not independent or not from_own_page():
        return False
    token = req.form.get(app.config.get("WTF_CSRF_FIELD_NAME", "csrf_token"))
    key = app.config.get("WTF_CSRF_SECRET_KEY") or app.secret_key
    if not token or not key:
        return False
    try:
        signed = URLSafeTimedSerializer(key, salt="wtf-csrf-token")
        signed.loads(token, max_age=app.config.get("WTF_CSRF_TIME_LIMIT"))
    except BadData:
        return False
    return True


def init_app(app: Flask) -> None:
    """Register srcore's before-request and after-request functions on *app*."""
    from flask_wtf.csrf import CSRFError, CSRFProtect

    from srcore.hygiene import REFERER_CHECKS, check_form_origin, check_form_referer, check_request
    from srcore.routing import API_PREFIX

    st: SrcoreState = app.extensions["srcore"]
    csrf: CSRFProtect = app.extensions["csrf"]
    unsafe = frozenset(app.config.get("WTF_CSRF_METHODS", ("POST", "PUT", "PATCH", "DELETE")))
    # The API authenticates with bearer tokens and meta's pushes under /_srcore/ are signed
    # JWS bodies: neither is a form a browser could be tricked into submitting.
    exempt = (API_PREFIX, "/_srcore/")
    origin = str(st.section["origin"])
    steps = before_steps(app)
    more_after = after_steps(app)
    config = app.config
    extensions = app.extensions
    clock = time.perf_counter
    # Per URL rule: whether a URL variable of it is secret-named (its value is redacted
    # from the logged path). Filled as rules are first served; a rule never changes.
    secret_rules: dict[str, bool] = {}
    # The steps the sibling modules leave in app.extensions, read at the first request
    # (they are set up after this function runs); metrics is read every time, as before.
    found: list[tuple[AfterStep | None, AfterStep | None]] = []

    def before() -> ResponseReturnValue | None:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        req.environ[_STARTED_KEY] = clock()
        check_request(req)
        if req.method in unsafe and config["WTF_CSRF_ENABLED"] and not req.path.startswith(exempt):
            # Views a service exempts with csrf.exempt (an OAuth token endpoint) are skipped.
            try:
                csrf.protect(apply_exemptions=True)
            except CSRFError as exc:
                if exc.description in REFERER_CHECKS:  # the token is good, its Referer not
                    check_form_referer(req, origin)
                    g.csrf_valid = True
                elif not _token_of_an_earlier_session(app, req):
                    raise
            if g.get("csrf_valid"):  # and only a form with a valid token is asked its Origin
                check_form_origin(req, origin)
        for step in steps:
            answer = step(req)
            if answer is not None:
                return answer
        return None

    def after(response: Response) -> Response:
        req: Request = request._get_current_object()  # type: ignore[attr-defined]
        environ = req.environ
        if not found:
            found.append((extensions.get(HEADERS_STEP), extensions.get(CORS_STEP)))
        headers_step, cors_step = found[0]
        headers = response.headers
        present = {name.lower() for name, _ in headers}
        added: list[tuple[str, str]] = []
        if headers_step is not None:
            headers_step(req, response, present, added)
        if cors_step is not None:
            cors_step(req, response, present, added)
        for step in more_after:
            step(req, response, present, added)
        rid = _request_id(environ)
        if "x-request-id" in present:
            headers["X-Request-Id"] = rid
        else:
            added.append(("X-Request-Id", rid))
        for name, value in added:
            headers.add(name, value)

        metrics = extensions.get(_METRICS)
        logging_on = access_log.isEnabledFor(logging.INFO)
        elapsed = 0.0
        if metrics is not None or logging_on:
            started = environ.get(_STARTED_KEY)
            elapsed = clock() - started if isinstance(started, float) else 0.0
        if metrics is not None:
            metrics.observe(req, response, elapsed)
        # Tokens in paths and codes in queries never reach a log line, ours or the
        # server's (srcore.gunicorn_logging reads the target left in the environ); nor
        # do line breaks or terminal escapes, decoded from the path's %0d%0a or %1b.
        path = req.path
        args: Mapping[str, Any] | None = req.view_args
        if args is None:
            args = _unrouted_args(app, path)
        elif args:
            rule = req.url_rule
            if rule is not None:
                secret = secret_rules.get(rule.rule)
                if secret is None:
                    secret = secret_rules[rule.rule] = any(map(is_secret_name, rule.arguments))
                if not secret:
                    args = None
        query = req.query_string
        if args or query:
            path = redact_target(path, query.decode("latin-1"), args)
        target = environ[ENVIRON_KEY] = log_safe(path)
        if logging_on:
            access_log.info(
                '%s "%s %s" %d %.1fms rid=%s',
                st.service_id,
                log_safe(str(environ.get("REQUEST_METHOD", req.method))),
                target,
                response.status_code,
                elapsed * 1000,
                rid,
            )
        return response

    app.before_request(before)
    app.after_request(after)
