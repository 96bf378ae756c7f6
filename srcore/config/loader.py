"""Finding the config file and loading it: file, environment and value files, checked.

Loading merges three sources into one :class:`~srcore.config.Config`: the INI file, the
``SRCORE__...`` environment overrides and ``*-file`` values, converting each against its
:class:`~srcore.config.Key` and recording where it came from. It never stops at the first
problem; everything wrong, including facts that span services (shared secrets, a missing
``[meta]``), is raised together as one :class:`~srcore.config.ConfigError`.
"""

from __future__ import annotations

import difflib
import grp
import os
import pwd
import re
import stat
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from srcore.config.database import resolve_sqlite_path, sqlite_file
from srcore.config.declarations import GLOBAL_KEYS, SERVICE_KEYS
from srcore.config.keys import (
    ENV_PREFIX,
    Key,
    _did_you_mean,
    env_name,
    format_duration,
    parse_value,
)
from srcore.config.problems import ConfigError, Problem
from srcore.config.scan import _parse, _Parsed, _read_text
from srcore.config.sections import Config, Section

__all__ = [
    "DEFAULT_PATHS",
    "FILE_SUFFIX",
    "MAX_VALUE_FILE_SIZE",
    "find_config_path",
    "load_config",
    "read_config",
]

#: Suffix of a key (``-file``) or environment variable (``_FILE``) naming a file to read.
FILE_SUFFIX = "-file"
#: Places looked at, in order, when no path is given and ``SRCORE_CONFIG`` is unset.
DEFAULT_PATHS: tuple[Path, ...] = (Path("config.ini"), Path("/etc/srcore/config.ini"))
#: Files named by ``*-file`` keys are secrets or short values, never large.
MAX_VALUE_FILE_SIZE = 64 * 1024

_SECTION_PART = r"[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?"
_SECTION_NAME = re.compile(rf"^{_SECTION_PART}(?:::{_SECTION_PART})?$")


def _not_a_file(path: Path) -> str:
    """Why *path* cannot be the config file: "no such file" for a directory would send
    the operator looking for a file that is there."""
    if path.is_dir():
        return "is a directory, not a config file: name the file in it (config.ini)"
    if path.exists():
        return "not a regular file: name the config file itself"
    return "no such config file"


def _name(lookup: Callable[[int], Any], number: int) -> str:
    """The name of a uid or gid, or the number when the database has none."""
    try:
        return str(lookup(number)[0])
    except KeyError:
        return str(number)


def _unreachable(path: Path) -> str:
    """Why this user cannot look at *path* (``stat`` said EACCES): the first directory on
    its way that it may not enter, with that directory's mode and owners."""
    blocked = next(
        (folder for folder in reversed(path.absolute().parents) if not os.access(folder, os.X_OK)),
        path.absolute().parent,
    )
    try:
        info = blocked.stat()
    except OSError:
        mode = ""
    else:
        owner = f"{_name(pwd.getpwuid, info.st_uid)}:{_name(grp.getgrgid, info.st_gid)}"
        mode = f" (mode {stat.S_IMODE(info.st_mode):04o}, {owner})"
    return (
        f"this user (uid {os.geteuid()}) may not enter {blocked}{mode}, so cannot read the "
        "config file: give it the directory's group (as the operator guide's "
        "0750 root:srcore does), or name a file it can read"
    )


def _is_file(path: Path) -> bool:
    """Whether *path* is a regular file; a :class:`ConfigError` naming the directory this
    user may not enter when it cannot look (``Path.is_file`` raises PermissionError)."""
    try:
        return path.is_file()
    except PermissionError:
        raise ConfigError([Problem(str(path), None, None, None, _unreachable(path))]) from None


