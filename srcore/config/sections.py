"""A loaded config: :class:`Config` and its typed :class:`Section` objects.

This is what services read at run time, so it holds only converted values and where each
came from; how they were found and checked is :mod:`srcore.config.loader`'s business.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from srcore.config.keys import Key, format_value
from srcore.config.problems import Problem

__all__ = ["Config", "Section"]


@dataclass(frozen=True, eq=False)
class Section(Mapping[str, object]):
    """The typed values of one section. A key left unset has its default (often ``None``).

    Every declared key is present; ``source(key)`` tells where its value came from.
    """

    name: str
    _values: Mapping[str, object] = field(repr=False)
    _sources: Mapping[str, str] = field(repr=False)
    _keys: Mapping[str, Key] = field(repr=False)
    _lines: Mapping[str, int | None] = field(repr=False, default_factory=dict)
    _file: str = field(repr=False, default="")

    def __getitem__(self, key: str) -> object:
        try:
            return self._values[key]
        except KeyError:
            raise KeyError(
                f"[{self.name}] declares no key {key!r}; it has {', '.join(self._values)}"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        shown = {k: format_value(self._keys[k], v) for k, v in self._values.items()}
        return f"<Section [{self.name}] {shown!r}>"

    def source(self, key: str) -> str:
        """Where the value of *key* came from: ``config.ini:12``, ``env SRCORE__TODO__X``,
        ``file /run/secrets/x`` or ``default``."""
        self[key]
        return self._sources[key]

    def spec(self, key: str) -> Key:
        """The declaration of *key*."""
        self[key]
        return self._keys[key]

    def problem(
        self, key: str | None, message: str, *, severity: Literal["error", "warning"] = "error"
    ) -> Problem:
        """A :class:`Problem` about *key*, located where its value was set, for checks
        that span keys or services."""
        line = self._lines.get(key) if key is not None else self._lines.get("")
        return Problem(self._file, line, self.name, key, message, severity)


class Config:
    """A loaded, validated config file: ``[global]``, the services and their sub-sections."""

    def __init__(self, path: Path, sections: Mapping[str, Section], warnings: list[Problem]):
        self.path = path
        self.warnings = warnings
        self._sections = dict(sections)

    def __repr__(self) -> str:
        return f"<Config {str(self.path)!r} services={self.services!r}>"

    def section(self, name: str) -> Section:
        """The section *name* (``"todo"``, ``"todo::mail"``, ``"global"``)."""
        try:
            return self._sections[name]
        except KeyError:
            known = ", ".join(f"[{n}]" for n in self._sections)
            raise KeyError(f"{self.path} has no [{name}] section (it has {known})") from None

    @property
    def global_(self) -> Section:
        return self._sections["global"]

    @property
    def sections(self) -> list[str]:
        """Every section name: ``global``, the services, then their sub-sections."""
        return list(self._sections)

    @property
    def services(self) -> list[str]:
        """The service sections, in file order: the network is the file."""
        return [n for n in self._sections if n != "global" and "::" not in n]

    def has_service(self, name: str) -> bool:
        return name != "global" and "::" not in name and name in self._sections
