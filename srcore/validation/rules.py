"""The plain validation rules: functions over plain values that raise :class:`Invalid`.

They know nothing of requests or Flask, so they can be tested and reused on their own
(a CLI, a background job); :class:`~srcore.validation.Validation` only finds the
submitted value and turns :class:`Invalid` into a recorded :class:`FieldError`. The
ceilings here (:data:`MAX_STRING_LENGTH`, :data:`INT_MIN`..:data:`INT_MAX`, ...) cap
whatever a caller asks for: they protect the database and the process, not a form.
"""

from __future__ import annotations

import enum
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, Literal, NotRequired, TypedDict, TypeVar, overload
from urllib.parse import urlsplit

from werkzeug.datastructures import FileStorage

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_COMBINING_MARKS",
    "MAX_EMAIL_LENGTH",
    "MAX_LIST_ITEMS",
    "MAX_STRING_LENGTH",
    "MAX_URL_LENGTH",
    "ErrorBody",
    "ErrorItem",
    "FieldError",
    "Invalid",
    "TextKind",
    "coerce_bool",
    "coerce_choice",
    "coerce_email",
    "coerce_int",
    "coerce_string",
    "coerce_strings",
    "coerce_url",
    "error_body",
    "file_size",
    "is_json_mimetype",
    "parse_json_object",
]

#: No string is accepted above this many characters, whatever a call asks for.
MAX_STRING_LENGTH = 1_000_000
#: Default and ceiling for URLs; longer ones break browsers, proxies and logs.
MAX_URL_LENGTH = 2048
#: No list is accepted with more items than this, whatever a call asks for.
MAX_LIST_ITEMS = 1000
#: RFC 5321 path limit.
MAX_EMAIL_LENGTH = 254
#: Integers are kept within a signed 64-bit column so the database never overflows.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1
#: A line or a name may stack at most this many combining marks on one character: enough
#: for any script's accents, vowel signs and cantillation, too few to draw over the page.
MAX_COMBINING_MARKS = 8

#: What a string field holds, which decides the characters it may carry (see
#: :func:`coerce_string`): ``"multiline"`` text (a description, a comment, code),
#: a single ``"line"`` shown inside other text (a title), or a ``"name"`` that people
#: recognise something by (an application, a token).
TextKind = Literal["multiline", "line", "name"]

_E = TypeVar("_E", bound=enum.Enum)

