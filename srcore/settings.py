"""Typed settings: a service's config section read once into a frozen dataclass.

A service declares the keys it reads in ``service.yaml`` and, in code, one dataclass
whose fields are those keys with ``_`` for ``-``::

    @dataclass(frozen=True)
    class Settings:
        pastes_per_page: int
        max_paste_length: int

    settings(Settings).pastes_per_page

The section is read into it once per app, checking that every field names a declared key
and that each value has the field's type; a read site then needs no coercion, and a
misspelt setting is an ``AttributeError`` (and a mypy error), not a silent default.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from typing import Any, TypeVar

from flask import Flask, current_app

__all__ = ["SettingsError", "settings"]

_S = TypeVar("_S")
_EXTENSION = "srcore.settings"


class SettingsError(TypeError):
    """A settings class that does not match its service's config declarations."""


def _conforms(value: object, hint: Any) -> bool:
    """Whether *value* has the type *hint* (the kinds a config value can have)."""
    if hint is Any or hint is object:
        return True
    origin = typing.get_origin(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(_conforms(value, arg) for arg in typing.get_args(hint))
    if hint is None or hint is type(None):
        return value is None
    if origin in (list, tuple, frozenset, set):
        args = typing.get_args(hint)
        if not isinstance(value, list | tuple | frozenset | set):
            return False
        item = args[0] if args else Any
        return all(_conforms(v, item) for v in value)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return isinstance(value, hint)
    return isinstance(hint, type) and isinstance(value, hint)


def _convert(value: object, hint: Any) -> object:
    """A config list (a tuple) becomes the field's collection type; the rest is as is."""
    origin = typing.get_origin(hint)
    if origin in (list, frozenset, set) and isinstance(value, tuple | list):
        return origin(value)
    if isinstance(hint, type) and issubclass(hint, enum.Enum) and isinstance(value, str):
        return hint(value)
    return value


def _load(app: Flask, cls: type[_S]) -> _S:
    from srcore.service import state

    if not dataclasses.is_dataclass(cls):
        raise SettingsError(f"{cls.__qualname__} must be a dataclass")
    section = state(app).section
    hints = typing.get_type_hints(cls)
    values: dict[str, object] = {}
    for spec in dataclasses.fields(cls):
        key = spec.metadata.get("key", spec.name.replace("_", "-"))
        if key not in section:
            raise SettingsError(
                f"{cls.__qualname__}.{spec.name} reads [{section.name}] {key}, "
                f"which the service does not declare (it declares {', '.join(section)})"
            )
        hint = hints[spec.name]
        try:
            value = _convert(section[key], hint)
        except ValueError:
            value = section[key]
        if not _conforms(value, hint):
            raise SettingsError(
                f"{cls.__qualname__}.{spec.name} is {hint}, but [{section.name}] {key} "
                f"holds {type(value).__name__} {value!r}"
            )
        values[spec.name] = value
    return cls(**values)


def settings(cls: type[_S], app: Flask | None = None) -> _S:
    """The current service's config section as a *cls* (a dataclass), read on first use
    and kept on the app; :class:`SettingsError` if *cls* does not match the declarations.
    """
    app = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
    cache: dict[type[Any], Any] = app.extensions.setdefault(_EXTENSION, {})
    found = cache.get(cls)
    if found is None:
        found = cache[cls] = _load(app, cls)
    return typing.cast("_S", found)
