"""Reading the INI text: configparser's grammar, with the line numbers it forgets.

configparser decides what a valid file is, but stops at the first error and keeps no
line numbers; the scanner here reads the same grammar, keeps going after every error and
remembers where each section and key is, so every problem can name its line. Internal to
:mod:`srcore.config`: the loader is its only user.
"""

from __future__ import annotations

import configparser
import io
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from srcore.config.problems import Problem

__all__: list[str] = []

_COMMENT_PREFIXES = ("#", ";")
_INLINE_COMMENT_PREFIXES = ("#", ";")
# An indented line continues the value above it; one that reads like ``key = value`` was
# almost always meant as a key of its own (a tab pasted in front of it).
_INDENTED_KEY = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9_-]*)\s*=")


@dataclass
class _Parsed:
    """What the file holds, with line numbers configparser does not keep."""

    sections: dict[str, int] = field(default_factory=dict)  # name -> header line
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    lines: dict[tuple[str, str], int] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _new_parser() -> configparser.RawConfigParser:
    # "\n" can never be a section header, so no section gets DEFAULT's special powers.
    return configparser.RawConfigParser(
        interpolation=None,
        comment_prefixes=_COMMENT_PREFIXES,
        inline_comment_prefixes=_INLINE_COMMENT_PREFIXES,
        empty_lines_in_values=False,
        strict=True,
        default_section="\n",
    )


def _comment_start(line: str) -> int | None:
    """Where a comment starts on *line*, found exactly as configparser finds it."""
    start = sys.maxsize
    prefixes = {p: -1 for p in _INLINE_COMMENT_PREFIXES}
    while start == sys.maxsize and prefixes:
        found = {}
        for prefix, index in prefixes.items():
            index = line.find(prefix, index + 1)
            if index == -1:
                continue
            found[prefix] = index
            if index == 0 or (index > 0 and line[index - 1].isspace()):
                start = min(start, index)
        prefixes = found
    if line.strip().startswith(_COMMENT_PREFIXES):
        return 0
    return None if start == sys.maxsize else start


def _scan(text: str, file: str) -> _Parsed:
    """Read *text* with configparser's grammar, but keep going after every error and keep
    the line of every section and key."""
    out = _Parsed()

    def report(line: int, section: str | None, key: str | None, message: str) -> None:
        out.problems.append(Problem(file, line, section, key, message))

    section: str | None = None
    option: str | None = None
    indent = 0
    pending: dict[tuple[str, str], list[str]] = {}
    for lineno, line in enumerate(io.StringIO(text), start=1):
        value = line[: _comment_start(line)].strip()
        if not value:
            indent = sys.maxsize
            continue
        first = configparser.RawConfigParser.NONSPACECRE.search(line)
        current_indent = first.start() if first else 0
        if section is not None and option and current_indent > indent:
            pending[(section, option)].append(value)
            indented = _INDENTED_KEY.match(value)
            if indented:
                where = out.lines[(section, option)]
                report(
                    lineno,
                    section,
                    option,
                    f"the indented line '{indented.group('name')} = ...' is read as more of "
                    f"the value of {option} (line {where}): remove the indentation to set "
                    f"{indented.group('name')}",
                )
            continue
        indent = current_indent
        header = configparser.RawConfigParser.SECTCRE.match(value)
        if header:
            section, option = header.group("header"), None
            if section in out.sections:
                where = out.sections[section]
                report(lineno, section, None, f"duplicate section: [{section}] is at line {where}")
            else:
                out.sections[section] = lineno
                out.values[section] = {}
            if header.end() != len(value):
                report(lineno, section, None, f"text after the header: {value[header.end() :]!r}")
        elif section is None:
            if not out.problems:
                # Quoted, so that what cannot be seen (a second byte-order mark, a
                # zero-width space before "[global]") can be.
                report(lineno, None, None, f"text before the first [section] header: {value!r}")
        else:
            match = configparser.RawConfigParser.OPTCRE.match(value)
            name = match.group("option").rstrip().lower() if match else ""
            if match is None or not name:
                what = "no key name before '='" if match else "not a 'key = value' line"
                report(lineno, section, None, f"{what}: {value!r}")
                option = option if match is None else None
                continue
            if (section, name) in pending:
                where = out.lines[(section, name)]
                report(lineno, section, name, f"duplicate key: already set at line {where}")
            option = name
            pending[(section, name)] = [match.group("value").strip()]
            out.lines[(section, name)] = lineno
    for (sect, name), parts in pending.items():
        out.values[sect][name] = "\n".join(parts).rstrip()
    return out


def _parse(text: str, file: str) -> _Parsed:
    """Parse *text*: configparser decides what a valid file means, :func:`_scan` finds
    every error and every line."""
    parsed = _scan(text, file)
    parser = _new_parser()
    try:
        parser.read_string(text, source=file)
    except configparser.Error as exc:
        if not any(p.severity == "error" for p in parsed.problems):
            parsed.problems.append(_from_configparser(exc, file))
        return parsed
    parsed.values = {name: dict(parser.items(name)) for name in parser.sections()}
    return parsed


def _from_configparser(exc: configparser.Error, file: str) -> Problem:
    if isinstance(exc, configparser.ParsingError) and exc.errors:
        first, line = exc.errors[0]
        return Problem(file, first, None, None, f"cannot parse the line {line}")
    lineno = getattr(exc, "lineno", None)
    section = getattr(exc, "section", None)
    option = getattr(exc, "option", None)
    return Problem(
        file,
        lineno if isinstance(lineno, int) else None,
        section if isinstance(section, str) else None,
        option if isinstance(option, str) else None,
        exc.message.splitlines()[0] if exc.message else type(exc).__name__,
    )


def _read_text(path: Path, file: str) -> tuple[str | None, Problem | None]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        return None, Problem(file, None, None, None, f"cannot read the file: {exc.strerror}")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        return None, Problem(file, line, None, None, f"not UTF-8 text: {exc.reason}")
    return text.replace("\r\n", "\n").replace("\r", "\n"), None
