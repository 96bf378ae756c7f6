"""The keyword options :meth:`~srcore.validation.Validation.require` and
:meth:`~srcore.validation.Validation.optional` accept, one :class:`~typing.TypedDict` per
type, so a type checker rejects an option that does not apply (``max_length`` on an int).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import NotRequired, Required, TypedDict

from srcore.validation.rules import TextKind

__all__ = [
    "CommonOptions",
    "FileOptions",
    "IntOptions",
    "ListOptions",
    "StringOptions",
    "UrlOptions",
]


class CommonOptions(TypedDict, total=False):
    label: str


class StringOptions(CommonOptions, total=False):
    min_length: int
    max_length: int | None
    strip: bool
    text: TextKind


class IntOptions(CommonOptions, total=False):
    min: int | None
    max: int | None


class ListOptions(CommonOptions, total=False):
    max_items: int | None
    max_length: int | None
    split: bool


class UrlOptions(CommonOptions, total=False):
    max_length: int
    schemes: Collection[str]


class FileOptions(TypedDict):
    max_size: Required[int]
    label: NotRequired[str]
