"""Conditional requests for a JSON resource: ``ETag``, ``If-Match`` and ``If-None-Match``.

Two API clients that read a ticket and each send a change to it would otherwise overwrite
each other unseen. With :func:`conditional` on the view of one resource, its answers carry
a strong ``ETag`` (a digest of the JSON it answers with), a GET whose ``If-None-Match``
names that tag is a ``304 Not Modified``, and a write whose ``If-Match`` names another
tag is a ``412 Precondition Failed`` with srcore's error body (RFC 9110, section 13.1).
A request without these headers is served as before::

    @api.patch("/things/<name>")
    @oauth("stuff/things:RW")
    @conditional
    def update_thing(name: str) -> ThingJSON:
        thing = lock_thing(name)  # the row locked: no change can come in between
        if_match(thing_json(thing))  # 412 unless If-Match names what the caller saw
        ...
        return thing_json(thing)

The tag is computed from the representation, not kept in a column, so any change the
JSON shows changes it, and nothing else does. A write view calls :func:`if_match` with
the resource as it is once locked: checking before the lock would let two writes carrying
the same tag both pass. The API description (:mod:`srcore.openapi`) lists the header and
the 304 and 412 answers of every view marked so.

An HTML edit form has no headers of its own: it carries :func:`form_version` of what it
edits in a hidden ``was`` field, and the view checks it with :func:`opened_version_holds`
once the row is locked. A save from a form opened before someone else's save comes back,
the person's text kept, with the current version, so that sending it again replaces the
other edit knowingly; a form sent without ``was`` (a script) saves as before.

Files are Werkzeug's to answer, and it reads two of these headers otherwise than RFC 9110
does: :func:`send_file_checked` wraps the static files' responses.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, Response, current_app, request

if TYPE_CHECKING:
    from srcore.validation import Validation

__all__ = [
    "CONDITIONAL_ATTRIBUTE",
    "PreconditionFailed",
    "conditional",
    "entity_tag",
    "form_version",
    "if_match",
    "init_app",
    "opened_version_holds",
    "parse_entity_tags",
]

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute :func:`conditional` leaves on a view (and ``functools.wraps`` copies onto
#: the decorators' wrappers around it), read by the API description.
CONDITIONAL_ATTRIBUTE = "srcore_conditional"
#: Methods whose ``If-Match`` the view checks with :func:`if_match`.
WRITE_METHODS = frozenset({"PATCH", "PUT", "DELETE"})
_READ_METHODS = frozenset({"GET", "HEAD"})
#: Past this many characters an ``If-Match`` or ``If-None-Match`` is not read: no tag list
#: a client keeps is that long, and a regex over a huge header is work for nothing.
MAX_HEADER_CHARS = 4096
#: One ``entity-tag`` of RFC 9110 (``W/`` for weak) and the list separator around it.
_TAG = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*(?:,|$)')
_EMPTY = re.compile(r"[ \t]*,")


class PreconditionFailed(Exception):
    """Raised by :func:`if_match` when the caller's ``If-Match`` names no current tag (or
    its ``If-None-Match`` names it); :func:`conditional` answers it with a 412."""

    def __init__(self, header: str = "If-Match") -> None:
        super().__init__(header)
        #: The request header whose condition does not hold.
        self.header = header


def entity_tag(representation: Any) -> str:
    """The strong entity tag, quotes included, of a JSON *representation*: a digest of the
    exact JSON the app answers with, so equal tags mean equal bodies."""
    return _tag_of(current_app.json.dumps(representation))


def _tag_of(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()[:18]
    return '"' + base64.urlsafe_b64encode(digest).decode("ascii") + '"'


def parse_entity_tags(value: str) -> tuple[bool, list[tuple[bool, str]]] | None:
    """Read an ``If-Match`` or ``If-None-Match`` value: ``(star, [(weak, opaque), ...])``,
    or None when it is not one (garbage, a bare word, too long): a condition that cannot
    be read never holds."""
    if len(value) > MAX_HEADER_CHARS:
        return None
    stripped = value.strip(" \t")
    if stripped == "*":
        return True, []
    tags: list[tuple[bool, str]] = []
    position = 0
    while position < len(value):
        # Empty list elements (", ," or a trailing comma) are read past, as RFC 9110
        # (section 5.6.1.2) asks: a client joining tags may leave one.
        empty = _EMPTY.match(value, position)
        if empty is not None:
            position = empty.end()
            continue
        if not value[position:].strip(" \t"):
            break
        found = _TAG.match(value, position)
        if found is None or found.end() == position:
            return None
        tags.append((found.group(1) is not None, found.group(2)))
        position = found.end()
    return (False, tags) if tags else None


def _header(name: str) -> str | None:
    """The request's *name* header; a WSGI server joins a repeated one's values with
    commas, as the list syntax of these headers reads them."""
    value = request.environ.get("HTTP_" + name.upper().replace("-", "_"))
    return value if isinstance(value, str) else None


def if_match(representation: Any) -> None:
    """Check the request's preconditions against *representation*, the resource as it is
    now (read once it is locked for the write). Raise :class:`PreconditionFailed` unless
    ``If-Match`` is absent, ``*``, or names its tag strongly (a weak tag never matches),
    and ``If-None-Match`` is absent or names neither its tag (weakly) nor ``*``.

    ``If-None-Match`` on a write is what a client sends to change nothing it has seen
    (RFC 9110, section 13.1.2): ignored, ``If-None-Match: *`` let a PATCH through onto
    the resource that exists."""
    tag = entity_tag(representation)
    if not _matches(tag, _header("If-Match")):
        raise PreconditionFailed("If-Match")
    sent = _header("If-None-Match")
    if sent is not None and (parse_entity_tags(sent) is None or _none_match(tag, sent)):
        raise PreconditionFailed("If-None-Match")


def form_version(*values: object) -> str:
    """A short digest of the *values* an edit form changes (None counts as empty), for the
    form's hidden ``was`` field: equal while nobody changes them."""
    text = "\0".join("" if value is None else str(value) for value in values)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def opened_version_holds(
    valid: Validation, current: str, message: str, *, field: str | None = None
) -> bool:
    """Whether the form *valid* reads was opened on the version *current* (or carries no
    ``was``); otherwise record *message*, an error about *field* (None: the whole form),
    and answer False.

    Call it with the row locked and read again (:func:`srcore.sqlrows.lock_row`), before
    anything is written: the form then comes back with the person's text and the version
    it now is."""
    was = valid.value("was")
    if was and was != current:
        valid.error(message, field)
        return False
    return True