_TRUE = frozenset({"on", "true", "1", "yes"})
_FALSE = frozenset({"off", "false", "0", "no", ""})
# NUL cannot be stored in PostgreSQL text, and a lone surrogate cannot be encoded to UTF-8;
# the other control characters but tab and line breaks are refused in forms and query strings
# (srcore.hygiene), so a JSON body may not carry them either: one value, one answer.
_FORBIDDEN_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_SURROGATES = re.compile("[\ud800-\udfff]")
_FORM_INTEGER = re.compile(r"[+-]?[0-9]+")
# More digits than this is far outside any 64-bit range; int() is not even attempted.
_MAX_INTEGER_DIGITS = 40
# With these, URLs and addresses must also be printable (str.isprintable): no C1 control,
# line or paragraph separator (U+0085, U+2028, which mail headers and browsers read as
# line breaks), other space, or invisible format character (a zero-width or bidi one).
_URL_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")
_EMAIL_BAD_CHARS = re.compile(r'[\x00-\x20\x7f<>()\[\]\\,;:"]')
# A single line may not break, nor carry the bidirectional embeddings, overrides and
# isolates that reorder what is shown around them ("invoice\u202efdp.exe" reads
# "invoiceexe.pdf"), nor a C1 control; Arabic and Hebrew text needs none of them.
_NOT_IN_A_LINE = re.compile("[\n\r\x80-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# Invisible in a name, though not format characters: the combining grapheme joiner, the
# Hangul fillers, the braille blank, and the variation selectors (Mongolian ones too).
_INVISIBLE = re.compile(
    "[\u034f\u115f\u1160\u180b-\u180d\u180f\u2800\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)
# Joiners and variation selectors belong to the character before them (a Persian or Indic
# letter, an emoji); after ASCII they change nothing shown but the name's bytes.
_JOINERS = frozenset("\u200c\u200d") | frozenset(map(chr, range(0xFE00, 0xFE10)))
_MAX_LISTED_CHOICES = 10
_COPY_CHUNK = 64 * 1024


@dataclass(frozen=True)
class FieldError:
    """One problem with the input: a human sentence, and the field it belongs to.

    ``field`` is ``None`` for a problem with the request as a whole (malformed JSON, ...).
    """

    reason: str
    field: str | None = None


class Invalid(ValueError):
    """Raised by the plain rules; ``reason`` is the sentence shown to the user."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ErrorItem(TypedDict):
    """One problem: the sentence to show, and the field it is about (none: the request)."""

    reason: str
    field: NotRequired[str]


class ErrorBody(TypedDict):
    """srcore's one error body, of every 4xx and 5xx answer of every service's API."""

    errors: list[ErrorItem]


def error_body(errors: Iterable[FieldError | str]) -> ErrorBody:
    """Build the standard error body ``{"errors": [{"field": ..., "reason": ...}]}``.

    A plain string is a whole-request error; such errors carry no ``field`` key.
    """
    items: list[ErrorItem] = []
    for err in errors:
        if isinstance(err, str):
            err = FieldError(err)
        item: ErrorItem = {"reason": err.reason}
        if err.field is not None:
            item["field"] = err.field
        items.append(item)
    return {"errors": items}


# -- the plain rules -------------------------------------------------------------------------


def is_json_mimetype(mimetype: str) -> bool:
    """Whether a bare mimetype (no parameters) names JSON: ``application/json`` or
    ``application/*+json``."""
    mimetype = mimetype.strip().lower()
    return mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _NonFiniteNumber(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _reject_constant(name: str) -> Any:
    raise _NonFiniteNumber(name)


def _has_lone_surrogate(value: Any) -> bool:
    """Whether a parsed JSON value holds a lone surrogate anywhere, keys included."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if _SURROGATES.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must hold one JSON object.

    Anything else raises :class:`Invalid`: invalid UTF-8, malformed JSON, ``NaN`` or
    ``Infinity``, a duplicated key (which a reader could resolve either way), a top level
    that is not an object, nesting deep enough to exhaust the parser's recursion, or a
    lone surrogate escape in any string.
    """
    if not body or body.isspace():
        raise Invalid("The request body is empty; expected a JSON object.")
    try:
        # RFC 8259 JSON is UTF-8 whatever the charset parameter says; a BOM is tolerated.
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise Invalid("The request body is not valid UTF-8.") from None
    try:
        value = json.loads(
            text, object_pairs_hook=_object_without_duplicates, parse_constant=_reject_constant
        )
    except RecursionError:
        raise Invalid("The JSON body is nested too deeply.") from None
    except _DuplicateKey as exc:
        shown = json.dumps(exc.key[:64])
        raise Invalid(f"The JSON object has the key {shown} more than once.") from None
    except _NonFiniteNumber as exc:
        raise Invalid(f"Not valid JSON: {exc} is not a JSON number.") from None
    except json.JSONDecodeError as exc:
        raise Invalid(
            f"Not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    except ValueError:
        # e.g. an integer literal longer than the interpreter will convert
        raise Invalid("Not valid JSON.") from None
    if not isinstance(value, dict):
        raise Invalid("Expected a JSON object.")
    # An escape like \ud800 alone parses, but is no character: it cannot be stored, shown
    # or encoded, so no part of the app should ever hold one.
    if _has_lone_surrogate(value):
        raise Invalid("The JSON body holds a lone surrogate escape (\\ud800-\\udfff), not text.")
    return value


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _codepoint(char: str) -> str:
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} ({name})" if name else f"U+{ord(char):04X}"


def _check_line(value: str) -> None:
    """Refuse what a single line of text shown inside a page must not hold."""
    found = _NOT_IN_A_LINE.search(value)
    if found is not None:
        char = found.group()
        if char in "\n\r\x85\u2028\u2029":
            raise Invalid("Must be a single line.")
        if unicodedata.category(char) == "Cc":
            raise Invalid(f"Contains the control character {_codepoint(char)}.")
        raise Invalid(
            f"Contains {_codepoint(char)}, a bidirectional control that shows the text"
            " around it in another order than it is written; remove it."
        )
    if value.isascii():
        return
    run = 0
    for char in value:
        # A mark of combining class 0 stacks too: Thai's maitaikhu (U+0E47) and the
        # grapheme joiner (U+034F) among them, which the class alone would let through.
        is_mark = unicodedata.combining(char) or unicodedata.category(char) in ("Mn", "Me")
        run = run + 1 if is_mark else 0
        if run > MAX_COMBINING_MARKS:
            raise Invalid(
                f"Stacks more than {MAX_COMBINING_MARKS} combining marks on one character."
            )


def _check_name(value: str) -> None:
    """Refuse invisible characters in a name people recognise something by: two names that
    look the same must be the same, and every character of one must show."""
    if value.isascii():
        return
    previous = ""
    for char in value:
        if char in _JOINERS:
            invisible = previous.isascii()
        else:
            invisible = unicodedata.category(char) == "Cf" or bool(_INVISIBLE.match(char))
        if invisible:
            raise Invalid(
                f"Contains {_codepoint(char)}, which does not show; a name must show"
                " everything it holds."
            )
        previous = char


def coerce_string(
    raw: object,
    *,
    min_length: int = 0,
    max_length: int | None = None,
    strip: bool = True,
    text: TextKind = "multiline",
) -> str:
    """Check a submitted string; ``max_length`` is always capped at :data:`MAX_STRING_LENGTH`.

    Every string is refused NUL, the other C0 controls but tab and line breaks, DEL and
    lone surrogates. *text* says what else it may hold:

    - ``"multiline"``: nothing more is refused. Text people write at length keeps the
      bidirectional marks and joiners its languages need; pages isolate it.
    - ``"line"``: one line shown inside other text, a title. No line break or C1
      control, no bidirectional embedding, override or isolate (U+202A-U+202E,
      U+2066-U+2069), which would show it as other text than it is, and at most
      :data:`MAX_COMBINING_MARKS` combining marks in a row.
    - ``"name"``: a line people recognise something by, an application's or a token's
      name. Also no invisible character: no format character (bidirectional marks,
      zero-width spaces, the byte order mark, tag characters...), filler or variation
      selector, except a joiner or variation selector after a character that is not
      ASCII (Persian, Indic scripts, emoji need them).
    """
    if not isinstance(raw, str):
        raise Invalid("Must be a string.")
    limit = MAX_STRING_LENGTH if max_length is None else min(max_length, MAX_STRING_LENGTH)
    if len(raw) > MAX_STRING_LENGTH:
        # refuse before doing any work on a huge value
        raise Invalid(f"Must be at most {_plural(limit, 'character')}.")
    value = raw.strip() if strip else raw
    if len(value) > limit:
        raise Invalid(f"Must be at most {_plural(limit, 'character')}.")
    if len(value) < min_length:
        raise Invalid(f"Must be at least {_plural(min_length, 'character')}.")
    if forbidden := _FORBIDDEN_CHARS.search(value):
        char = forbidden.group()
        what = "a lone surrogate" if _SURROGATES.match(char) else "the control character"
        raise Invalid(f"Contains {what} {_codepoint(char)}, which is not allowed.")
    if text != "multiline":
        _check_line(value)
        if text == "name":
            _check_name(value)
    return value


def coerce_strings(
    raw: object,
    *,
    max_items: int | None = None,
    max_length: int | None = None,
    split: bool = False,
) -> list[str]:
    """Check a list of strings: a JSON array of strings, or a form's repeated values.

    Each item is stripped and checked like :func:`coerce_string`; empty items are dropped.
    With ``split``, a single string is accepted too and every item is split on whitespace
    (a space-separated list typed into one field). ``max_items`` is capped at
    :data:`MAX_LIST_ITEMS`.
    """
    limit = MAX_LIST_ITEMS if max_items is None else min(max_items, MAX_LIST_ITEMS)
    if split and isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list | tuple) or not all(isinstance(item, str) for item in raw):
        raise Invalid("Must be a list of strings.")
    if len(raw) > limit:
        raise Invalid(f"Must have at most {_plural(limit, 'item')}.")
    items = [coerce_string(item, max_length=max_length) for item in raw]
    if split:
        items = [part for item in items for part in item.split()]
    items = [item for item in items if item]
    if len(items) > limit:
        raise Invalid(f"Must have at most {_plural(limit, 'item')}.")
    return items


def coerce_int(
    raw: object,
    *,
    from_form: bool,
    min: int | None = None,
    max: int | None = None,
) -> int:
    """Check a whole number: a JSON integer (not a bool, not a fractional float) or a form
    string of ASCII digits with an optional sign. Always kept within a signed 64-bit range.
    """
    low = INT_MIN if min is None else min if min > INT_MIN else INT_MIN
    high = INT_MAX if max is None else max if max < INT_MAX else INT_MAX
    value: int
    if from_form or isinstance(raw, str):
        if not from_form or not isinstance(raw, str):
            raise Invalid("Must be a whole number.")
        text = raw.strip()
        if not _FORM_INTEGER.fullmatch(text):
            raise Invalid("Must be a whole number.")
        if len(text.lstrip("+-")) > _MAX_INTEGER_DIGITS:
            raise Invalid(
                f"Must be at least {low}." if text[0] == "-" else f"Must be at most {high}."
            )
        value = int(text)
    elif isinstance(raw, bool):
        raise Invalid("Must be a whole number.")
    elif isinstance(raw, int):
        value = raw
    elif isinstance(raw, float) and raw.is_integer():
        value = int(raw)
    else:
        raise Invalid("Must be a whole number.")
    if value < low:
        raise Invalid(f"Must be at least {low}.")
    if value > high:
        raise Invalid(f"Must be at most {high}.")
    return value


def coerce_bool(raw: object, *, from_form: bool) -> bool:
    """Check a boolean: JSON ``true``/``false``, or a form word (``on``/``off``, ``yes``/``no``,
    ``true``/``false``, ``1``/``0``; empty is false)."""
    if from_form:
        if isinstance(raw, str):
            word = raw.strip().lower()
            if word in _TRUE:
                return True
            if word in _FALSE:
                return False
    elif isinstance(raw, bool):
        return raw
    raise Invalid("Must be true or false.")


def _matches(value: object, raw: object, *, from_form: bool) -> bool:
    """Whether the submitted ``raw`` names the enum value ``value``."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return False
    if isinstance(raw, str):
        text = raw.strip() if from_form else raw
        return (from_form or isinstance(value, str)) and str(value) == text
    if from_form or isinstance(raw, bool) or not isinstance(raw, int):
        return False
    return isinstance(value, int) and value == raw


def _choice_error(shown: Sequence[str]) -> Invalid:
    if len(shown) > _MAX_LISTED_CHOICES:
        return Invalid("Not one of the allowed choices.")
    return Invalid(f"Must be one of: {', '.join(shown)}.")


@overload
def coerce_choice(raw: object, choices: type[_E], *, from_form: bool) -> _E: ...
@overload
def coerce_choice(raw: object, choices: Sequence[str], *, from_form: bool) -> str: ...
def coerce_choice(
    raw: object, choices: type[enum.Enum] | Sequence[str], *, from_form: bool
) -> enum.Enum | str:
    """Check one of a fixed set: the values of an :class:`enum.Enum` or a sequence of strings.

    Enum members match by value; an int-valued member also matches a JSON integer or, in a
    form, its decimal string.
    """
    if isinstance(choices, type):
        for member in choices:
            if _matches(member.value, raw, from_form=from_form):
                return member
        raise _choice_error([str(member.value) for member in choices])
    if isinstance(choices, str):
        raise TypeError("choices must be an Enum class or a sequence of strings, not a string")
    if isinstance(raw, str):
        text = raw.strip() if from_form else raw
        if text in choices:
            return text
    raise _choice_error(list(choices))


def coerce_url(
    raw: object,
    *,
    max_length: int = MAX_URL_LENGTH,
    schemes: Collection[str] = ("http", "https"),
) -> str:
    """Check an absolute URL with one of ``schemes`` and a host; returns it stripped."""
    value = coerce_string(raw, max_length=min(max_length, MAX_URL_LENGTH))
    if _URL_BAD_CHARS.search(value) or not value.isprintable():
        raise Invalid("Not a valid URL.")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        raise Invalid("Not a valid URL.") from None
    if parts.scheme.lower() not in schemes:
        allowed = " or ".join(f"{scheme}://" for scheme in sorted(schemes))
        raise Invalid(f"Must be a URL starting with {allowed}." if allowed else "Not allowed.")
    if not parts.hostname:
        raise Invalid("Not a valid URL: the host is missing.")
    return value


def coerce_email(raw: object) -> str:
    """Check an email address pragmatically: one ``@``, a local part, a dotted domain, no
    spaces, RFC 5321 length limits. Deliverability is a question for the mail server."""
    value = coerce_string(raw, max_length=MAX_EMAIL_LENGTH)
    if _EMAIL_BAD_CHARS.search(value) or not value.isprintable() or value.count("@") != 1:
        raise Invalid("Not a valid email address.")
    local, domain = value.split("@")
    if not local or len(local) > 64 or len(domain) > 253 or "." not in domain:
        raise Invalid("Not a valid email address.")
    for label in domain.split("."):
        if not label or len(label) > 63 or label.startswith("-") or label.endswith("-"):
            raise Invalid("Not a valid email address.")
    return value


def _human_size(size: int) -> str:
    for unit, factor in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return _plural(size, "byte")


def file_size(storage: FileStorage) -> int:
    """Size of an uploaded file in bytes, measured by seeking rather than reading.

    A stream that cannot seek is copied once into a spooled temporary file, which then
    replaces it so the caller can still read the upload from the start.
    """
    stream: IO[bytes] = storage.stream
    try:
        position = stream.tell()
        size = stream.seek(0, os.SEEK_END)
        stream.seek(position)
        return size
    except (AttributeError, OSError, ValueError):
        pass
    copy = tempfile.SpooledTemporaryFile(max_size=1 << 20)  # noqa: SIM115 - handed to storage
    size = 0
    while chunk := stream.read(_COPY_CHUNK):
        copy.write(chunk)
        size += len(chunk)
    copy.seek(0)
    storage.stream = copy
    return size


def _check_file(raw: object, *, max_size: int) -> FileStorage:
    if not isinstance(raw, FileStorage):
        raise Invalid("Must be a file upload.")
    size = file_size(raw)
    if size > max_size:
        raise Invalid(f"Must be at most {_human_size(max_size)}.")
    return raw
