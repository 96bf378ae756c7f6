"""Validate an HTML form or a JSON body with one object and one error format.

Form views and API views read their input the same way, one call per field::

    valid = Validation()                 # the current request: query, JSON or form
    title = valid.require("title", max_length=256, text="line")
    priority = valid.optional("priority", int, min=1, max=5, default=3)
    labels = valid.optional("labels", list[str], max_items=10)
    valid.raise_if_invalid()

Every problem is recorded (so one answer lists them all) and :meth:`~Validation.
raise_if_invalid` raises :class:`ValidationFailed`, which srcore answers: the standard
JSON error body (``{"errors": [{"field": ..., "reason": ...}]}``) for the API, the form
page again for ``Validation.form("tracker_form.html", ...)``, an error page naming the
bad fields for a bad query string. Views never build error answers themselves.

A request's JSON body takes only what is read from it: before raising,
``raise_if_invalid`` records every key that no read asked for (nor :meth:`~Validation.
known` named) as an error naming it, so a misspelled field is a 400, not silently lost.
A view calls it after its last read and before its first write. Forms and query strings
are not checked: a page's form carries its submit button, CSRF token and such.

The rules themselves (:func:`parse_json_object`, :func:`coerce_string`, ...) are plain
functions over plain values that raise :class:`Invalid`; :class:`Validation` only finds
the submitted value, decides whether it is missing, and records what went wrong.

The package root is the API; behind it, :mod:`~srcore.validation.rules` holds the plain
rules, :mod:`~srcore.validation.validator` the :class:`Validation` object and
:mod:`~srcore.validation.options` the typed options of ``require()``/``optional()``.
"""

from __future__ import annotations

from srcore.validation.options import (
    CommonOptions,
    FileOptions,
    IntOptions,
    ListOptions,
    StringOptions,
    UrlOptions,
)
from srcore.validation.rules import (
    INT_MAX,
    INT_MIN,
    MAX_COMBINING_MARKS,
    MAX_EMAIL_LENGTH,
    MAX_LIST_ITEMS,
    MAX_STRING_LENGTH,
    MAX_URL_LENGTH,
    ErrorBody,
    ErrorItem,
    FieldError,
    Invalid,
    TextKind,
    coerce_bool,
    coerce_choice,
    coerce_email,
    coerce_int,
    coerce_string,
    coerce_strings,
    coerce_url,
    error_body,
    file_size,
    is_json_mimetype,
    parse_json_object,
)
from srcore.validation.validator import (
    MAX_UNKNOWN_NAME,
    MAX_UNKNOWN_NAMED,
    Source,
    Validation,
    ValidationFailed,
)

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_COMBINING_MARKS",
    "MAX_EMAIL_LENGTH",
    "MAX_LIST_ITEMS",
    "MAX_STRING_LENGTH",
    "MAX_UNKNOWN_NAME",
    "MAX_UNKNOWN_NAMED",
    "MAX_URL_LENGTH",
    "CommonOptions",
    "ErrorBody",
    "ErrorItem",
    "FieldError",
    "FileOptions",
    "IntOptions",
    "Invalid",
    "ListOptions",
    "Source",
    "StringOptions",
    "TextKind",
    "UrlOptions",
    "Validation",
    "ValidationFailed",
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
