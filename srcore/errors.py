"""Error responses: HTML pages for people, the standard JSON error body for the API.

Every error the app answers with goes through here, so the API never returns an HTML page
and a browser never sees a traceback.
"""

from __future__ import annotations

import logging
import re
import sqlite3
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple
from urllib.parse import unquote

from flask import Flask, Response, g, render_template, request
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import ObjectDeletedError, StaleDataError
from werkzeug.exceptions import HTTPException, InternalServerError

from srcore.logsetup import log_safe
from srcore.routing import API_PREFIX

__all__ = [
    "JSON_PREFIXES",
    "ErrorForm",
    "database_unreachable",
    "declare_error_form",
    "declared_error_form",
    "error_response",
    "form_again",
    "from_own_page",
    "init_app",
    "json_path",
    "wants_json",
]

log = logging.getLogger("srcore")

_MESSAGES = {
    400: "The request could not be understood.",
    401: "You need to log in to see this.",
    403: "You are not allowed to do this.",
    404: "There is nothing here.",
    405: "This address does not accept that kind of request.",
    413: "What you sent is too large.",
    429: "Too many requests. Wait a moment and try again.",
    500: "Something went wrong on our side. It has been logged.",
    503: "A service this page depends on is unavailable. Try again shortly.",
}


#: Paths whose errors are JSON whoever asks: the API, and ``/_srcore/``, which only meta
#: calls (never a browser).
JSON_PREFIXES = (API_PREFIX, "/_srcore/")


def json_path(path: str) -> bool:
    """Whether an error at *path* is JSON, whoever asks; one rule for the app's answers
    and for those srcore's gunicorn workers send for requests gunicorn itself refuses."""
    return path.startswith(JSON_PREFIXES)


#: The error of a status and a reason in a form of a service's own: a response built in an
#: app context only (see :func:`declare_error_form`).
ErrorForm = Callable[[int, str], Response]
#: Where an app keeps its declared error forms (exact path -> form).
_ERROR_FORMS = "srcore.error_forms"


def declare_error_form(app: Flask, paths: Iterable[str], form: ErrorForm) -> None:
    """Declare that every error at *paths* (exact, as routed) is *form*'s, including the
    requests the HTTP server refuses before the app sees them (a request line or headers
    past its limits, bytes it cannot parse): srcore's gunicorn workers
    (:mod:`srcore.gunicorn_worker`) then send ``form(status, reason)``, built in an app
    context, with gunicorn's status, instead of its HTML page or srcore's JSON. The app
    answers its own errors at those paths in the same form (its error handlers'
    business); this rule is for the answers no handler of the app sees. A program's
    endpoint whose protocol has an error body of its own (OAuth's ``error``) declares it."""
    forms: dict[str, ErrorForm] = app.extensions.setdefault(_ERROR_FORMS, {})
    for path in paths:
        forms[path] = form


def declared_error_form(app: Any, path: str) -> ErrorForm | None:
    """The form *app* declared for errors at *path* (raw, as the request line has it),
    or ``None``."""
    extensions = getattr(app, "extensions", None)
    forms = extensions.get(_ERROR_FORMS) if isinstance(extensions, dict) else None
    if not forms:
        return None
    found: ErrorForm | None = forms.get(unquote(path, errors="replace"))
    return found


def wants_json() -> bool:
    """Whether the current request should get JSON: API routes, what meta sends to
    ``/_srcore/`` (never a browser), or clients asking for it."""
    if json_path(request.path):
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def error_response(
    code: int,
    reason: str | None = None,
    *,
    title: str | None = None,
    headers: Any = None,
    field: str | None = None,
) -> Response:
    """Build the error response for *code*, JSON or HTML as the request calls for; the
    JSON error is about the input *field*, if one is named."""
    from werkzeug.http import HTTP_STATUS_CODES

    from srcore.validation import FieldError, error_body

    message = reason or _MESSAGES.get(code) or HTTP_STATUS_CODES.get(code, "Error")
    if wants_json():
        from flask import jsonify

        response = jsonify(error_body([FieldError(message, field)]))
    else:
        try:
            body = render_template(
                "error.html",
                code=code,
                title=title or HTTP_STATUS_CODES.get(code, "Error"),
                message=message,
            )
        except Exception:  # the error page itself failed: still answer, plainly
            log.exception("rendering the error page failed")
            body = f"{code} {message}"
        response = Response(body, content_type="text/html; charset=utf-8")
    response.status_code = code
    if headers:
        response.headers.extend(headers)
    return response