def find_config_path(
    explicit: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """Find the config file: *explicit*, else ``$SRCORE_CONFIG``, else ``./config.ini``,
    else ``/etc/srcore/config.ini``.

    An explicit path or ``SRCORE_CONFIG`` must exist; nothing else is tried then. Raises
    :class:`ConfigError` naming every place looked at. A working directory this user may
    not enter (``sudo -u srcore`` run from root's home) holds no ``./config.ini`` for it.
    """
    environ = os.environ if environ is None else environ
    if explicit is not None and str(explicit) != "":
        path = Path(explicit)
        if not _is_file(path):
            raise ConfigError([Problem(str(path), None, None, None, _not_a_file(path))])
        return path
    from_env = environ.get("SRCORE_CONFIG")
    if from_env:
        path = Path(from_env)
        if not _is_file(path):
            message = f"{_not_a_file(path)} (from $SRCORE_CONFIG)"
            raise ConfigError([Problem(str(path), None, None, None, message)])
        return path
    for path in DEFAULT_PATHS:
        if not path.is_absolute() and not os.access(".", os.R_OK | os.X_OK):
            continue  # the working directory: not this user's to look in
        if _is_file(path):
            return path
    looked = ", ".join(str(p) for p in DEFAULT_PATHS)
    raise ConfigError(
        [
            Problem(
                "",
                None,
                None,
                None,
                f"no config file: looked for --config, $SRCORE_CONFIG (unset), {looked}",
            )
        ]
    )


def _read_value_file(path: Path) -> str:
    """The content of a ``*-file`` value; raises :class:`ValueError` naming the file."""
    try:
        if not path.is_file():
            reason = "not a regular file" if path.exists() else "no such file"
            raise ValueError(f"cannot read {path}: {reason}")
        with path.open("rb") as f:
            data = f.read(MAX_VALUE_FILE_SIZE + 1)
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_VALUE_FILE_SIZE:
        raise ValueError(f"cannot read {path}: larger than {MAX_VALUE_FILE_SIZE} bytes")
    try:
        return data.decode("utf-8").rstrip("\r\n")
    except UnicodeDecodeError:
        raise ValueError(f"cannot read {path}: not UTF-8 text") from None


def _carries_password(text: str) -> bool:
    """Whether *text* is a URL with a password in it (a database, Redis or broker URL)."""
    try:
        return bool(urlsplit(text.strip()).password)
    except ValueError:
        return False


def exposure(path: Path, *, secret: bool, name: str | None = None) -> str | None:
    """Who besides its owner (and group, for reading) can read or change *path*, with the
    command that stops them, in one line; ``None`` when no one can.

    A file of secrets readable by every user of the machine gives each of them the
    network's keys; one that others can write lets them choose the database, the keys and
    where mail goes. Group read is left alone (``0640`` with the service's user's group is
    the documented setting); srcore does not change the mode itself: the operator may mean
    it, and a chmod of a file srcore did not make would be a surprise. *name* is how the
    line calls the file (default: its path).
    """
    name = str(path) if name is None else name
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    if mode & 0o022:
        who = "every user of this machine" if mode & 0o002 else "its group"
        return f"{name} can be changed by {who} (mode {mode:04o}): chmod go-w {path}"
    if secret and mode & 0o004:
        return (
            f"{name} holds secrets and every user of this machine can read it "
            f"(mode {mode:04o}): chmod o-rwx {path}"
        )
    return None


def _others_write(folder: Path) -> str | None:
    """Who besides this user (and root) can make, replace or delete files in *folder*, and
    the command that stops them; ``None`` when no one can. Run as root, a directory of
    the service's user is as it should be."""
    try:
        info = folder.stat()
    except OSError:
        return None  # a missing directory is an error of its own
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        who = "every user of this machine" if mode & 0o002 else "its group"
        return f"{who} (mode {mode:04o}; chmod go-w {folder})"
    if os.geteuid() != 0 and info.st_uid not in (0, os.geteuid()):
        return f"its owner, another user (uid {info.st_uid}; use a directory of your own)"
    return None


def _file_exposure(path: Path, global_: Section, loader: _Loader) -> list[Problem]:
    """The config file itself, when others can change it or its directory, or (outside
    development, whose fresh secrets guard a network on 127.0.0.1) read its secrets."""
    real = global_["environment"] != "development"
    exposed = exposure(path, secret=loader.holds_secrets and real, name="this file")
    others = _others_write(path.absolute().parent)
    if exposed is None and others is not None:
        exposed = f"its directory can be written by {others}, who can put another file in its place"
    if exposed is None:
        return []
    return [Problem(loader.file, None, None, None, exposed, "warning")]


def _database_exposure(
    sections: Mapping[str, Section], failed: set[tuple[str, str]]
) -> list[Problem]:
    """Each SQLite database that other users can read or change, or whose directory they
    can write in: there they could put a ``-wal`` file of their own, which SQLite would
    take into the database at its next opening, or the database itself when the directory
    is not sticky."""
    problems: list[Problem] = []
    for name, section in sections.items():
        if name == "global" or "::" in name or (name, "database-url") in failed:
            continue
        file = sqlite_file(str(section["database-url"] or ""))
        if file is None:
            continue
        folder = file.absolute().parent
        others = _others_write(folder)
        if others is not None:
            message = (
                f"the directory {folder} of this database can be written by {others}, who "
                "can put files there that SQLite reads as the database's: keep it in a "
                "directory only the service's user can write"
            )
            problems.append(section.problem("database-url", message, severity="warning"))
            continue
        for path in (file, *(file.with_name(file.name + s) for s in ("-wal", "-shm"))):
            exposed = exposure(path, secret=True)
            if exposed is not None:
                problems.append(section.problem("database-url", exposed, severity="warning"))
                break
    return problems


# -- loading ------------------------------------------------------------------------------


def _undecodable(text: str) -> bool:
    """Whether *text* came from bytes that are not UTF-8: Python keeps such bytes of the
    environment as lone surrogates, which fail wherever the text is encoded again (a
    page, a signature, a log line), far from the variable that brought them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _printable(text: str) -> str:
    """*text* as it can be printed: bytes that are not UTF-8 written as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _undecodable_env_name(var: str) -> str:
    return (
        f"environment variable {_printable(var)}: its name is not UTF-8 text, so it names "
        "no key; ignored"
    )


def _miscased_env(var: str, known: Mapping[str, tuple[str, str]]) -> str:
    """The warning for *var*, a ``SRCORE__`` variable written in the wrong case: the
    environment is case-sensitive, and srcore reads upper-case names only."""
    upper = var.upper()
    hint = f": did you mean {upper}?" if upper in known else ""
    return (
        f"environment variable {_printable(var)} is ignored: srcore reads only upper-case "
        f"{ENV_PREFIX} names{hint}"
    )


def _unknown_env(
    var: str, sections: Mapping[str, object], known: Mapping[str, tuple[str, str]]
) -> tuple[str, bool]:
    """What is wrong with the ``SRCORE__`` variable *var*, and whether it is an error: a
    key of srcore's in the wrong kind of section is, as in the file (it would be ignored
    while the operator believes it set); a name matching no key is only reported."""
    if var.upper() in known:
        return _miscased_env(var, known), False
    message = f"environment variable {var} names no "
    section = max(
        (s for s in sections if var.startswith(env_name(s, "x")[:-1])), key=len, default=None
    )
    if section is None:
        return message + f"section of this file (it has {', '.join(sections)})", False
    prefix = env_name(section, "x")[:-1]
    part = var[len(prefix) :].removesuffix("_FILE")
    name = part.lower().replace("_", "-")
    if section == "global" and name in _SERVICE_NAMES:
        return (
            f"environment variable {var}: {name} belongs in each service's section, not "
            f"[global]: set {ENV_PREFIX}<SERVICE>__{part}",
            True,
        )
    if section != "global" and "::" not in section and name in _GLOBAL_NAMES:
        return (
            f"environment variable {var}: {name} belongs in [global]: it applies to every "
            f"service; set {env_name('global', name)}",
            True,
        )
    same = {v[len(prefix) :]: v for v, (s, _) in known.items() if s == section}
    close = difflib.get_close_matches(part, list(same), n=1, cutoff=0.6)
    hint = f"; did you mean {same[close[0]]!r}?" if close else ""
    return message + f"key of [{section}]" + hint, False


def _unknown_section(name: str, installed: Sequence[str] | None) -> tuple[str, bool] | None:
    """What is wrong with the service section *name*, and whether it is an error.

    A name close to ``global`` or to an installed service is a misspelling, and its keys
    would silently be lost: an error. A far one may be a service installed on another
    host of the network (its section is shared), so it is only reported. Without the
    list of installed services (a service loading the file for itself), only ``global``
    is compared.
    """
    if installed is not None and name in installed:
        return None
    candidates = ["global", *(installed or ())]
    # Spelled alike but for '-' and '_' (too alike for difflib to see in a short name):
    # the environment variables of both would be the same.
    alike = [c for c in candidates if env_name(c, "x") == env_name(name, "x")]
    if alike:
        prefix = env_name(name, "x")[:-1]
        return (
            f"unknown section [{name}]: did you mean [{alike[0]}]? Both are overridden by "
            f"the same environment variables ({prefix}<KEY>)",
            True,
        )
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.7)
    if close:
        return f"unknown section [{name}]: did you mean [{close[0]}]?", True
    if installed is None:
        return None
    return (
        f"no installed service is called {name} (installed: {', '.join(installed) or 'none'}); "
        "only the keys every service has are checked",
        False,
    )


