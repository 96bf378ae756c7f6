"""Validate an HTML form or a JSON body with one object and one error format.

Form views and API views read their input the same way::

    valid = Validation(request)
    title = valid.string("title", required=True, max_length=256)
    priority = valid.integer("priority", min=1, max=5, default=3)
    if not valid.ok:
        return valid.response()          # {"errors": [{"field": ..., "reason": ...}]}

The rules themselves (:func:`parse_json_object`, :func:`coerce_string`, ...) are plain
functions over plain values that raise :class:`Invalid`; :class:`Validation` only finds
the submitted value, decides whether it is missing, and records what went wrong. Bad
input always ends as a recorded error, never as an exception, so a view can answer with
a 4xx and the standard error body instead of a 500.
"""

from __future__ import annotations

import enum
import json
import os
import re
import tempfile
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import (
    IO,
    Any,
    Literal,
    NotRequired,
    Required,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    overload,
)
from urllib.parse import urlsplit

from flask import Request, Response
from flask import request as current_request
from werkzeug.datastructures import FileStorage

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_EMAIL_LENGTH",
    "MAX_STRING_LENGTH",
    "MAX_URL_LENGTH",
    "CommonOptions",
    "FieldError",
    "FileOptions",
    "IntOptions",
    "Invalid",
    "Source",
    "StringOptions",
    "UrlOptions",
    "Validation",
    "ValidationFailed",
    "coerce_bool",
    "coerce_choice",
    "coerce_email",
    "coerce_int",
    "coerce_string",
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
#: RFC 5321 path limit.
MAX_EMAIL_LENGTH = 254
#: Integers are kept within a signed 64-bit column so the database never overflows.
INT_MIN = -(2**63)
INT_MAX = 2**63 - 1

Source = Literal["form", "json"]
_E = TypeVar("_E", bound=enum.Enum)
_T = TypeVar("_T")

_FORM_MIMETYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})
_TRUE = frozenset({"on", "true", "1", "yes"})
_FALSE = frozenset({"off", "false", "0", "no", ""})
# NUL cannot be stored in PostgreSQL text, and a lone surrogate cannot be encoded to UTF-8.
_FORBIDDEN_CHARS = re.compile("[\x00\ud800-\udfff]")
_FORM_INTEGER = re.compile(r"[+-]?[0-9]+")
# More digits than this is far outside any 64-bit range; int() is not even attempted.
_MAX_INTEGER_DIGITS = 40
_URL_BAD_CHARS = re.compile(r"[\x00-\x20\x7f]")
_EMAIL_BAD_CHARS = re.compile(r'[\x00-\x20\x7f<>()\[\]\\,;:"]')
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


def error_body(errors: Iterable[FieldError | str]) -> dict[str, list[dict[str, str]]]:
    """Build the standard error body ``{"errors": [{"field": ..., "reason": ...}]}``.

    A plain string is a whole-request error; such errors carry no ``field`` key.
    """
    items: list[dict[str, str]] = []
    for err in errors:
        if isinstance(err, str):
            err = FieldError(err)
        item = {"reason": err.reason}
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


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Parse a request body that must hold one JSON object.

    Anything else raises :class:`Invalid`: invalid UTF-8, malformed JSON, ``NaN`` or
    ``Infinity``, a duplicated key (which a reader could resolve either way), a top level
    that is not an object, or nesting deep enough to exhaust the parser's recursion.
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
    return value


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def coerce_string(
    raw: object,
    *,
    min_length: int = 0,
    max_length: int | None = None,
    strip: bool = True,
) -> str:
    """Check a submitted string; ``max_length`` is always capped at :data:`MAX_STRING_LENGTH`."""
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
    if _FORBIDDEN_CHARS.search(value):
        raise Invalid("Contains characters that are not allowed.")
    return value


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
    if _URL_BAD_CHARS.search(value):
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
    if _EMAIL_BAD_CHARS.search(value) or value.count("@") != 1:
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


def _label(field: str) -> str:
    text = field.replace("_", " ").replace("-", " ").strip() or field
    return text[:1].upper() + text[1:]


# -- options accepted by require()/optional(), per type --------------------------------------


class CommonOptions(TypedDict, total=False):
    label: str


class StringOptions(CommonOptions, total=False):
    min_length: int
    max_length: int | None
    strip: bool


class IntOptions(CommonOptions, total=False):
    min: int | None
    max: int | None


class UrlOptions(CommonOptions, total=False):
    max_length: int
    schemes: Collection[str]


