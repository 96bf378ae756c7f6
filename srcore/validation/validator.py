"""The :class:`Validation` object: the Flask glue between a request and the rules.

It decides where a request's input is (query string, JSON body or form), whether a field
is missing, and records every problem, so one answer lists them all; ``raise_if_invalid``
then raises :class:`ValidationFailed`, which srcore answers with a 400 (never a 500).
``require()``/``optional()`` are the one way to read a value; the per-type steps behind
them are private. The conversions themselves are :mod:`srcore.validation.rules`.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from typing import Any, Literal, NoReturn, TypeVar, Unpack, cast, overload

from flask import Request, Response
from flask import request as current_request
from werkzeug.datastructures import FileStorage

from srcore.validation.options import (
    CommonOptions,
    FileOptions,
    IntOptions,
    ListOptions,
    StringOptions,
    UrlOptions,
)
from srcore.validation.rules import (
    MAX_URL_LENGTH,
    FieldError,
    Invalid,
    TextKind,
    _check_file,
    coerce_bool,
    coerce_choice,
    coerce_email,
    coerce_int,
    coerce_string,
    coerce_strings,
    coerce_url,
    error_body,
    is_json_mimetype,
    parse_json_object,
)

__all__ = ["MAX_UNKNOWN_NAME", "MAX_UNKNOWN_NAMED", "Source", "Validation", "ValidationFailed"]

Source = Literal["form", "json"]
_E = TypeVar("_E", bound=enum.Enum)
_T = TypeVar("_T")

_FORM_MIMETYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def _label(field: str) -> str:
    text = field.replace("_", " ").replace("-", " ").strip() or field
    return text[:1].upper() + text[1:]


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()

#: At most this many unknown fields are named one by one; the rest are counted.
MAX_UNKNOWN_NAMED = 20
#: An unknown field's name is shown (as its ``field`` and in its reason) cut to this length.
MAX_UNKNOWN_NAME = 128


class _NotedReads(Mapping[str, Any]):
    """A JSON object body that notes each key read from it (``get`` or ``[]``); asking
    whether a key is there (``in``) is no read. What was never read is unknown."""

    def __init__(self, body: dict[str, Any]) -> None:
        self._body = body
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return self._body[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self._body.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in self._body

    def __iter__(self) -> Iterator[str]:
        return iter(self._body)

    def __len__(self) -> int:
        return len(self._body)


def _shown_name(key: str) -> str:
    return key if len(key) <= MAX_UNKNOWN_NAME else key[: MAX_UNKNOWN_NAME - 1] + "\u2026"


# -- the glue --------------------------------------------------------------------------------


class Validation:
    """The submitted values of one request and the problems found with them.

    ``Validation()`` (or ``Validation(request)``) reads the current request: the query
    string of a ``GET`` or ``HEAD``, the JSON body of a request with a JSON content type,
    and the form (with its files) otherwise; a body with no content type at all is an
    error (no body is an empty form).
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
        #: Fields the view takes though it did not read them this time (see :meth:`known`).
        self._known: set[str] = set()
        #: Whether :meth:`finish` has recorded the unknown fields of a JSON object body.
        self._finished = False
        #: Set when the body could not be read at all: its error says so, and no field of it
        #: is then also "required" (which would bury that one error under a list).
        self._unread = False
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
                self._data = _NotedReads(parse_json_object(request.get_data(cache=True)))
            except Invalid as exc:
                self.error(exc.reason)
                self._unread = True
            return
        self.source = "form"
        if not request.mimetype and request.get_data(cache=True).strip():
            # Nothing says how to read it: taken as an empty form, what it holds (JSON sent
            # without its Content-Type, say) would be lost and every default applied.
            self.error("The request body has no Content-Type; send a form or JSON.")
            self._unread = True
        elif not request.mimetype or request.mimetype in _FORM_MIMETYPES:
            self._data = request.form
            self._files = request.files
        else:
            self.error(f"Unsupported content type {request.mimetype}; send a form or JSON.")
            self._unread = True

    #: The form page shown again when this validation fails (see :meth:`form`): its
    #: template, and a function giving the template's context.
    page: tuple[str, Callable[[], Mapping[str, Any]]] | None = None

    @classmethod
    def form(
        cls,
        template: str,
        build: Callable[[], Mapping[str, Any]] | None = None,
        /,
        **context: Any,
    ) -> Validation:
        """Validate the current request's form; when it fails, *template* is rendered
        again with ``valid`` (this object) and *context*, with status 400.

        *build*, if given, is called only then, for context that costs queries.
        The one place a form page names itself, so its view needs no error branch.
        """
        valid = cls()
        valid.page = (template, lambda: {**(build() if build else {}), **context})
        return valid

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

    def known(self, *fields: str) -> None:
        """Say that this request takes *fields* though the view did not read them this time
        (one read only when another field has some value): sent, they are not unknown."""
        self._known.update(fields)

    def unknown_fields(self) -> list[str]:
        """The keys of a JSON object body that nothing read, nor :meth:`known` named, and
        that have no error of their own yet: their values would be silently lost.

        Only a request's JSON body has unknown fields: a form from a page carries its
        submit button, CSRF token and such, and a query string is not a body.
        """
        if not isinstance(self._data, _NotedReads):
            return []
        ignored = self._data.read | self._known | {err.field for err in self.errors}
        return [key for key in self._data if key not in ignored]

    def finish(self) -> None:
        """Reading is done: record an error for each unknown field (:meth:`unknown_fields`)
        of a JSON object body, so a client that misspells or invents a field learns that
        nothing took it instead of believing its change was made.

        :meth:`raise_if_invalid` calls it, so every write a view makes after raising sees
        no unknown field; a view that does something between its reads and that call
        (a check answered with another status, say) calls it first. Once is enough.
        """
        if self._finished:
            return
        self._finished = True
        unknown = self.unknown_fields()
        for key in unknown[:MAX_UNKNOWN_NAMED]:
            shown = _shown_name(key)
            self.error(
                f"Unknown field {json.dumps(shown, ensure_ascii=False)}: this request "
                "takes no such field; remove it (or check its spelling).",
                shown,
            )
        more = len(unknown) - MAX_UNKNOWN_NAMED
        if more > 0:
            self.error(f"{more} more unknown fields were sent; this request takes none of them.")

    def raise_if_invalid(self, *, status: int = 400) -> None:
        """Raise :class:`ValidationFailed` if any error was recorded, once reading is done
        (:meth:`finish`: a JSON body's unknown fields are errors too).

        srcore answers it: the form page again (:meth:`form`), the standard JSON error
        body (API), or an error page naming the bad fields (a bad query string).
        Call it after the last read and before the first write.
        """
        self.finish()
        if self.errors:
            raise ValidationFailed(self, status=status)

    def fail(self, reason: str, field: str | None = None, *, status: int = 400) -> NoReturn:
        """Record ``reason`` and raise :class:`ValidationFailed` with every error so far;
        *status* is the API's (a form page shown again is always a 400)."""
        self.error(reason, field)
        raise ValidationFailed(self, status=status)

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

    def _uploaded(self, field: str, label: str | None) -> bool:
        """Whether a multipart form sent *field*, which is not a file, as a file: recorded
        as an error, not read as missing (a misleading "required", or a silent default)."""
        if field not in self._files:
            return False
        self.error(f"{label or _label(field)} must be text, not a file.", field)
        return True

    def _one(self, field: str, label: str | None) -> object:
        """The one value of *field*, or ``_MISSING`` with an error when a form or query string
        sent it more than once: which copy counts is a guess a proxy or a check in front may
        make otherwise (as a JSON object's repeated key, which is refused when it is read)."""
        if self._uploaded(field, label):
            return _MISSING
        getlist = getattr(self._data, "getlist", None)
        if callable(getlist) and len(getlist(field)) > 1:
            self.error(f"{label or _label(field)} was sent more than once; send it once.", field)
            return _MISSING
        return self._data.get(field)

    def _required(self, field: str, label: str | None) -> None:
        """Record that *field* is required, unless the body could not be read at all."""
        if not self._unread:
            self.error(f"{label or _label(field)} is required.", field)

    def _take(self, field: str, *, required: bool, label: str | None) -> object:
        """The raw value, or ``_MISSING`` (recording an error if it was required)."""
        raw = self._one(field, label)
        if raw is _MISSING:
            return _MISSING
        if raw is None or (isinstance(raw, str) and (raw == "" or raw.isspace())):
            if required:
                self._required(field, label)
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

    def _string(
        self,
        field: str,
        *,
        required: bool = False,
        default: str | None = None,
        min_length: int = 0,
        max_length: int | None = None,
        strip: bool = True,
        text: TextKind = "multiline",
        label: str | None = None,
    ) -> str | None:
        """A string, stripped unless ``strip=False``; at most :data:`MAX_STRING_LENGTH` long.

        ``text="line"`` (a title) or ``text="name"`` (an application's name) refuses what
        would show it as other text than it is (see :func:`coerce_string`).

        Multiline text from a form has its CRLF line breaks read as LF: a browser sends
        every line break of a textarea as CRLF, so the text someone typed is the same,
        and as long, as the same text sent as JSON (an edit that changes nothing changes
        nothing, and a length limit counts one character per line break).
        """

        def convert(raw: object) -> str:
            if self.source == "form" and text == "multiline" and isinstance(raw, str):
                raw = raw.replace("\r\n", "\n")
            return coerce_string(
                raw, min_length=min_length, max_length=max_length, strip=strip, text=text
            )

        return self._coerce(field, required=required, default=default, label=label, convert=convert)

    def _integer(
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

    def _boolean(
        self,
        field: str,
        *,
        required: bool = False,
        default: bool | None = None,
        label: str | None = None,
    ) -> bool | None:
        """A boolean; in a form an absent or empty field is ``False`` (unchecked box)."""
        if self.source == "form":
            raw = self._one(field, label)
            if raw is _MISSING:
                return None
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
    def _enum(
        self,
        field: str,
        choices: type[_E],
        *,
        required: bool = ...,
        default: _E | None = ...,
        label: str | None = ...,
    ) -> _E | None: ...
    @overload
    def _enum(
        self,
        field: str,
        choices: Sequence[str],
        *,
        required: bool = ...,
        default: str | None = ...,
        label: str | None = ...,
    ) -> str | None: ...
    def _enum(
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

    def _url(
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

    def _email(
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

    def _strings(
        self,
        field: str,
        *,
        required: bool = False,
        default: list[str] | None = None,
        max_items: int | None = None,
        max_length: int | None = None,
        split: bool = False,
        label: str | None = None,
    ) -> list[str] | None:
        """A list of strings: a JSON array, or every value of a repeated form or query field."""
        if self._uploaded(field, label):
            return None
        getlist = getattr(self._data, "getlist", None)
        raw: object = getlist(field) if callable(getlist) else self._data.get(field)
        try:
            items = (
                None
                if raw is None
                else coerce_strings(raw, max_items=max_items, max_length=max_length, split=split)
            )
        except Invalid as exc:
            self._fail(field, exc)
            return None
        if not items:
            if required:
                self._required(field, label)
            return default
        return items

    def _file(
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
        getlist = getattr(self._files, "getlist", None)
        sent = len(getlist(field)) if callable(getlist) else int(field in self._files)
        if sent > 1 or (sent and field in self._data):  # a text copy beside the file, too
            self.error(f"{label or _label(field)} was sent more than once; send one file.", field)
            return None
        raw: object = self._files.get(field)
        if raw is None:
            raw = self._one(field, label)
            if raw is _MISSING:
                return None
        if raw is None or (isinstance(raw, FileStorage) and not raw.filename):
            if required:
                self._required(field, label)
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
        self, field: str, type: type[list[str]], **options: Unpack[ListOptions]
    ) -> list[str] | None: ...
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
        """A required value of ``type``: ``str``, ``int``, ``bool``, ``list[str]``, an Enum
        class, ``"enum"`` (with ``choices``), ``"url"``, ``"email"`` or ``"file"``.

        A missing or bad value is recorded and gives None; the view goes on reading, so
        one answer lists every problem, and :meth:`raise_if_invalid` ends it.
        """
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
        type: type[list[str]],
        *,
        default: list[str] | None = ...,
        **options: Unpack[ListOptions],
    ) -> list[str] | None: ...
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
            return self._file(field, required=required, **options)
        if kind == "enum":
            choices = options.pop("choices")
            return self._enum(field, choices, required=required, default=default, **options)
        if isinstance(kind, type) and issubclass(kind, enum.Enum):
            return self._enum(field, kind, required=required, default=default, **options)
        getters: dict[object, Any] = {
            str: self._string,
            bool: self._boolean,
            int: self._integer,
            "url": self._url,
            "email": self._email,
            list: self._strings,
            list[str]: self._strings,
        }
        getter = getters.get(kind)
        if getter is None:
            raise TypeError(f"unsupported type for validation: {kind!r}")
        return getter(field, required=required, default=default, **options)


class ValidationFailed(Exception):
    """Raised by :meth:`Validation.raise_if_invalid` and :meth:`Validation.fail`; srcore's
    error handler answers it, so a view never returns an error itself."""

    def __init__(self, validation: Validation, *, status: int = 400) -> None:
        super().__init__("; ".join(err.reason for err in validation.errors))
        self.validation = validation
        self.status = status

    def response(self) -> Response:
        """A JSON response with the standard error body of the carried errors: the one
        place that body is made, so a view cannot answer bad input any other way."""
        body = json.dumps(error_body(self.validation.errors), ensure_ascii=False)
        return Response(body + "\n", status=self.status, mimetype="application/json")