def _declared(base: Sequence[Key], extra: Sequence[Key]) -> dict[str, Key]:
    keys = {key.name: key for key in base}
    # A service may redeclare a core key, e.g. to make oauth-client-id required.
    keys.update((key.name, key) for key in extra)
    return keys


_GLOBAL_NAMES = frozenset(key.name for key in GLOBAL_KEYS)
_SERVICE_NAMES = frozenset(key.name for key in SERVICE_KEYS)


def _misplaced(section: str, name: str) -> str | None:
    """Why srcore's key *name* is in the wrong kind of section, if it is: ignored where it
    stands, it would leave the operator believing it is set."""
    if section != "global" and name in _GLOBAL_NAMES:
        return f"{name} belongs in [global]: it applies to every service; move it there"
    if section == "global" and name in _SERVICE_NAMES:
        return f"{name} belongs in each service's section, not [global]: move it there"
    return None


@dataclass
class _Raw:
    """One key's unconverted value and where it came from."""

    text: str
    source: str
    line: int | None
    origin: str  # the key or variable that was set, for messages: "secret-key-file"
    failed: bool = False  # its file could not be read; already reported
    base: Path | None = None  # what a relative SQLite path in it is relative to


class _Loader:
    def __init__(self, file: str, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.file = file
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[Problem] = []
        self.failed: set[tuple[str, str]] = set()  # keys whose given value was refused
        self.owners: dict[str, list[str]] = {}  # a service's key -> the sections declaring it
        self.holds_secrets = False  # a secret key's value is written in the file itself

    def report(
        self,
        line: int | None,
        section: str | None,
        key: str | None,
        message: str,
        severity: Literal["error", "warning"] = "error",
    ) -> None:
        self.problems.append(Problem(self.file, line, section, key, message, severity))

    def from_file(self, section: str, keys: Mapping[str, Key], parsed: _Parsed) -> dict[str, _Raw]:
        raw: dict[str, _Raw] = {}
        for name, text in parsed.values.get(section, {}).items():
            line = parsed.lines.get((section, name))
            if name in keys:
                raw[name] = _Raw(text, f"{self.file}:{line}", line, name, base=self.base_dir)
                self.holds_secrets |= (keys[name].secret and bool(text.strip())) or (
                    _carries_password(text)
                )
                continue
            base = name.removesuffix(FILE_SUFFIX)
            if name.endswith(FILE_SUFFIX) and base in keys:
                if base in parsed.values[section]:
                    first = parsed.lines.get((section, base))
                    self.report(
                        line, section, name, f"both {base} (line {first}) and {name} are set"
                    )
                    continue
                raw[base] = self.read_file(
                    text, section, name, line, self.base_dir, secret=keys[base].secret
                )
                continue
            misplaced = _misplaced(section, base)
            if misplaced:
                self.report(line, section, name, misplaced)
                continue
            hint = _did_you_mean(base, list(keys)) or _did_you_mean(name, list(keys))
            owners = [o for o in self.owners.get(base, ()) if o != section]
            if owners:  # login-lockout under [todo]: meta's, and ignored here
                hint = f"{base} is a key of {', '.join(f'[{o}]' for o in owners)}; move it there"
            self.report(
                line,
                section,
                name,
                "unknown key, ignored" + (f"; {hint}" if hint else ""),
                "warning",
            )
        return raw

    def read_file(
        self,
        text: str,
        section: str,
        origin: str,
        line: int | None,
        base_dir: Path,
        *,
        key: str | None = None,
        secret: bool = False,
    ) -> _Raw:
        """The value in the file *text* names; *origin* is the key or variable that named
        it, reported as the *key* (default: *origin*) with a note when they differ, so a
        file named from the environment is not looked for in the INI file."""
        path = base_dir / text.strip() if text.strip() else Path()
        source = f"file {path}"
        if not text.strip():
            return _Raw("", source, line, origin)
        where = "" if key is None else f" (from {origin})"
        try:
            content = _read_value_file(path)
        except ValueError as exc:
            self.report(line, section, key or origin, f"{exc}{where}")
            return _Raw("", source, line, origin, failed=True)
        if not content:
            self.report(line, section, key or origin, f"{path} is empty{where}")
            return _Raw("", source, line, origin, failed=True)
        exposed = exposure(path, secret=secret or _carries_password(content))
        if exposed is not None:
            self.report(line, section, key or origin, f"{exposed}{where}", "warning")
        return _Raw(content, source, line, origin, base=base_dir)

    def from_env(self, sections: Mapping[str, Mapping[str, Key]]) -> dict[str, dict[str, _Raw]]:
        known = {
            env_name(section, key): (section, key)
            for section, keys in sections.items()
            for key in keys
        }
        out: dict[str, dict[str, _Raw]] = {section: {} for section in sections}
        for var in sorted(self.environ):
            if not var.startswith(ENV_PREFIX):
                if var.upper().startswith(ENV_PREFIX):
                    self.report(None, None, None, _miscased_env(var, known), "warning")
                continue
            value = self.environ[var]
            if _undecodable(var):
                self.report(None, None, None, _undecodable_env_name(var), "warning")
                continue
            if var in known and _undecodable(value):
                section, key = known[var]
                self.report(
                    None,
                    section,
                    key,
                    f"the value of environment variable {var} is not UTF-8 text: set it "
                    "as UTF-8 (srcore would fail on it wherever it is used)",
                )
                out[section][key] = _Raw("", f"env {var}", None, f"env {var}", failed=True)
                continue
            if var in known:
                section, key = known[var]
                if f"{var}_FILE" in self.environ and f"{var}_FILE" not in known:
                    self.report(None, section, key, f"both {var} and {var}_FILE are set")
                    continue
                # Left as given: a relative path in the environment is relative to
                # the working directory, which is what SQLAlchemy makes of it.
                out[section][key] = _Raw(value, f"env {var}", None, f"env {var}")
            elif var.endswith("_FILE") and var.removesuffix("_FILE") in known:
                section, key = known[var.removesuffix("_FILE")]
                if var.removesuffix("_FILE") in self.environ:
                    continue  # reported above
                out[section][key] = self.read_file(
                    value,
                    section,
                    f"env {var}",
                    None,
                    Path.cwd(),
                    key=key,
                    secret=sections[section][key].secret,
                )
            else:
                message, error = _unknown_env(var, sections, known)
                self.report(None, None, None, message, "error" if error else "warning")
        return out

    def convert(
        self, section: str, keys: Mapping[str, Key], raw: Mapping[str, _Raw], header: int | None
    ) -> Section:
        values: dict[str, object] = {}
        sources: dict[str, str] = {}
        lines: dict[str, int | None] = {"": header}
        for name, key in keys.items():
            given = raw.get(name)
            values[name], sources[name] = key.default, "default"
            lines[name] = given.line if given else header
            if given is not None and given.failed:
                self.failed.add((section, name))
                sources[name] = f"default; {given.source} refused"
            if given is None or given.failed:
                if given is None and key.required:
                    self.report(
                        header,
                        section,
                        name,
                        f"required, but not set: add '{name} = ...' to [{section}] or set "
                        f"{env_name(section, name)}",
                    )
                continue
            where = "" if given.origin == name else f" (from {given.origin})"
            if not given.text.strip():
                if key.required:
                    self.report(given.line, section, name, f"required, but empty{where}")
                continue
            broken = _line_break(key, given) or _control_character(key, given)
            if broken:
                self.report(given.line, section, name, f"{broken}{where}")
                self.failed.add((section, name))
                sources[name] = f"default; {given.source} refused"
                continue
            try:
                value = parse_value(key, given.text)
            except ValueError as exc:
                self.report(given.line, section, name, f"{exc}{where}")
                self.failed.add((section, name))
                sources[name] = f"default; {given.source} refused"
                continue
            if key.type == "url" and isinstance(value, str) and given.base is not None:
                value = resolve_sqlite_path(value, given.base)
            message = key.check(value) if key.check else None
            if message:
                self.report(given.line, section, name, f"{message}{where}")
                self.failed.add((section, name))
                sources[name] = f"default; {given.source} refused"
                continue
            values[name], sources[name] = value, given.source
        return Section(section, values, sources, keys, lines, self.file)


def _line_break(key: Key, given: _Raw) -> str | None:
    """Why a text value with a line break is refused, if it is. Text is one line (lists
    are the keys whose items go on lines of their own): an indented line continues the
    value above it, and a name, host or address reaching the service with a newline in it
    breaks later and elsewhere (every mail with that From header, say). Secrets may be
    anything a file holds."""
    if key.type != "str" or key.secret or "\n" not in given.text.strip():
        return None
    if given.origin == key.name:
        return (
            "is one line, but the indented line below continues it: unindent that line, "
            "or join the two"
        )
    return "is one line, but this value has a line break"


#: Characters no one-line text can carry into a page title, a header or a mail: C0 and C1
#: controls but the tab, and Unicode's line and paragraph separators (line feeds are
#: :func:`_line_break`'s). The mail module refuses the same in every header it builds.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029]")


def _control_character(key: Key, given: _Raw) -> str | None:
    """Why a text value with a control character is refused, if it is. Pasted from a
    terminal or an editor that shows nothing for it, an escape or NUL in the site name
    made every mail fail to be built (its subject names the site), found only when the
    first user waits for a confirmation mail. Secrets may hold anything but a carriage
    return at the end, which only an environment file with Windows line ends leaves there
    (an OAuth client secret with it failed every login at meta, saying only "invalid")."""
    if key.type != "str":
        return None
    if given.text.endswith("\r"):  # a secret too: it would never match the other side's
        return (
            "ends with a carriage return (U+000D), as a line of a file with Windows line "
            "ends does: save the file that sets it with Unix line ends"
        )
    found = None if key.secret else _CONTROL.search(given.text)
    if found is None:
        return None
    return (
        f"has a control character (U+{ord(found.group()):04X}), which no page, header or "
        "mail can carry: remove it (it may be invisible in your editor)"
    )


def _network_problems(
    sections: Mapping[str, Section], failed: set[tuple[str, str]]
) -> list[Problem]:
    """Facts that span services: each has its own key, origin and client id, and a
    network with services has meta to log in through. Keys already refused are skipped."""
    problems: list[Problem] = []
    services = [s for name, s in sections.items() if name != "global" and "::" not in name]
    for key, what in (
        ("secret-key", "every service needs its own key: `srcore keygen` prints one"),
        ("origin", "every service needs its own origin"),
        ("oauth-client-id", "every service needs its own client registered in meta"),
    ):
        seen: dict[object, str] = {}
        for section in services:
            value = section[key]
            if value is None or (section.name, key) in failed:
                continue
            if value in seen:
                problems.append(section.problem(key, f"same as in [{seen[value]}]: {what}"))
            else:
                seen[value] = section.name
    if services and "meta" not in sections:
        problems.append(
            services[0].problem(
                None,
                "no [meta] section: users log in to every service through meta",
                severity="warning",
            )
        )
    for section in services:
        if section.name == "meta" or "meta" not in sections:
            continue
        if {(section.name, "oauth-client-id"), (section.name, "oauth-client-secret")} & failed:
            continue
        if section["oauth-client-id"] is None:
            problems.append(
                section.problem(
                    "oauth-client-id",
                    "not set: users cannot log in; register this service as a client in "
                    "meta and set oauth-client-id and oauth-client-secret",
                    severity="warning",
                )
            )
        elif section["oauth-client-secret"] is None:
            problems.append(
                section.problem("oauth-client-secret", "not set, but oauth-client-id is")
            )
    return problems


def _mail_in_the_log(global_: Section) -> list[Problem]:
    """In production, an empty ``smtp-host`` sends every mail to the log instead: its
    password-reset and confirmation links then work for whoever reads the log (the
    journal's readers, a log shipper), not only for the account's owner."""
    if global_["environment"] != "production" or global_["smtp-host"]:
        return []
    return [
        global_.problem(
            "smtp-host",
            "empty in production: every mail is written to the log instead, its "
            "password-reset and confirmation links included, for whoever reads the log to "
            "use; set smtp-host",
            severity="warning",
        )
    ]


def _webhook_problems(global_: Section, failed: set[tuple[str, str]]) -> list[Problem]:
    """Rules between ``[global]``'s webhook keys. A connect timeout longer than the whole
    delivery's would never apply; it is only reported when the operator set it, since the
    default gives way to a shorter ``webhook-timeout`` on its own."""
    keys = ("webhook-timeout", "webhook-connect-timeout")
    if any(("global", key) in failed for key in keys):
        return []
    timeout, connect = (global_[key] for key in keys)
    if global_.source("webhook-connect-timeout") == "default":
        return []
    if isinstance(timeout, timedelta) and isinstance(connect, timedelta) and connect > timeout:
        return [
            global_.problem(
                "webhook-connect-timeout",
                f"{format_duration(connect)} is longer than webhook-timeout "
                f"({format_duration(timeout)}), which bounds the whole delivery, connecting "
                "included: make it shorter",
            )
        ]
    return []


def _declare_sections(
    parsed: _Parsed,
    specs: Mapping[str, Sequence[Key]],
    loader: _Loader,
    installed: Sequence[str] | None = None,
) -> tuple[dict[str, dict[str, Key]], dict[str, int | None]]:
    """The keys of every section the config will have, and each one's header line.

    ``[global]`` always exists; each service section gets :data:`SERVICE_KEYS` and the
    service's own keys; a declared sub-section of a configured service exists even when
    the file leaves it out, so its defaults apply.
    """
    declared: dict[str, dict[str, Key]] = {
        "global": _declared(GLOBAL_KEYS, specs.get("global", ()))
    }
    headers: dict[str, int | None] = {"global": parsed.sections.get("global")}
    for name, line in parsed.sections.items():
        if name == "global":
            continue
        if not _SECTION_NAME.match(name):
            loader.report(
                line,
                name,
                None,
                "not a valid section name: use lower-case letters, digits, '-' and '_', "
                "and '::' before a sub-section's name",
            )
            continue
        if "::" not in name:
            unknown = _unknown_section(name, installed)
            if unknown is not None:
                message, error = unknown
                loader.report(line, name, None, message, "error" if error else "warning")
                if error:
                    continue
            declared[name] = _declared(SERVICE_KEYS, specs.get(name, ()))
            headers[name] = line
    for name, line in parsed.sections.items():
        if "::" not in name or not _SECTION_NAME.match(name):
            continue
        parent = name.split("::", 1)[0]
        if parent == "global":
            loader.report(line, name, None, "[global] has no sub-sections; ignored", "warning")
        elif parent not in declared:
            loader.report(
                line,
                name,
                None,
                f"sub-section of [{parent}], which is not in this file; ignored",
                "warning",
            )
        elif name not in specs:
            siblings = [s for s in specs if s.startswith(f"{parent}::")]
            hint = _did_you_mean(name, siblings)
            loader.report(
                line,
                name,
                None,
                "no installed service declares this section; ignored"
                + (f"; {hint}" if hint else ""),
                "warning",
            )
        else:
            declared[name] = _declared((), specs[name])
            headers[name] = line
    for name, extra in specs.items():
        parent = name.split("::", 1)[0]
        if "::" in name and parent in declared and parent != "global" and name not in declared:
            declared[name] = _declared((), extra)
            headers[name] = None
    _refuse_shared_env_names(declared, headers, loader)
    return declared, headers


def _refuse_shared_env_names(
    declared: dict[str, dict[str, Key]], headers: Mapping[str, int | None], loader: _Loader
) -> None:
    """Refuse a section whose environment variables are another's.

    Both ``-`` and ``_`` are written ``_`` in a variable's name, and ``::`` is written
    ``__``: ``[a-b]`` and ``[a_b]`` (or ``[a__b]`` and ``[a::b]``) would both take
    ``SRCORE__A_B__ORIGIN``, so an override meant for one would silently set the other
    too. Which one was meant cannot be told, so neither is guessed: the second section
    is an error, left out, and the operator renames one of them.
    """
    seen: dict[str, str] = {}
    for name in list(declared):
        prefix = env_name(name, "x")[:-1]
        first = seen.setdefault(prefix, name)
        if first == name:
            continue
        where = f" (line {headers[first]})" if headers[first] is not None else ""
        loader.report(
            headers[name],
            name,
            None,
            f"[{first}]{where} and [{name}] are overridden by the same environment "
            f"variables ({prefix}<KEY>): an override meant for one would apply to both; "
            "rename one of the sections",
        )
        del declared[name]


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    specs: Mapping[str, Sequence[Key]] | None = None,
    installed: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, check and convert the config file.

    *specs* maps section names (``"todo"``, ``"todo::mail"``) to the keys a service adds
    (none by default: only the keys srcore declares for every service are read).
    *installed* lists the services installed here, so that a section named like none of
    them is reported; :func:`srcore.manifest.load_network_config` passes both from the
    installed manifests, which this layer does not read. *environ* defaults to
    ``os.environ``. Raises :class:`ConfigError` with every problem found; warnings (unknown
    keys and the like) are kept on :attr:`Config.warnings` when the file is usable.
    """
    config, problems = read_config(path, specs=specs, installed=installed, environ=environ)
    if any(p.severity == "error" for p in problems):
        raise ConfigError(problems)
    return config


def read_config(
    path: str | os.PathLike[str] | None = None,
    *,
    specs: Mapping[str, Sequence[Key]] | None = None,
    installed: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Config, list[Problem]]:
    """Read as much of the config file as can be read, and every problem with it.

    For showing a broken config (``srcore config show``), never for running a service:
    a refused value keeps its key's default and says so in its source, a refused section
    is left out. Raises :class:`ConfigError` only when there is no file to read;
    otherwise as :func:`load_config`.
    """
    environ = os.environ if environ is None else environ
    config_path = find_config_path(path, environ=environ)
    file = str(config_path)
    specs = {} if specs is None else specs

    text, problem = _read_text(config_path, file)
    if text is None:
        raise ConfigError([problem] if problem else [])
    parsed = _parse(text, file)
    loader = _Loader(file, config_path.parent, environ)
    loader.problems.extend(parsed.problems)
    for owner, declaring in specs.items():
        for key in declaring:
            loader.owners.setdefault(key.name, []).append(owner)

    declared, headers = _declare_sections(parsed, specs, loader, installed)
    env = loader.from_env(declared)
    sections: dict[str, Section] = {}
    for name, keys in declared.items():
        raw = loader.from_file(name, keys, parsed)
        raw.update(env[name])
        sections[name] = loader.convert(name, keys, raw, headers[name])
    loader.problems.extend(_file_exposure(config_path, sections["global"], loader))
    loader.problems.extend(_network_problems(sections, loader.failed))
    loader.problems.extend(_database_exposure(sections, loader.failed))
    loader.problems.extend(_mail_in_the_log(sections["global"]))
    loader.problems.extend(_webhook_problems(sections["global"], loader.failed))

    problems = sorted(loader.problems, key=lambda p: (p.line is None, p.line or 0))
    return Config(config_path, sections, [p for p in problems if p.severity == "warning"]), problems
