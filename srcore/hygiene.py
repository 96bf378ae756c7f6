"""What every request must be before a view sees it, and every response after.

* HEAD is GET: :class:`SrcoreRequest` reports a HEAD request's method as ``GET``, so a
  view's ``if request.method == "GET"`` branch serves it (Werkzeug still drops the body).
  A HEAD must never run the branch that handles a form.
* The body is read strictly: a body shorter than its ``Content-Length``, or a chunked
  body the server cannot parse, is a 400 when the view reads it; never a truncated
  value stored, never a server exception turned into a 500.
* Forms and query strings are UTF-8 text: a value, name or file name that is not (an
  invalid or lone-surrogate byte sequence, percent-encoded or not), or a multipart body
  that cannot be parsed, is a 400. Werkzeug would keep such bytes percent-encoded, put
  U+FFFD in their place or read the whole form as empty: a value other than the one sent
  stored, or a misleading "required" error.
* :func:`check_request` refuses, with the standard error body, request targets and
  headers past srcore's limits (414, 431) and control characters in the path, the query
  string or a form (400); NUL cannot even be stored in PostgreSQL text.
* :class:`SrcoreResponse` encodes text that cannot be UTF-8 (a lone surrogate echoed
  from input) with a replacement character instead of failing the response.
* :func:`check_form_origin` refuses a form another site's page sent, even with a valid
  CSRF token, in every environment; :func:`check_form_referer` takes a form whose
  ``Origin`` is this service's where Flask-WTF's https check wanted a ``Referer``.

The limits sit below the WSGI server's own (see :mod:`srcore.serving`), so oversized
requests get srcore's error body, JSON under ``/api/``, rather than the server's page.
"""

from __future__ import annotations

import codecs
import functools
import re
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote_to_bytes, urlsplit

from flask import Request, Response
from werkzeug.datastructures import Headers, MultiDict
from werkzeug.exceptions import BadRequest, RequestHeaderFieldsTooLarge, RequestURITooLarge
from werkzeug.formparser import FormDataParser, MultiPartParser
from werkzeug.wsgi import LimitedStream, get_content_length

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer

