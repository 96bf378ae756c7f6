"""Config keys: how one key is declared, and how its values are read and written.

A :class:`Key` is the unit every declaration is made of, by srcore and by each service's
manifest. Its values are written by operators in an INI file or an environment variable,
so parsing is strict and every error message is meant for the operator, naming what was
expected; formatting is the inverse, used to show a config back (secrets masked).
"""

from __future__ import annotations

import configparser
import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

from srcore.config.masking import mask_url, mask_urls

__all__ = [
    "ENV_PREFIX",
    "KEY_TYPES",
    "Key",
    "KeyType",
    "env_name",
    "format_duration",
    "format_value",
    "parse_duration",
    "parse_value",
]

KeyType = Literal["str", "int", "bool", "duration", "url", "path", "enum", "list"]
KEY_TYPES: tuple[str, ...] = get_args(KeyType)

#: Prefix of environment variables that override config values.
ENV_PREFIX = "SRCORE__"

_KEY_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_DURATION = re.compile(
    r"^\s*(?:(?P<d>[0-9]+)\s*d)?\s*(?:(?P<h>[0-9]+)\s*h)?\s*"
    r"(?:(?P<m>[0-9]+)\s*m)?\s*(?:(?P<s>[0-9]+)\s*s)?\s*(?:(?P<ms>[0-9]+)\s*ms)?\s*$",
    re.IGNORECASE,
)
#: A capital M in a duration: minutes to the parser, but often meant as months ("6M").
_MONTHS = re.compile(r"[0-9]\s*M(?![sS])")
_INT = re.compile(r"^[+-]?[0-9]+$")
#: A whole number written with a unit (16MB, 30s) where the key takes the number alone.
_WITH_UNIT = re.compile(r"^\s*[+-]?[0-9][0-9_.,]*\s*[A-Za-z]+\s*$")
#: Digits a number may have: more is a typo, and Python refuses to read a few thousand.
_MAX_DIGITS = 18
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_BOOLEANS = configparser.RawConfigParser.BOOLEAN_STATES
_MASK = "********"


@dataclass(frozen=True)
class Key:
    """The declaration of one config key: its name, type, default and documentation.

    *default* is already typed (an ``int``, a ``timedelta``, a tuple for lists); a string
    default of a duration, path or list key is converted. *check* is an extra rule run on
    a value the operator set; it returns a problem message or ``None``.
    """

    name: str
    type: KeyType = "str"
    default: object = None
    required: bool = False
    secret: bool = False
    help: str = ""
    choices: tuple[str, ...] = ()
    check: Callable[[object], str | None] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if not _KEY_NAME.match(self.name):
            raise ValueError(f"key name {self.name!r} must be lower-case words joined by '-'")
        if self.type not in KEY_TYPES:
            raise ValueError(f"key {self.name!r}: type must be one of {', '.join(KEY_TYPES)}")
        if self.type == "enum" and not self.choices:
            raise ValueError(f"key {self.name!r}: an enum key needs choices")
        if isinstance(self.default, str) and self.type in ("duration", "path", "list"):
            object.__setattr__(self, "default", parse_value(self, self.default))
        elif isinstance(self.default, list):
            object.__setattr__(self, "default", tuple(str(item) for item in self.default))
        if self.type == "enum" and self.default is not None and self.default not in self.choices:
            raise ValueError(f"key {self.name!r}: default {self.default!r} is not a choice")


def parse_duration(text: str) -> timedelta:
    """Parse ``30s``, ``5m``, ``1h``, ``2d``, ``200ms`` or a combination like ``1h30m``.

    Raises :class:`ValueError` with a message meant for the operator.
    """
    match = _DURATION.match(text)
    if match is not None and _MONTHS.search(text):
        raise ValueError(
            f"ambiguous duration: {_shown(text)}: M is read as minutes, not months; write m "
            "for minutes, or months in days (30d)"
        )
    if not text.strip() or match is None:
        raise ValueError(
            f"not a duration: {_shown(text)} (use a number and a unit: 30s, 5m, 1h, 2d, or 1h30m)"
        )
    numbers = {unit: n.lstrip("0") or "0" for unit, n in match.groupdict().items() if n}
    if any(len(n) > _MAX_DIGITS for n in numbers.values()):
        raise ValueError(f"duration too long: {_shown(text)}")
    parts = {unit: int(n) for unit, n in numbers.items()}
    try:
        return timedelta(
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
            milliseconds=parts.get("ms", 0),
        )
    except OverflowError:
        raise ValueError(f"duration too long: {_shown(text)}") from None