#: Fields a form is not sent back with: what is secret is typed again, not put in a page.
_NOT_REPEATED = ("password", "secret", "token", "code", "otp")
#: Fields named with it are the page's own tokens (``csrf_token``, a sent-once token),
#: not typed by anyone: bound to the earlier session, they are neither repeated nor asked
#: for again.
_MACHINE_WORD = "token"
#: The field of a form's one-time token (:data:`srcore.once.ONCE_FIELD`), which the page
#: shown again replaces with one of the new session.
_ONCE_FIELD = "form_once"
#: A value longer than this, or on more than one line, is shown again in a text area.
_SHORT = 80


def from_own_page() -> bool:
    """Whether the request was sent by one of the service's own pages (its ``Origin`` is the
    service's; a browser that sends none, or ``null``, says ``Sec-Fetch-Site: same-origin``).
    Only such a form is sent back: another site's form, answered with one holding a valid
    token, would need only a click to be sent as the person.

    ``Origin: null`` is what a browser keeping its Referers private sends on every form
    (the Fetch standard's no-referrer policy); a sandboxed frame of another site sends it
    too, but its ``Sec-Fetch-Site`` is then ``cross-site``, which no page can change."""
    from urllib.parse import urlsplit

    from flask import current_app

    own = urlsplit(str(current_app.extensions["srcore"].section["origin"]))
    sent = request.headers.get("Origin")
    if sent is not None and sent.strip() != "null":
        return sent.lower() == f"{own.scheme}://{own.netloc}".lower()
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


def _page_it_came_from() -> str:
    """Where to open again the page a form was sent from: its ``Referer`` when that is a
    page of this service (browsers send the whole address to the same origin), else the
    front page. Only a path of this service, never another site's address."""
    from urllib.parse import urlsplit

    from flask import current_app

    own = urlsplit(str(current_app.extensions["srcore"].section["origin"]))
    came = urlsplit(request.headers.get("Referer", ""))
    path = came.path + (f"?{came.query}" if came.query else "")
    same = (came.scheme, came.netloc.lower()) == (own.scheme, own.netloc.lower())
    if same and path.startswith("/") and not path.startswith(("//", "/\\")) and len(path) <= 2048:
        return path
    return request.script_root + "/"


def form_again(code: int, reason: str, *, title: str, send_again: bool = True) -> Response | None:
    """The page of a form sent from the service's own page and not taken for want of a
    session (it expired, or the person logged out or in as someone else in another tab):
    what they entered, again, under *reason*, with this session's security token, so a
    long comment is not lost to an error page. Fields it does not repeat (passwords,
    codes, files) are there empty, to be entered again.

    A form with nothing to repeat (a button: log out, revoke, delete; or only a code) gets
    the same page without a form, saying who is logged in now and linking to the page it
    came from, to be opened again: a button sent again in one click would act as whoever
    is logged in now. None for what is not from the service's own page (an API call, a
    request from elsewhere), which gets the plain error. Without *send_again* (what the
    form was about is gone) the fields are shown to copy, with no button to send them."""
    if wants_json() or request.method in ("GET", "HEAD") or not from_own_page():
        return None
    fields: list[tuple[str, str, bool]] = []
    dropped: list[str] = []
    for name, values in request.form.lists():
        if _MACHINE_WORD in name.lower():
            continue  # the earlier session's tokens (CSRF, sent-once): this page has its own
        if any(word in name.lower() for word in _NOT_REPEATED):
            dropped.append(name)
            continue
        fields.extend((name, value, "\n" in value or len(value) > _SHORT) for value in values)
    files = [name for name in request.files if name not in dropped]
    if all(name == _ONCE_FIELD for name, _, _ in fields):
        fields = []  # only the form's one-time token (see srcore.once): a button
    query = request.query_string.decode("latin-1")
    body = render_template(
        "form_again.html",
        code=code,
        title=title,
        message=reason,
        fields=fields,
        # Typed again in the form: (name, input type), files as files.
        retyped=[(name, "password" if "password" in name.lower() else "text") for name in dropped]
        + [(name, "file") for name in files],
        dropped=dropped + files,
        action=request.script_root + request.path + (f"?{query}" if query else ""),
        reopen=_page_it_came_from(),
        send_again=send_again,
    )
    # Never kept by the browser: it holds what the person wrote and a security token.
    headers = {"Cache-Control": "no-store"}
    return Response(body, code, headers, content_type="text/html; charset=utf-8")