class FileOptions(TypedDict):
    max_size: Required[int]
    label: NotRequired[str]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


# -- the glue --------------------------------------------------------------------------------


class Validation:
    """The submitted values of one request and the problems found with them.

    ``Validation(request)`` reads the query string of a ``GET`` or ``HEAD``, the JSON body
    of a request with a JSON content type, and the form (with its files) otherwise.
    ``Validation(data=...)`` validates a plain mapping; ``source`` says whether it holds
    form strings or JSON values.

    A value is *missing* when it is absent, JSON ``null``, or an empty (after stripping)
    string; a missing required field is an error, a missing optional one gives its
    default. In a form an absent boolean is ``False``: unchecked checkboxes are not sent.
    """

    source: Source

    def __init__(
        self,
        request: Request | None = None,
        *,
        data: Mapping[str, Any] | None = None,
        files: Mapping[str, FileStorage] | None = None,
        source: Source = "json",
    ) -> None:
        self.errors: list[FieldError] = []
        self._data: Mapping[str, Any]
        self._files: Mapping[str, FileStorage]
        if data is not None:
            if request is not None:
                raise TypeError("pass either a request or data, not both")
            self.source = source
            self._data = data
            self._files = files if files is not None else {}
            return
        if request is None:
            request = current_request
        self._data = {}
        self._files = {}
        if request.method in {"GET", "HEAD"}:
            # whatever the content type says, these carry their input in the query string
            self.source = "form"
            self._data = request.args
            return
        if is_json_mimetype(request.mimetype):
            self.source = "json"
            try:
                self._data = parse_json_object(request.get_data(cache=True))
            except Invalid as exc:
                self.error(exc.reason)
            return
        self.source = "form"
        if not request.mimetype or request.mimetype in _FORM_MIMETYPES:
            self._data = request.form
            self._files = request.files
        else:
            self.error(f"Unsupported content type {request.mimetype}; send a form or JSON.")

    def __repr__(self) -> str:
        return f"<Validation {self.source} errors={len(self.errors)}>"

    # -- errors

    @property
    def ok(self) -> bool:
        """Whether no error has been recorded."""
        return not self.errors

    @property
    def general_errors(self) -> list[str]:
        """Reasons of the errors that belong to no field, for the top of a form."""
        return [err.reason for err in self.errors if err.field is None]

    def error(self, reason: str, field: str | None = None) -> None:
        """Record an error, about ``field`` or (without one) about the whole request."""
        self.errors.append(FieldError(reason, field))

    def error_for(self, field: str) -> str | None:
        """The first error recorded for ``field``, for showing beside it."""
        for err in self.errors:
            if err.field == field:
                return err.reason
        return None

    def expect(self, condition: object, reason: str, *, field: str | None = None) -> bool:
        """Record ``reason`` unless ``condition`` holds; return whether it held."""
        if not condition:
            self.error(reason, field)
            return False
        return True

    def raise_if_invalid(self, *, status: int = 400) -> None:
        """Raise :class:`ValidationFailed` if any error was recorded."""
        if self.errors:
            raise ValidationFailed(self, status=status)

    def response(self, status: int = 400) -> Response:
        """A JSON response with the standard error body of the recorded errors."""
        body = json.dumps(error_body(self.errors), ensure_ascii=False)
        return Response(body + "\n", status=status, mimetype="application/json")

    # -- raw values

    def __contains__(self, field: object) -> bool:
        return field in self._data or field in self._files

    def value(self, field: str, default: str = "") -> str:
        """The submitted value as a string, to put back into a re-rendered form."""
        raw = self._data.get(field)
        if isinstance(raw, str):
            return raw
        if isinstance(raw, bool):
            return "true" if raw else "false"
        if isinstance(raw, int | float):
            try:
                return str(raw)
            except ValueError:
                return default
        return default

    def _take(self, field: str, *, required: bool, label: str | None) -> object:
        """The raw value, or ``_MISSING`` (recording an error if it was required)."""
        raw = self._data.get(field)
        if raw is None or (isinstance(raw, str) and (raw == "" or raw.isspace())):
            if required:
                self.error(f"{label or _label(field)} is required.", field)
            return _MISSING
        return raw

    def _coerce(
        self,
        field: str,
        *,
        required: bool,
        default: _T | None,
        label: str | None,
        convert: Callable[[object], _T],
    ) -> _T | None:
        """Take *field*, apply *convert*, and record its :class:`Invalid` as a field error."""
        raw = self._take(field, required=required, label=label)
        if raw is _MISSING:
            return default
        try:
            return convert(raw)
        except Invalid as exc:
            self._fail(field, exc)
            return None

    def _fail(self, field: str, exc: Invalid) -> None:
        self.error(exc.reason, field)

    # -- typed getters

    def string(
        self,
        field: str,
        *,
        required: bool = False,
        default: str | None = None,
        min_length: int = 0,
        max_length: int | None = None,
        strip: bool = True,
        label: str | None = None,
    ) -> str | None:
        """A string, stripped unless ``strip=False``; at most :data:`MAX_STRING_LENGTH` long."""
        return self._coerce(
            field,
            required=required,
            default=default,
            label=label,
            convert=lambda raw: coerce_string(
                raw, min_length=min_length, max_length=max_length, strip=strip
            ),
        )

    def integer(
        self,
        field: str,
        *,
        required: bool = False,
        default: int | None = None,
        min: int | None = None,
        max: int | None = None,
        label: str | None = None,
    ) -> int | None:
        """A whole number within ``min``..``max`` (and always within 64 bits)."""
        return self._coerce(
            field,
            required=required,
            default=default,
            label=label,
            convert=lambda raw: coerce_int(raw, from_form=self.source == "form", min=min, max=max),
        )

    def boolean(
        self,
        field: str,
        *,
        required: bool = False,
        default: bool | None = None,
        label: str | None = None,
    ) -> bool | None:
        """A boolean; in a form an absent or empty field is ``False`` (unchecked box)."""
        if self.source == "form":
            raw = self._data.get(field)
            if raw is None:
                return False
        else:
            raw = self._take(field, required=required, label=label)
            if raw is _MISSING:
                return default
        try:
            return coerce_bool(raw, from_form=self.source == "form")
        except Invalid as exc:
            self._fail(field, exc)
            return None

    @overload
    def enum(
        self,
        field: str,
        choices: type[_E],
        *,
        required: bool = ...,
        default: _E | None = ...,
        label: str | None = ...,
    ) -> _E | None: ...
    @overload
    def enum(
        self,
        field: str,
        choices: Sequence[str],
        *,
        required: bool = ...,
        default: str | None = ...,
        label: str | None = ...,
    ) -> str | None: ...
    def enum(
        self,
        field: str,
        choices: type[enum.Enum] | Sequence[str],
        *,
        required: bool = False,
        default: enum.Enum | str | None = None,
        label: str | None = None,
    ) -> enum.Enum | str | None:
        """One of ``choices``: an :class:`enum.Enum` class (matched by value) or strings."""

        def convert(raw: object) -> enum.Enum | str:
            return coerce_choice(raw, choices, from_form=self.source == "form")

        # mypy joins Enum and str to object when solving _coerce's type variable.
        return cast(
            "enum.Enum | str | None",
            self._coerce(field, required=required, default=default, label=label, convert=convert),
        )

    def url(
        self,
        field: str,
        *,
        required: bool = False,
        default: str | None = None,
        max_length: int = MAX_URL_LENGTH,
        schemes: Collection[str] = ("http", "https"),
        label: str | None = None,
    ) -> str | None:
        """An absolute http(s) URL with a host, at most ``max_length`` characters."""
        return self._coerce(
            field,
            required=required,
            default=default,
            label=label,
            convert=lambda raw: coerce_url(raw, max_length=max_length, schemes=schemes),
        )

    def email(
        self,
        field: str,
        *,
        required: bool = False,
        default: str | None = None,
        label: str | None = None,
    ) -> str | None:
        """An email address (see :func:`coerce_email`)."""
        return self._coerce(
            field,
            required=required,
            default=default,
            label=label,
            convert=lambda raw: coerce_email(raw),
        )

    def file(
        self,
        field: str,
        *,
        max_size: int,
        required: bool = False,
        label: str | None = None,
    ) -> FileStorage | None:
        """An uploaded file of at most ``max_size`` bytes; a file input left empty is missing.

        A JSON body cannot carry uploads, so a value there is an error.
        """
        raw: object = self._files.get(field)
        if raw is None:
            raw = self._data.get(field)
        if raw is None or (isinstance(raw, FileStorage) and not raw.filename):
            if required:
                self.error(f"{label or _label(field)} is required.", field)
            return None
        try:
            return _check_file(raw, max_size=max_size)
        except Invalid as exc:
            self._fail(field, exc)
            return None

    # -- require()/optional(): one entry point keyed by type

    @overload
    def require(
        self, field: str, type: type[_E], **options: Unpack[CommonOptions]
    ) -> _E | None: ...
    @overload
    def require(
        self, field: str, type: type[str] = ..., **options: Unpack[StringOptions]
    ) -> str | None: ...
    @overload
    def require(
        self, field: str, type: type[bool], **options: Unpack[CommonOptions]
    ) -> bool | None: ...
    @overload
    def require(self, field: str, type: type[int], **options: Unpack[IntOptions]) -> int | None: ...
    @overload
    def require(
        self,
        field: str,
        type: Literal["enum"],
        *,
        choices: Sequence[str],
        **options: Unpack[CommonOptions],
    ) -> str | None: ...
    @overload
    def require(
        self, field: str, type: Literal["url"], **options: Unpack[UrlOptions]
    ) -> str | None: ...
    @overload
    def require(
        self, field: str, type: Literal["email"], **options: Unpack[CommonOptions]
    ) -> str | None: ...
    @overload
    def require(
        self, field: str, type: Literal["file"], **options: Unpack[FileOptions]
    ) -> FileStorage | None: ...
    def require(self, field: str, type: object = str, **options: Any) -> Any:
        """A required value of ``type``: ``str``, ``int``, ``bool``, an Enum class,
        ``"enum"`` (with ``choices``), ``"url"``, ``"email"`` or ``"file"``."""
        return self._by_type(field, type, required=True, default=None, options=options)

    @overload
    def optional(
        self,
        field: str,
        type: type[_E],
        *,
        default: _E | None = ...,
        **options: Unpack[CommonOptions],
    ) -> _E | None: ...
    @overload
    def optional(
        self,
        field: str,
        type: type[str] = ...,
        *,
        default: str | None = ...,
        **options: Unpack[StringOptions],
    ) -> str | None: ...
    @overload
    def optional(
        self,
        field: str,
        type: type[bool],
        *,
        default: bool | None = ...,
        **options: Unpack[CommonOptions],
    ) -> bool | None: ...
    @overload
    def optional(
        self,
        field: str,
        type: type[int],
        *,
        default: int | None = ...,
        **options: Unpack[IntOptions],
    ) -> int | None: ...
    @overload
    def optional(
        self,
        field: str,
        type: Literal["enum"],
        *,
        choices: Sequence[str],
        default: str | None = ...,
        **options: Unpack[CommonOptions],
    ) -> str | None: ...
    @overload
    def optional(
        self,
        field: str,
        type: Literal["url"],
        *,
        default: str | None = ...,
        **options: Unpack[UrlOptions],
    ) -> str | None: ...
    @overload
    def optional(
        self,
        field: str,
        type: Literal["email"],
        *,
        default: str | None = ...,
        **options: Unpack[CommonOptions],
    ) -> str | None: ...
    @overload
    def optional(
        self, field: str, type: Literal["file"], **options: Unpack[FileOptions]
    ) -> FileStorage | None: ...
    def optional(
        self, field: str, type: object = str, *, default: Any = None, **options: Any
    ) -> Any:
        """An optional value of ``type`` (see :meth:`require`); ``default`` when missing."""
        return self._by_type(field, type, required=False, default=default, options=options)

    def _by_type(
        self, field: str, kind: object, *, required: bool, default: Any, options: dict[str, Any]
    ) -> Any:
        if kind == "file":
            return self.file(field, required=required, **options)
        if kind == "enum":
            choices = options.pop("choices")
            return self.enum(field, choices, required=required, default=default, **options)
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return self.enum(field, kind, required=required, default=default, **options)
        getters: dict[object, Any] = {
            str: self.string,
            bool: self.boolean,
            int: self.integer,
            "url": self.url,
            "email": self.email,
        }
        getter = getters.get(kind)
        if getter is None:
            raise TypeError(f"unsupported type for validation: {kind!r}")
        return getter(field, required=required, default=default, **options)


class ValidationFailed(Exception):
    """Raised by :meth:`Validation.raise_if_invalid`; carries the validation so an error
    handler can answer with :meth:`Validation.response` (or a view can re-render)."""

    def __init__(self, validation: Validation, *, status: int = 400) -> None:
        super().__init__("; ".join(err.reason for err in validation.errors))
        self.validation = validation
        self.status = status

    def response(self) -> Response:
        """The JSON error response for the carried validation."""
        return self.validation.response(self.status)
