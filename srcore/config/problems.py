"""What is wrong with a config file, and the one exception that carries all of it.

Loading collects every problem before failing, so an operator sees the whole list at
once; each :class:`Problem` is located by file, line, section and key.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from srcore.config.masking import mask_urls

__all__ = ["ConfigError", "Problem"]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located as precisely as the file allows."""

    file: str
    line: int | None
    section: str | None
    key: str | None
    message: str
    severity: Literal["error", "warning"] = "error"

    def __post_init__(self) -> None:
        # Messages quote the values they refuse; a quoted URL must not carry its password
        # to the terminal or a log.
        object.__setattr__(self, "message", mask_urls(self.message))

    def __str__(self) -> str:
        where = self.file
        if self.line is not None:
            where = f"{where}:{self.line}"
        if self.section is not None:
            where = f"{where} [{self.section}]"
        if self.key is not None:
            where = f"{where} {self.key}"
        message = self.message if self.severity == "error" else f"warning: {self.message}"
        return f"{where}: {message}" if where else message


class ConfigError(Exception):
    """The config cannot be used. Carries every problem found, errors and warnings."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__(self.problems)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    def __str__(self) -> str:
        errors = self.errors
        if len(self.problems) == 1:
            return str(self.problems[0])
        head = f"{len(errors)} error{'s' if len(errors) != 1 else ''} in the config"
        return "\n".join([f"{head}:", *(f"  {p}" for p in self.problems)])