__all__ = [
    "MAX_HEADER_BYTES",
    "MAX_HEADER_COUNT",
    "MAX_TARGET_LENGTH",
    "REFERER_CHECKS",
    "SrcoreRequest",
    "SrcoreResponse",
    "check_form_origin",
    "check_form_referer",
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


_GUARDS = (_GuardedInput, _StrictLength)


def _guard_input(environ: dict[str, Any]) -> None:
    stream = environ.get("wsgi.input")
    # By exact type: an isinstance check against _StrictLength (an io ABC) runs Python
    # code on every request; neither class has subclasses.
    if stream is None or type(stream) in _GUARDS:
        return
    guarded = _GuardedInput(stream)
    if environ.get("CONTENT_LENGTH") is None:  # no body, or a chunked one: no length
        length = None
    else:
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


_NOT_UTF8 = "The form is not UTF-8 text: send every name and value as UTF-8."
_MALFORMED = "The form cannot be read: its body is not well-formed for its content type."


#: The strict codecs form fields are decoded with, by the charset their part declares.
_STRICT_CHARSETS = {"utf-8": "srcore_strict_utf_8", "ascii": "srcore_strict_ascii"}
_STRICT_CHARSETS["us-ascii"] = _STRICT_CHARSETS["ascii"]


def _strict_codec(name: str) -> codecs.CodecInfo | None:
    """A codec search function: ``srcore_strict_<codec>`` decodes as ``<codec>`` strictly,
    whatever error handling its caller asks for."""
    base = {strict: charset for charset, strict in _STRICT_CHARSETS.items()}.get(name)
    if base is None:
        return None
    info = codecs.lookup(base)

    def decode(data: ReadableBuffer, errors: str = "strict", /) -> tuple[str, int]:
        return info.decode(data, "strict")

    return codecs.CodecInfo(info.encode, decode, name=name)


@functools.cache
def _register_strict_codecs() -> None:
    codecs.register(_strict_codec)


class _StrictMultiPartParser(MultiPartParser):
    """Werkzeug's multipart parser, except that a field's value must decode as its part
    declares (UTF-8 unless it names ASCII or Latin-1). Werkzeug decodes it replacing what
    does not decode with U+FFFD; the charset named here is a strict codec instead, so its
    ``UnicodeDecodeError`` reaches :class:`_StrictFormDataParser` (a 400)."""

    def get_part_charset(self, headers: Headers) -> str:
        charset = super().get_part_charset(headers)
        _register_strict_codecs()
        return _STRICT_CHARSETS.get(charset, charset)


class _StrictFormDataParser(FormDataParser):
    """Werkzeug's form parser, loud where it would be silent: a form that is not UTF-8 or
    cannot be parsed is a 400, never an empty form or text other than what was sent."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.silent = False

    def parse(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str] | None = None,
    ) -> tuple[IO[bytes], MultiDict[str, Any], MultiDict[str, Any]]:
        try:
            return super().parse(stream, mimetype, content_length, options)
        except UnicodeDecodeError:
            raise BadRequest(_NOT_UTF8) from None
        except ValueError:  # what Werkzeug's own parsers raise for a malformed body
            raise BadRequest(_MALFORMED) from None

    def _parse_urlencoded(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str],
    ) -> tuple[IO[bytes], MultiDict[str, Any], MultiDict[str, Any]]:
        text = stream.read().decode("utf-8")
        items = parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="strict")
        return stream, self.cls(items), self.cls()

    def _parse_multipart(
        self,
        stream: IO[bytes],
        mimetype: str,
        content_length: int | None,
        options: dict[str, str],
    ) -> tuple[IO[bytes], MultiDict[str, Any], MultiDict[str, Any]]:
        boundary = options.get("boundary", "").encode("ascii")
        if not boundary:
            raise ValueError("the multipart content type names no boundary")
        parser = _StrictMultiPartParser(
            stream_factory=self.stream_factory,
            max_form_memory_size=self.max_form_memory_size,
            max_form_parts=self.max_form_parts,
            cls=self.cls,
        )
        form, files = parser.parse(stream, boundary, content_length)
        return stream, form, files


class SrcoreRequest(Request):
    """Flask's request, with HEAD seen as GET, a strictly read body and strictly
    decoded forms."""

    form_data_parser_class = _StrictFormDataParser

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


def _is_utf8_query(query: bytes) -> bool:
    """Whether every byte of *query*, percent-encoded or not, reads as UTF-8 (``&`` and
    ``=`` are ASCII, so the whole string is valid exactly when each name and value is)."""
    return _decoded_query(query) is not None


def _decoded_query(query: bytes) -> str | None:
    """*query* with its percent-escapes decoded, as UTF-8 text; None if it is not."""
    try:
        return unquote_to_bytes(query).decode("utf-8")
    except UnicodeDecodeError:
        return None


#: Headers the WSGI environ holds without the ``HTTP_`` prefix (werkzeug's EnvironHeaders
#: reads them there, and skips ``HTTP_``-prefixed copies of them).
_CONTENT_KEYS = frozenset({"CONTENT_TYPE", "CONTENT_LENGTH"})
_SHADOWED_KEYS = frozenset({"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"})


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
    # The header fields as request.headers lists them, read from the environ directly:
    # the same fields and lengths (an ASCII name, the only kind servers pass, keeps its
    # length through "_" for "-" and title case) without building each name.
    count = 0
    for key, value in environ.items():
        if key[:5] == "HTTP_":
            if key in _SHADOWED_KEYS:
                continue
            name_length = len(key) - 5
        elif key in _CONTENT_KEYS and value:
            name_length = len(key)
        else:
            continue
        count += 1
        if name_length + len(value) + 2 > MAX_HEADER_BYTES:
            name = (key[5:] if key[:5] == "HTTP_" else key).replace("_", "-").title()
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
    query = request.query_string
    if query:  # most requests have none: nothing to decode or parse
        decoded = _decoded_query(query)
        if decoded is None:
            raise BadRequest("The query string is not UTF-8 text.")
        # Each name and value is a piece of the decoded string (a "+" read as a space):
        # without a control character in the whole, none has one, and the parameters
        # need not be parsed here; with one (a tab a value may hold), each is checked.
        if _CONTROL.search(decoded):
            args: MultiDict[str, str] = request.args
            if _has_control(args.items(multi=True)):
                raise BadRequest("The query string contains control characters.")
    if request.method not in {"GET", "HEAD", "OPTIONS"} and request.mimetype in _FORM_MIMETYPES:
        form: MultiDict[str, str] = request.form
        if _has_control(form.items(multi=True)):
            raise BadRequest("The form contains control characters.")
        if any(_CONTROL.search(name) for name in request.files):
            raise BadRequest("The form contains control characters.")


_DEFAULT_PORTS = {"http": 80, "https": 443}


def _origin_key(url: str) -> tuple[str, str, int | None] | None:
    """Scheme, host and port of *url* (the default port written out), as origins compare;
    None when it is no such URL."""
    try:
        parts = urlsplit(url.strip())
        scheme = parts.scheme.lower()
        return scheme, parts.hostname or "", parts.port or _DEFAULT_PORTS.get(scheme)
    except ValueError:  # a port that is no number, an unclosed [
        return None


_ANOTHER_SITE = (
    "This form was sent from a page of another site; only this service's own pages "
    "may send it. Open the form here and send it again."
)


#: What Flask-WTF's https check says of a form whose token it found good, but not its Referer.
REFERER_CHECKS = frozenset(
    {"The referrer header is missing.", "The referrer does not match the host."}
)


def check_form_referer(request: Request, origin: str) -> None:
    """Take a form (its token good) that Flask-WTF refused over https for its ``Referer``
    when its ``Origin`` is this service's; else refuse it (400), saying why.

    A browser, or an extension of it, that keeps the Referer private still names the
    sending page's origin on every POST. Refused as a CSRF error, such a form got the
    "your session changed" page, and its Send again failed the same way, for good. One
    that keeps its Referers private altogether sends ``Origin: null`` (the Fetch standard's
    no-referrer policy), and ``Sec-Fetch-Site: same-origin``, which no page can make a
    browser send from another origin (not even from this host over http): that is taken.
    """
    sent = request.headers.get("Origin")
    if sent is not None and sent.strip() != "null":
        check_form_origin(request, origin)
        return
    if request.referrer:
        raise BadRequest(_ANOTHER_SITE)
    if request.headers.get("Sec-Fetch-Site") == "same-origin":
        return
    raise BadRequest(
        "This form was sent without saying which page it came from: your browser, or an "
        "extension of it, left out the Referer header, which this site asks for over https. "
        "Let it send that header to this site, then send the form again."
    )


def check_form_origin(request: Request, origin: str) -> None:
    """Refuse (400) a form whose ``Origin`` is another site's, though its CSRF token is valid.

    The token is the defence; this is a second one, kept in development too: over plain
    http nothing else asks where a form came from (Flask-WTF's Referer check is for https
    only), and a page of another origin that got hold of a token (a sibling service on
    another port of the same host, whose cookies are shared) could post with it. Browsers
    name the sending page's origin on every POST. Taken: the service's configured
    *origin*, and the origin the request was sent to (a browser on ``localhost`` for
    ``127.0.0.1``, a proxy passing another Host). No ``Origin`` (a client other than a
    browser) and ``null`` (a browser keeping it private: a no-referrer policy, a
    sandboxed frame) say nothing, and are left to the token. No page of one service posts
    to another (``make demo``'s services, on two ports, are two origins: the login goes
    between them by redirects), so nothing of theirs is refused.
    """
    sent = request.headers.get("Origin")
    if sent is None or sent.strip() == "null":
        return
    key = _origin_key(sent)
    if key is not None and key in (_origin_key(origin), _origin_key(request.host_url)):
        return
    raise BadRequest(_ANOTHER_SITE)