def _matches(tag: str, sent: str | None) -> bool:
    """Whether an ``If-Match`` of *sent* holds for *tag*: absent, ``*``, or naming it
    strongly. One that cannot be read never holds."""
    return sent is None or _names(tag, sent, weak=False)


def _none_match(tag: str, sent: str | None) -> bool:
    """Whether an ``If-None-Match`` of *sent* names *tag* (weakly compared) or is ``*``."""
    return sent is not None and _names(tag, sent, weak=True)


def _names(tag: str, sent: str, *, weak: bool) -> bool:
    """Whether the list *sent* is ``*`` or names *tag*, its weak tags counted only in a
    *weak* comparison; a list that cannot be read names nothing."""
    parsed = parse_entity_tags(sent)
    if parsed is None:
        return False
    star, tags = parsed
    return star or any((weak or not is_weak) and opaque == tag[1:-1] for is_weak, opaque in tags)


def _precondition_failed(header: str = "If-Match") -> Response:
    from srcore.errors import error_response

    if header == "If-None-Match":
        reason = (
            "The resource is the version named in If-None-Match (or the header is * or "
            "not a list of entity tags), so it was not changed."
        )
    else:
        reason = (
            "The resource changed since the version named in If-Match (or the header is "
            "not a list of entity tags). Read it again for its current ETag, then retry."
        )
    return error_response(412, reason, field=header)