def _http_error(exc: HTTPException) -> Response:
    code = exc.code or 500
    description = exc.description if exc.description != type(exc).description else None
    if code == 400 and type(exc).__name__ == "CSRFError":
        again = form_again(
            400,
            "This was not sent: the page it came from was opened in an earlier session, "
            "which has ended or changed since (it expired, or you logged out or in again, "
            "maybe in another tab).",
            title="Not sent: your session changed",
        )
        if again is not None:
            return again
        description = (
            "This form has expired or is missing its security token. "
            "Go back, reload the page and try again."
        )
    if code in (404, 410):
        # A form sent about something deleted (in another tab, by someone else) since its
        # page was opened: what the person wrote is given back to copy, not dropped.
        gone = form_again(
            code,
            "This was not saved: what it was about is gone (deleted, maybe in another tab "
            "or by someone else, or no longer yours to see).",
            title="Not saved: it is gone",
            send_again=False,
        )
        if gone is not None:
            return gone
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    return error_response(code, description, headers=headers)


def _server_error(exc: InternalServerError) -> Response:
    original = getattr(exc, "original_exception", None)
    if original is not None:
        where = log_safe(f"{request.method} {request.path}")
        log.error("unhandled error on %s", where, exc_info=original)
    return error_response(500)


#: Seconds a client is asked to wait when the database cannot serve the request.
DATABASE_RETRY_AFTER = 5


def _database_unavailable(exc: Exception) -> Response:
    """The database failed for reasons of its own, not of the request's: a restart or a
    failover cut the connection, it cannot be reached, the pool is exhausted, a lock or
    serialization timed out. A 503 asking to try again says so to people and clients (a 500
    says the service is broken). SQLAlchemy has already invalidated the pool on a cut
    connection, so the next request reconnects; what the request had not committed is
    rolled back."""
    if _statement_stopped(exc):
        return _statement_timed_out(exc)
    mismatch = _schema_mismatch(exc)
    if mismatch is not None:
        return _not_migrated(exc, mismatch)
    short = _short_of(exc)
    if short is not None:
        return _database_short(exc, short)
    busy = _busy(exc)
    if busy is not None:
        return _database_busy(exc, busy)
    log.error(
        "database unavailable on %s: %s",
        log_safe(f"{request.method} {request.path}"),
        type(getattr(exc, "orig", None) or exc).__name__,
        exc_info=exc,
    )
    _roll_back_sessions()
    g.srcore_database_unreachable = True
    reason = "The database is unavailable right now. Try again in a few seconds."
    return error_response(503, reason, headers=[("Retry-After", str(DATABASE_RETRY_AFTER))])


def database_unreachable() -> bool:
    """Whether this request is answered with "the database is unavailable": the page's
    layout then shows nobody logged in rather than ask the database again, which would
    make the person wait for a second connection attempt to fail."""
    return bool(g.get("srcore_database_unreachable"))


