"""What every request must be before a view sees it, and every response after.

* HEAD is GET: :class:`SrcoreRequest` reports a HEAD request's method as ``GET``, so a
  view's ``if request.method == "GET"`` branch serves it (Werkzeug still drops the body).
  A HEAD must never run the branch that handles a form.
* The body is read strictly: a body shorter than its ``Content-Length``, or a chunked
  body the server cannot parse, is a 400 when the view reads it; never a truncated
  value stored, never a server exception turned into a 500.
* :func:`check_request` refuses, with the standard error body, request targets and
  headers past srcore's limits (414, 431) and control characters in the path, the query
  string or a form (400); NUL cannot even be stored in PostgreSQL text.
* :class:`SrcoreResponse` encodes text that cannot be UTF-8 (a lone surrogate echoed
  from input) with a replacement character instead of failing the response.

The limits sit below the WSGI server's own (see :mod:`srcore.serving`), so oversized
requests get srcore's error body, JSON under ``/api/``, rather than the server's page.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import IO, Any

from flask import Request, Response
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import BadRequest, RequestHeaderFieldsTooLarge, RequestURITooLarge
from werkzeug.wsgi import LimitedStream, get_content_length

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_HEADER_COUNT",
    "MAX_TARGET_LENGTH",
    "SrcoreRequest",
    "SrcoreResponse",
    "check_request",
]

#: The longest request target (path and query string) srcore accepts, in characters.
MAX_TARGET_LENGTH = 4096
#: The most header fields a request may carry.
MAX_HEADER_COUNT = 100
#: The longest header field (name and value) a request may carry, in bytes.
MAX_HEADER_BYTES = 8190

# Control characters have no place in a path, a query parameter's name or a form field's
# name; values may hold tab and line breaks (a textarea), nothing else below 0x20.
_CONTROL = re.compile("[\x00-\x1f\x7f]")
_CONTROL_IN_VALUE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_FORM_MIMETYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


class _GuardedInput:
    """The WSGI input stream, with the server's parse errors turned into a 400.

    gunicorn raises its own exceptions (an invalid chunk size, a missing terminator) from
    ``wsgi.input.read``; a view reading the form would turn them into a 500.
    """

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._stream, name)(*args)
        except BadRequest:
            raise
        except Exception as exc:  # whatever the server raises, the body is unreadable
            raise BadRequest("The request body is malformed or incomplete.") from exc

    def read(self, size: int | None = -1) -> bytes:
        data: bytes = self._call("read", -1 if size is None else size)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data: bytes = self._call("readline", -1 if size is None else size)
        return data

    def __iter__(self) -> Any:
        return iter(self.readline, b"")


class _StrictLength(LimitedStream):
    """Exactly ``Content-Length`` bytes: fewer is a 400, not a shorter value."""

    def on_disconnect(self, error: Exception | None = None) -> None:
        raise BadRequest("The request body is shorter than its Content-Length.")


def _guard_input(environ: dict[str, Any]) -> None:
    stream = environ.get("wsgi.input")
    if stream is None or isinstance(stream, _GuardedInput | _StrictLength):
        return
    guarded = _GuardedInput(stream)
    try:
        length = get_content_length(environ)
    except Exception:  # a malformed Content-Length reads as none, as Werkzeug does
        length = None
    if length is None:
        environ["wsgi.input"] = guarded
        return
    environ["wsgi.input"] = _StrictLength(guarded, length)  # type: ignore[arg-type]
    # The stream now ends at Content-Length by itself, whatever the server does.
    environ["wsgi.input_terminated"] = True


class SrcoreRequest(Request):
    """Flask's request, with HEAD seen as GET and a strictly read body."""

    def __init__(
        self, environ: dict[str, Any], populate_request: bool = True, shallow: bool = False
    ) -> None:
        if not shallow:
            _guard_input(environ)
        super().__init__(environ, populate_request, shallow)
        # Routing and the response still see HEAD (from the environ): the body is dropped.
        if self.method == "HEAD":
            self.method = "GET"


class SrcoreResponse(Response):
    """Flask's response; text is encoded so that a lone surrogate cannot fail it."""

    def set_data(self, value: bytes | str) -> None:
        if isinstance(value, str):
            value = value.encode("utf-8", "replace")
        super().set_data(value)


def _has_control(pairs: Iterable[tuple[str, str]]) -> bool:
    return any(
        _CONTROL.search(key) or _CONTROL_IN_VALUE.search(value)
        for key, value in pairs
        if isinstance(value, str)
    )


def _check_limits(request: Request) -> None:
    environ = request.environ
    target = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    if not isinstance(target, str):
        target = request.full_path
    if len(target) > MAX_TARGET_LENGTH:
        raise RequestURITooLarge(
            f"The address is longer than {MAX_TARGET_LENGTH} characters; "
            "send long input in the request body."
        )
    count = 0
    for name, value in request.headers.items():
        count += 1
        if len(name) + len(value) + 2 > MAX_HEADER_BYTES:
            raise RequestHeaderFieldsTooLarge(
                f"The {name} header is longer than {MAX_HEADER_BYTES} bytes."
            )
    if count > MAX_HEADER_COUNT:
        raise RequestHeaderFieldsTooLarge(
            f"The request carries more than {MAX_HEADER_COUNT} header fields."
        )


def check_request(request: Request) -> None:
    """Raise a 4xx for a request no view should see (limits, control characters)."""
    _check_limits(request)
    if _CONTROL.search(request.path):
        raise BadRequest("The address contains control characters.")
    args: MultiDict[str, str] = request.args
    if _has_control(args.items(multi=True)):
        raise BadRequest("The query string contains control characters.")
    if request.method not in {"GET", "HEAD", "OPTIONS"} and request.mimetype in _FORM_MIMETYPES:
        form: MultiDict[str, str] = request.form
        if _has_control(form.items(multi=True)):
            raise BadRequest("The form contains control characters.")
        if any(_CONTROL.search(name) for name in request.files):
            raise BadRequest("The form contains control characters.")