def conditional(view: F) -> F:
    """Give *view*, the view of one JSON resource, conditional requests.

    A JSON object it answers with (status 200) gets a strong ``ETag``; a GET or HEAD whose
    ``If-None-Match`` names it is answered ``304 Not Modified`` with no body, one whose
    ``If-Match`` does not a 412. A write view
    calls :func:`if_match` itself, once it holds the resource locked; its refusal becomes a
    412 here. Put it below :func:`srcore.auth.oauth`, so a caller learns nothing of a
    resource, not even its tag, before its token is checked.
    """

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            answer = view(*args, **kwargs)
        except PreconditionFailed as failed:
            return _precondition_failed(failed.header)
        if not isinstance(answer, dict):
            return answer  # a 201, a 204, a response built by hand: no tag of this body
        # The body is dumped once, for its tag and to be sent (compact, debug or not).
        json = current_app.json
        text = json.dumps(answer)
        tag = _tag_of(text)
        environ = request.environ
        if environ["REQUEST_METHOD"] in _READ_METHODS:
            # If-Match first (RFC 9110, section 13.2.2): a read that asks for a version
            # it no longer is gets a 412, not another version.
            if not _matches(tag, environ.get("HTTP_IF_MATCH")):
                return _precondition_failed()
            if _none_match(tag, environ.get("HTTP_IF_NONE_MATCH")):
                return Response(status=304, headers={"ETag": tag})
        response = current_app.response_class(f"{text}\n", mimetype="application/json")
        response.headers["ETag"] = tag
        return response

    setattr(wrapper, CONDITIONAL_ATTRIBUTE, True)
    return wrapper  # type: ignore[return-value]


def init_app(app: Flask) -> None:
    """Answer a :class:`PreconditionFailed` that no :func:`conditional` caught (a write view
    calling :func:`if_match` without the decorator) as that decorator does: a 412 with the
    error body naming the header, never a 500."""
    app.register_error_handler(
        PreconditionFailed, lambda failed: _precondition_failed(failed.header)
    )


def send_file_checked(send: Callable[[], Response]) -> Response:
    """The file response *send* makes, with ``If-Match`` and ``Range`` read as RFC 9110
    asks (Werkzeug's file responses read them otherwise).

    A ``Range`` that is not one range of bytes (garbage, another unit, ``5-1``, several
    ranges) is ignored: the whole file, not a 416 (section 14.2). ``If-Match`` holds when it
    is ``*`` or names the file's tag strongly; otherwise the answer is srcore's 412, not
    the file with its year of public caching under a 412 status; a ``*`` (or a match)
    combined with ``If-None-Match`` is a 304, not a 412 (section 13.2.2).
    """
    from werkzeug.http import parse_range_header

    environ = request.environ
    held = {name: environ.pop(name) for name in ("HTTP_IF_MATCH",) if name in environ}
    sent_range = environ.get("HTTP_RANGE")
    if sent_range is not None:
        parsed = parse_range_header(sent_range)
        if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
            held["HTTP_RANGE"] = environ.pop("HTTP_RANGE")
            if "HTTP_IF_RANGE" in environ:
                held["HTTP_IF_RANGE"] = environ.pop("HTTP_IF_RANGE")
    try:
        response = send()
    finally:
        environ.update(held)
    if "HTTP_IF_MATCH" not in held:
        return response
    tags = parse_entity_tags(str(held["HTTP_IF_MATCH"]))
    tag, weak = response.get_etag()
    if tags is not None and (tags[0] or (tag is not None and not weak and (False, tag) in tags[1])):
        return response
    response.close()
    from srcore.errors import error_response

    reason = "The file is not the version named in If-Match (or the header is not a list of "
    return error_response(412, reason + "entity tags).", field="If-Match")
