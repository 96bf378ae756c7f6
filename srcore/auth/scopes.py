"""The scope grammar shared by OAuth grants and personal access tokens.

A scope reads ``SERVICE/NAME:ACCESS`` where ACCESS is ``RO`` (read only) or ``RW`` (read
and write), e.g. ``todo/tickets:RW``. ``RW`` satisfies ``RO`` of the same scope; a scope
of one service never satisfies a scope of another. Pure functions, no Flask.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

__all__ = ["Scope", "ScopeError", "format_scopes", "parse_scope", "parse_scopes", "satisfies"]

Access = Literal["RO", "RW"]

_SCOPE = re.compile(r"^([a-z][a-z0-9-]{0,30}[a-z0-9])/([a-z][a-z0-9_-]{0,62}):(RO|RW)$")


class ScopeError(ValueError):
    """A scope string that does not follow ``SERVICE/NAME:RO|RW``."""


@dataclass(frozen=True, order=True)
class Scope:
    """One parsed scope."""

    service: str
    name: str
    access: Access

    def __str__(self) -> str:
        return f"{self.service}/{self.name}:{self.access}"

    def satisfies(self, required: Scope) -> bool:
        """Whether holding this scope grants what *required* asks for."""
        if (self.service, self.name) != (required.service, required.name):
            return False
        return self.access == "RW" or required.access == "RO"


def parse_scope(text: str) -> Scope:
    """Parse one scope; raise :class:`ScopeError` naming the bad text."""
    match = _SCOPE.match(text)
    if match is None:
        raise ScopeError(f"invalid scope {text!r}: expected SERVICE/NAME:RO or SERVICE/NAME:RW")
    service, name, access = match.groups()
    return Scope(service, name, access)  # type: ignore[arg-type]


def parse_scopes(text: str | Iterable[str]) -> frozenset[Scope]:
    """Parse a space-separated scope string (as OAuth sends it) or an iterable of scopes."""
    items = text.split() if isinstance(text, str) else list(text)
    return frozenset(parse_scope(item) for item in items)


def format_scopes(scopes: Iterable[Scope]) -> str:
    """The space-separated form, sorted so equal sets give equal strings."""
    return " ".join(str(scope) for scope in sorted(set(scopes)))


def satisfies(granted: Iterable[Scope], required: Scope) -> bool:
    """Whether any of *granted* satisfies *required*."""
    return any(scope.satisfies(required) for scope in granted)