#: SQLSTATEs of a database too busy for the request now: a lock it could not get
#: (``lock_not_available``), a deadlock or a serialization failure it broke. A server
#: short of a resource (class ``53``) is told apart: see :data:`_PG_SHORT`.
_PG_BUSY = frozenset({"55P03", "40001", "40P01"})
#: What PostgreSQL says when it refuses a new connection for want of slots (the server's
#: ``max_connections``, a role's or a database's ``CONNECTION LIMIT``). libpq gives no
#: SQLSTATE for a connection refused at start-up, only this text; a server whose
#: ``lc_messages`` is not English says it otherwise, and its refusal is then reported as
#: the database being unavailable, still a 503 with Retry-After.
_PG_NO_SLOTS = ("too many connections", "remaining connection slots are reserved")
#: SQLite's primary result codes for a database another connection holds locked past
#: srcore's busy timeout: ``SQLITE_BUSY``, ``SQLITE_LOCKED``.
_SQLITE_BUSY = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def _busy(exc: Exception) -> str | None:
    """Why the database is too busy for this request now, for operators; None when it
    failed otherwise (cut, unreachable). Busy is a matter of load: other requests hold
    every connection, slot or lock it needed."""
    if isinstance(exc, PoolTimeout):
        return "every connection of this process's pool stayed in use past pool_timeout"
    original = getattr(exc, "orig", None) or exc
    sqlstate = getattr(original, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate in _PG_BUSY:
        return f"PostgreSQL refused the statement (SQLSTATE {sqlstate})"
    sqlite_code = getattr(original, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int) and (sqlite_code & 0xFF) in _SQLITE_BUSY:
        return "SQLite stayed locked by another writer past its busy timeout"
    if sqlstate is None and any(words in str(original) for words in _PG_NO_SLOTS):
        return (
            "PostgreSQL refused a new connection: no connection slots left (its "
            "max_connections, or the role's or database's CONNECTION LIMIT); see the "
            "connection count in the operators guide"
        )
    return None


class _Shortage(NamedTuple):
    """A resource the database ran out of (or its refusal of every write), for the log
    line ``database <word> on <request>: <cause> (...). <advice>``, and what the client is
    told."""

    word: str
    cause: str
    advice: str
    reason: str
    level: int = logging.ERROR


_NO_ROOM = "The database has no room left to save this. Try again later."
_SHORT_REASON = "The database is short of resources right now. Try again in a few seconds."
_BUSY_REASON = "The database is busy right now. Try again in a few seconds."

#: PostgreSQL's class ``53`` (insufficient resources), by SQLSTATE. None of them is a
#: matter of the request's input, and only a want of connection slots one of load: the
#: server's disk, memory or configuration is at its limit, and the log says which.
_PG_SHORT = {
    "53100": _Shortage(
        "disk full",
        "the database server's disk is full",
        "Make room on the disk of PostgreSQL's data directory (or of the tablespace its "
        "message names), or grow it: writes succeed again as soon as there is room, with "
        "no restart of the service",
        _NO_ROOM,
    ),
    "53200": _Shortage(
        "out of memory",
        "the database server is out of memory",
        "Look at the memory of PostgreSQL's machine and at work_mem; for 'out of shared "
        "memory', raise max_locks_per_transaction",
        _SHORT_REASON,
    ),
    "53300": _Shortage(
        "busy",
        "no connection slots left on the database server",
        "Raise its max_connections, or the role's or database's CONNECTION LIMIT, or run "
        "fewer workers; see the connection count in the operators guide",
        _BUSY_REASON,
        logging.WARNING,
    ),
    "53400": _Shortage(
        "at a configured limit",
        "a limit set in the database server's configuration was reached",
        "Raise the setting PostgreSQL's message names, or ask less of it at once",
        _SHORT_REASON,
    ),
}
_PG_SHORT_OTHER = _Shortage(
    "short of resources",
    "the database server lacks a resource",
    "PostgreSQL's message says which",
    _SHORT_REASON,
)
_SQLITE_FULL = _Shortage(
    "disk full",
    "the disk of the SQLite database is full",
    "Make room on the file system of the database file: writes succeed again as soon as "
    "there is room, with no restart",
    _NO_ROOM,
)


_READ_ONLY_REASON = "The database takes no changes right now; nothing was saved. Try again later."
#: A database that refuses every write: PostgreSQL's ``read_only_sql_transaction``.
_PG_READ_ONLY = _Shortage(
    "read-only",
    "the database refuses writes (a standby server, or default_transaction_read_only on "
    "for the database, the role or the server)",
    "Point database-url at the primary, or turn default_transaction_read_only off: writes "
    "succeed again at once, with no restart",
    _READ_ONLY_REASON,
)
_SQLITE_READ_ONLY = _Shortage(
    "read-only",
    "this process may not write the SQLite database file or its directory",
    "Give the user the service runs as write access to the file, its -wal and -shm files "
    "and their directory (srcore config check names them)",
    _READ_ONLY_REASON,
)


def _short_of(exc: Exception) -> tuple[_Shortage, str] | None:
    """What the database ran out of or refuses, and its own words for it; None when it
    failed otherwise. PostgreSQL's class ``53`` and read-only transactions, SQLite's
    ``SQLITE_FULL`` and ``SQLITE_READONLY``."""
    original = getattr(exc, "orig", None) or exc
    sqlstate = getattr(original, "sqlstate", None)
    if isinstance(sqlstate, str) and (sqlstate.startswith("53") or sqlstate == "25006"):
        diag = getattr(original, "diag", None)
        said = getattr(diag, "message_primary", None) or str(original)
        said = f"PostgreSQL, SQLSTATE {sqlstate}: {' '.join(str(said).split())}"
        if sqlstate == "25006":
            return _PG_READ_ONLY, said
        return _PG_SHORT.get(sqlstate, _PG_SHORT_OTHER), said
    sqlite_code = getattr(original, "sqlite_errorcode", None)
    if isinstance(sqlite_code, int) and (sqlite_code & 0xFF) == sqlite3.SQLITE_FULL:
        return _SQLITE_FULL, f"SQLite: {' '.join(str(original).split())}"
    if isinstance(sqlite_code, int) and (sqlite_code & 0xFF) == sqlite3.SQLITE_READONLY:
        return _SQLITE_READ_ONLY, f"SQLite: {' '.join(str(original).split())}"
    return None


def _database_short(exc: Exception, short: tuple[_Shortage, str]) -> Response:
    """The database is out of disk, memory or one of its configured limits. The server
    refused the statement, so the request's transaction is rolled back whole: none of
    it is written. The client gets a 503 asking to come back; the log one line, without a
    traceback (a full disk fails every write, and its cause is no line of code), saying
    what ran out and what to do."""
    shortage, said = short
    log.log(
        shortage.level,
        "database %s on %s: %s (%s); the request's transaction was rolled back. %s",
        shortage.word,
        log_safe(f"{request.method} {request.path}"),
        shortage.cause,
        log_safe(said),
        shortage.advice,
    )
    _roll_back_sessions()
    return error_response(
        503, shortage.reason, headers=[("Retry-After", str(DATABASE_RETRY_AFTER))]
    )


#: SQLSTATEs of a statement naming a table or a column the database does not have
#: (``undefined_table``, ``undefined_column``): its tables and the code disagree.
_PG_SCHEMA = frozenset({"42P01", "42703"})
#: SQLite's words for the same.
_SQLITE_SCHEMA = re.compile(r"no such (table|column): |table \S+ has no column named ")


def _schema_mismatch(exc: Exception) -> str | None:
    """The database's words when the request's statement names a table or column it does
    not have, else None. That is a database not migrated yet (``srcore serve`` serves one
    anyway, a database restarting must not stop a deploy), or, while an upgrade migrates
    before the services restart, old code meeting what a release removed or renamed:
    both pass once migrations and code agree, so it is no more a bug than an outage."""
    original = getattr(exc, "orig", None) or exc
    sqlstate = getattr(original, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate in _PG_SCHEMA:
        first = (str(original).splitlines() or [""])[0]
        return f"PostgreSQL, SQLSTATE {sqlstate}: {first}"
    if isinstance(original, sqlite3.Error) and _SQLITE_SCHEMA.match(str(original)):
        return f"SQLite: {original}"
    return None


def _not_migrated(exc: Exception, said: str) -> Response:
    """The database's tables do not match the code: a 503 with Retry-After, as for an
    outage, and one log line naming the command that makes them match."""
    from flask import current_app

    service = current_app.extensions["srcore"].service_id
    log.error(
        "database not migrated on %s: its tables do not match the code of %s (%s); run "
        "`srcore migrate %s upgrade` (or `srcore migrate --all upgrade`), and restart the "
        "service if it runs code older than the database",
        log_safe(f"{request.method} {request.path}"),
        service,
        log_safe(" ".join(said.split())),
        service,
    )
    _roll_back_sessions()
    reason = "The database is unavailable right now. Try again in a few seconds."
    return error_response(503, reason, headers=[("Retry-After", str(DATABASE_RETRY_AFTER))])


def _database_programming(exc: Exception) -> Response:
    """A statement the database refused as written: one naming a table or column it does
    not have is a schema not migrated (a 503); any other is a bug (a 500)."""
    mismatch = _schema_mismatch(exc)
    if mismatch is not None:
        return _not_migrated(exc, mismatch)
    return _server_error(InternalServerError(original_exception=exc))


def _database_refused(exc: Exception) -> Response:
    """An error the driver files as internal: PostgreSQL's refusal of a write to a
    read-only database is one (a 503, as for a full disk); any other is a bug (a 500)."""
    short = _short_of(exc)
    if short is not None:
        return _database_short(exc, short)
    return _server_error(InternalServerError(original_exception=exc))


def _roll_back_sessions() -> None:
    """Roll back the request's session (srcore.db keeps it on g) after a failed flush or
    statement, or the error page's layout could not read the logged-in user through it."""
    for value in list(vars(g).values()):
        if isinstance(value, Session):
            value.rollback()


def _database_busy(exc: Exception, why: str) -> Response:
    """The database is up but too busy for this request: every connection, slot or lock
    it needed was held by others. The client is told so and asked to come back, as for an
    outage; the log says which limit was hit, in one line without a traceback, since
    under load there are many such lines and the limit, not the code, is the problem."""
    log.warning(
        "database busy on %s: %s (%s)",
        log_safe(f"{request.method} {request.path}"),
        why,
        log_safe(type(getattr(exc, "orig", None) or exc).__name__),
    )
    _roll_back_sessions()
    return error_response(503, _BUSY_REASON, headers=[("Retry-After", str(DATABASE_RETRY_AFTER))])


def _changed_meanwhile(exc: Exception) -> Response:
    """A row the request read was deleted by another request before this one wrote it, or
    read its expired attributes: SQLAlchemy's StaleDataError at the flush (an UPDATE or
    DELETE matched no row), ObjectDeletedError on the read. That is a conflict with the
    other request, a 409 asking to reload, not a broken service; a view that can say more
    (a 404 for what is gone) locks the row before it writes."""
    log.warning(
        "conflict on %s: %s", log_safe(f"{request.method} {request.path}"), type(exc).__name__
    )
    _roll_back_sessions()
    reason = "This was changed or deleted by someone else meanwhile. Reload it and try again."
    return error_response(409, reason)


#: SQLSTATEs of a write that another request's committed write made impossible: a unique
#: value it took (``unique_violation``), a row it deleted (``foreign_key_violation``).
_PG_CONFLICTS = frozenset({"23505", "23503"})
#: SQLite's extended result codes for the same.
_SQLITE_CONFLICTS = frozenset(
    {
        sqlite3.SQLITE_CONSTRAINT_UNIQUE,
        sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY,
        sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY,
    }
)


def _integrity_error(exc: Exception) -> Response:
    """A write the database refused. A view checks that a name is free or a parent row is
    there before it writes, so a unique or foreign key violation it did not catch is
    another request having taken the name or deleted the row in between: a conflict (the
    409 of a row deleted meanwhile), not a broken service. Any other constraint failing
    (a NOT NULL, a CHECK) is a bug, and a 500."""
    original = getattr(exc, "orig", None) or exc
    if (
        getattr(original, "sqlstate", None) in _PG_CONFLICTS
        or getattr(original, "sqlite_errorcode", None) in _SQLITE_CONFLICTS
    ):
        return _changed_meanwhile(exc)
    return _server_error(InternalServerError(original_exception=exc))


#: SQLSTATE ``query_canceled``: a statement timeout, or a cancel request.
_PG_QUERY_CANCELED = "57014"


def _statement_stopped(exc: Exception) -> bool:
    """Whether the database stopped a statement for running too long (srcore.db's
    statement timeout), rather than failed. PostgreSQL reports the timeout as
    ``query_canceled``, as it does a cancel an operator sent with ``pg_cancel_backend``;
    SQLite reports the stop its progress handler asked for as ``SQLITE_INTERRUPT``."""
    original = getattr(exc, "orig", None) or exc
    if getattr(original, "sqlstate", None) == _PG_QUERY_CANCELED:
        return True
    return getattr(original, "sqlite_errorcode", None) == sqlite3.SQLITE_INTERRUPT


def _statement_timed_out(exc: Exception) -> Response:
    """A statement of the request ran past ``database-statement-timeout`` and the database
    stopped it: the database is fine, this request asked too much of it (or it was very
    busy). Not reported as an outage, and with no Retry-After: the same request would most
    likely take as long again. A 503 still, since the service, not the client's input as
    such, could not finish it. What the request had not committed is rolled back when its
    session is closed, as after any failed request.

    The log names the route and the statement without its parameters, which may hold
    secrets or the very input that made it slow."""
    statement = " ".join(str(getattr(exc, "statement", None) or "").split())
    if len(statement) > _LOGGED_STATEMENT:
        statement = statement[:_LOGGED_STATEMENT] + "..."
    log.warning(
        "database statement timeout on %s (%s): the database stopped a statement that ran "
        "past database-statement-timeout; the request was rolled back. Statement: %s",
        log_safe(f"{request.method} {request.path}"),
        log_safe(str(request.endpoint)),
        log_safe(statement) or "(unknown)",
    )
    reason = (
        "This request kept the database busy too long and was stopped. "
        "Try again later, or ask for less at once."
    )
    return error_response(503, reason)


#: How much of a stopped statement's SQL the log shows.
_LOGGED_STATEMENT = 300


def _validation_failed(exc: Exception) -> Response:
    """Bad input a view let raise: its form page again, the JSON error body, or (a bad
    query string of a page) an error page naming the fields."""
    from srcore.validation import ValidationFailed

    assert isinstance(exc, ValidationFailed)
    valid = exc.validation
    if valid.page is not None:
        template, build = valid.page
        body = render_template(template, **{**build(), "valid": valid})
        return Response(body, status=400, content_type="text/html; charset=utf-8")
    if wants_json():
        return exc.response()
    reasons = "; ".join(
        f"{err.field}: {err.reason}" if err.field else err.reason for err in valid.errors
    )
    what = "address" if request.method in ("GET", "HEAD") else "input"
    return error_response(exc.status, f"Invalid {what}: {reasons}")


def _search_error(exc: Exception) -> Response:
    """A bad search query that a view let through: a 400 naming the bad term."""
    from srcore.search import SearchError

    assert isinstance(exc, SearchError)
    if wants_json():
        from srcore.validation import Validation, ValidationFailed

        valid = Validation(data={})
        valid.error(exc.reason, "search")
        return ValidationFailed(valid).response()
    return error_response(400, exc.reason)


def init_app(app: Flask) -> None:
    """Register srcore's error handlers on *app*."""
    from srcore.search import SearchError
    from srcore.validation import ValidationFailed

    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(InternalServerError, _server_error)
    app.register_error_handler(ValidationFailed, _validation_failed)
    app.register_error_handler(SearchError, _search_error)
    app.register_error_handler(OperationalError, _database_unavailable)
    app.register_error_handler(PoolTimeout, _database_unavailable)
    app.register_error_handler(StaleDataError, _changed_meanwhile)
    app.register_error_handler(ObjectDeletedError, _changed_meanwhile)
    app.register_error_handler(IntegrityError, _integrity_error)
    app.register_error_handler(InternalError, _database_refused)
    app.register_error_handler(ProgrammingError, _database_programming)