def _shown(text: str, limit: int = 60) -> str:
    """*text* quoted for a message, cut short: a value pasted by mistake can be huge."""
    return (
        repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"
    )


def format_duration(value: timedelta) -> str:
    """Write *value* the way :func:`parse_duration` reads it (``1h30m``, ``0s``)."""
    milliseconds = round(value.total_seconds() * 1000)
    out = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000), ("ms", 1)):
        amount, milliseconds = divmod(milliseconds, size)
        if amount:
            out.append(f"{amount}{unit}")
    return "".join(out) or "0s"


def _parse_url(text: str) -> str:
    if any(c.isspace() for c in text):
        raise ValueError(f"not a URL: {text!r} contains whitespace")
    if not text.isprintable():
        raise ValueError(f"not a URL: {text!r} contains a control or invisible character")
    if not _URL_SCHEME.match(text):
        raise ValueError(f"not a URL: {text!r} (expected scheme://..., e.g. https://example.org)")
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"not a URL: {text!r} ({exc})") from None
    if parts.scheme.lower() in ("http", "https") and not parts.hostname:
        raise ValueError(f"not a URL: {text!r} has no host")
    return text


def parse_value(key: Key, text: str) -> object:
    """Convert the text *text* to the type *key* declares.

    Raises :class:`ValueError` with a message meant for the operator. Empty text is not
    handled here: an empty value means "not set" and the caller applies the default.
    """
    if key.type == "str":
        return text
    if key.type == "int":
        if not _INT.match(text.strip()):
            unit = " (write the number alone, without a unit)" if _WITH_UNIT.match(text) else ""
            raise ValueError(f"not a whole number: {_shown(text)}{unit}")
        if len(text.strip().lstrip("+-").lstrip("0")) > _MAX_DIGITS:
            raise ValueError(f"not a whole number of at most {_MAX_DIGITS} digits: {_shown(text)}")
        return int(text.strip())
    if key.type == "bool":
        try:
            return _BOOLEANS[text.strip().lower()]
        except KeyError:
            raise ValueError(f"not a yes/no value: {text!r} (use true or false)") from None
    if key.type == "duration":
        return parse_duration(text)
    if key.type == "url":
        return _parse_url(text.strip())
    if key.type == "path":
        return Path(text.strip())
    if key.type == "enum":
        value = text.strip()
        if value not in key.choices:
            hint = _did_you_mean(value, key.choices)
            if value.lower() in key.choices:  # DEBUG, STARTTLS: the choices are lower case
                hint = f"did you mean {value.lower()!r}?"
            raise ValueError(
                f"{value!r} is not one of {', '.join(key.choices)}" + (f"; {hint}" if hint else "")
            )
        return value
    if key.type == "list":
        return tuple(item.strip() for item in re.split(r"[,\n]", text) if item.strip())
    raise ValueError(f"unknown key type {key.type!r}")


def format_value(key: Key, value: object, *, redact: bool = True) -> str:
    """Write *value* the way it would be written in the file; secrets are masked.

    Passwords inside URLs are masked too: a database or broker URL is not secret as a
    whole (its user and host help whoever reads it), only its password is.
    """
    if value is None:
        return ""
    if key.secret and redact:
        return _MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        text = ", ".join(str(item) for item in value)
    elif isinstance(value, str) and key.type == "url" and redact:
        return mask_url(value)
    else:
        text = str(value)
    return mask_urls(text) if redact else text


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides *key* of *section*.

    ``("todo", "database-url")`` gives ``SRCORE__TODO__DATABASE_URL``;
    ``("todo::mail", "smtp-host")`` gives ``SRCORE__TODO__MAIL__SMTP_HOST``.
    """
    parts = [*section.split("::"), key]
    return ENV_PREFIX + "__".join(re.sub(r"[^A-Za-z0-9]", "_", p).upper() for p in parts)


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not close and word:
        close = [c for c in candidates if c.startswith(word)]
    return f"did you mean {close[0]!r}?" if len(close) == 1 else ""
