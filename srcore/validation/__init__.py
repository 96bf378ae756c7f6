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

The package root is the API; behind it, :mod:`~srcore.validation.rules` holds the plain
rules, :mod:`~srcore.validation.validator` the :class:`Validation` object and
:mod:`~srcore.validation.options` the typed options of ``require()``/``optional()``.
"""

from __future__ import annotations

from srcore.validation.options import (
    CommonOptions,
    FileOptions,
    IntOptions,
    StringOptions,
    UrlOptions,
)
from srcore.validation.rules import (
    INT_MAX,
    INT_MIN,
    MAX_EMAIL_LENGTH,
    MAX_STRING_LENGTH,
    MAX_URL_LENGTH,
    ErrorBody,
    ErrorItem,
    FieldError,
    Invalid,
    coerce_bool,
    coerce_choice,
    coerce_email,
    coerce_int,
    coerce_string,
    coerce_url,
    error_body,
    file_size,
    is_json_mimetype,
    parse_json_object,
)
from srcore.validation.validator import Source, Validation, ValidationFailed

__all__ = [
    "INT_MAX",
    "INT_MIN",
    "MAX_EMAIL_LENGTH",
    "MAX_STRING_LENGTH",
    "MAX_URL_LENGTH",
    "CommonOptions",
    "ErrorBody",
    "ErrorItem",
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
