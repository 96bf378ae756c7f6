"""The shared config file: one INI file for the whole network, read into typed sections.

The file has a ``[global]`` section, one section per service named by its id, and optional
``[service::group]`` sub-sections. Every key is declared once, as a :class:`Key`, by srcore
(:data:`GLOBAL_KEYS`, :data:`SERVICE_KEYS`) or by a service's manifest. Loading checks the
whole file against those declarations and reports every problem at once, each naming file,
line, section and key, because an operator fixing a config wants the full list, not one
traceback per attempt.

Values may be overridden from the environment (``SRCORE__TODO__DATABASE_URL``) and read
from files (``secret-key-file = /run/secrets/todo``), for containers and secret stores.
Every value remembers where it came from. Nothing is read at import time.
"""

from __future__ import annotations

import configparser
import difflib
import io
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal, get_args
from urllib.parse import urlsplit

__all__ = [
    "ENV_PREFIX",
    "GLOBAL_KEYS",
    "KEY_TYPES",
    "SERVICE_KEYS",
    "Config",
    "ConfigError",
    "Key",
    "KeyType",
    "Problem",
    "Section",
    "env_name",
    "find_config_path",
    "format_duration",
    "format_value",
    "load_config",
    "parse_duration",
    "parse_value",
]

KeyType = Literal["str", "int", "bool", "duration", "url", "path", "enum", "list"]
KEY_TYPES: tuple[str, ...] = get_args(KeyType)

#: Prefix of environment variables that override config values.
ENV_PREFIX = "SRCORE__"
#: Suffix of a key (``-file``) or environment variable (``_FILE``) naming a file to read.
FILE_SUFFIX = "-file"
#: Places looked at, in order, when no path is given and ``SRCORE_CONFIG`` is unset.
DEFAULT_PATHS: tuple[Path, ...] = (Path("config.ini"), Path("/etc/srcore/config.ini"))
#: Files named by ``*-file`` keys are secrets or short values, never large.
MAX_VALUE_FILE_SIZE = 64 * 1024
#: A ``secret-key`` shorter than this is refused.
MIN_SECRET_KEY_LENGTH = 32

_KEY_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
_SECTION_PART = r"[a-z0-9](?:[a-z0-9_-]*[a-z0-9])?"
_SECTION_NAME = re.compile(rf"^{_SECTION_PART}(?:::{_SECTION_PART})?$")
_DURATION = re.compile(
    r"^\s*(?:(?P<d>[0-9]+)\s*d)?\s*(?:(?P<h>[0-9]+)\s*h)?\s*"
    r"(?:(?P<m>[0-9]+)\s*m)?\s*(?:(?P<s>[0-9]+)\s*s)?\s*$",
    re.IGNORECASE,
)
_INT = re.compile(r"^[+-]?[0-9]{1,30}$")
_URL_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_BOOLEANS = configparser.RawConfigParser.BOOLEAN_STATES
_COMMENT_PREFIXES = ("#", ";")
_INLINE_COMMENT_PREFIXES = ("#", ";")
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


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, located as precisely as the file allows."""

    file: str
    line: int | None
    section: str | None
    key: str | None
    message: str
    severity: Literal["error", "warning"] = "error"

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


# -- values -------------------------------------------------------------------------------


def parse_duration(text: str) -> timedelta:
    """Parse ``30s``, ``5m``, ``1h``, ``2d`` or a combination like ``1h30m``.

    Raises :class:`ValueError` with a message meant for the operator.
    """
    match = _DURATION.match(text)
    if not text.strip() or match is None:
        raise ValueError(
            f"not a duration: {text!r} (use a number and a unit: 30s, 5m, 1h, 2d, or 1h30m)"
        )
    parts = {unit: int(n) for unit, n in match.groupdict().items() if n is not None}
    try:
        return timedelta(
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
        )
    except OverflowError:
        raise ValueError(f"duration too long: {text!r}") from None


def format_duration(value: timedelta) -> str:
    """Write *value* the way :func:`parse_duration` reads it (``1h30m``, ``0s``)."""
    seconds = int(value.total_seconds())
    out = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        amount, seconds = divmod(seconds, size)
        if amount:
            out.append(f"{amount}{unit}")
    return "".join(out) or "0s"


def _parse_url(text: str) -> str:
    if any(c.isspace() for c in text):
        raise ValueError(f"not a URL: {text!r} contains whitespace")
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
            raise ValueError(f"not a whole number: {text!r}")
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
            raise ValueError(
                f"{value!r} is not one of {', '.join(key.choices)}" + (f"; {hint}" if hint else "")
            )
        return value
    if key.type == "list":
        return tuple(item.strip() for item in re.split(r"[,\n]", text) if item.strip())
    raise ValueError(f"unknown key type {key.type!r}")


def format_value(key: Key, value: object, *, redact: bool = True) -> str:
    """Write *value* the way it would be written in the file; secrets are masked."""
    if value is None:
        return ""
    if key.secret and redact:
        return _MASK
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, timedelta):
        return format_duration(value)
    if isinstance(value, tuple):
        return ", ".join(str(item) for item in value)
    return str(value)


def env_name(section: str, key: str) -> str:
    """The environment variable that overrides *key* of *section*.

    ``("todo", "database-url")`` gives ``SRCORE__TODO__DATABASE_URL``;
    ``("todo::mail", "smtp-host")`` gives ``SRCORE__TODO__MAIL__SMTP_HOST``.
    """
    parts = [*section.split("::"), key]
    return ENV_PREFIX + "__".join(re.sub(r"[^A-Za-z0-9]", "_", p).upper() for p in parts)


# -- the keys srcore itself declares ------------------------------------------------------


def _at_least(minimum: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if isinstance(value, int) and value < minimum:
            return f"must be at least {minimum}, not {value}"
        return None

    return check


def _port(value: object) -> str | None:
    if isinstance(value, int) and not 1 <= value <= 65535:
        return f"not a TCP port: {value} (1-65535)"
    return None


def _origin(value: object) -> str | None:
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https"):
        return f"an origin is http:// or https://, not {parts.scheme}://"
    if parts.path or parts.query or parts.fragment:
        return (
            f"an origin is scheme://host[:port] with no path: use "
            f"{parts.scheme}://{parts.netloc} (as the browser's address bar shows it)"
        )
    return None


def _redis_url(value: object) -> str | None:
    scheme = urlsplit(str(value)).scheme
    if scheme not in ("redis", "rediss", "unix"):
        return f"a Redis URL starts with redis://, rediss:// or unix://, not {scheme}://"
    return None


def _secret_key(value: object) -> str | None:
    if isinstance(value, str) and len(value) < MIN_SECRET_KEY_LENGTH:
        return (
            f"too short ({len(value)} characters, at least {MIN_SECRET_KEY_LENGTH}): "
            "run `srcore keygen` for a fresh one"
        )
    return None


def _networks(value: object) -> str | None:
    bad = []
    for item in value if isinstance(value, tuple) else ():
        try:
            ipaddress.ip_network(str(item))
        except ValueError as exc:
            bad.append(str(exc))
    if bad:
        return "not a network in CIDR form (like 10.0.0.0/8 or fd00::/8): " + "; ".join(bad)
    return None


def _url_path(value: object) -> str | None:
    if isinstance(value, str) and value and not value.startswith("/"):
        return f"must be a path starting with '/', like /metrics, not {value!r}"
    return None


def _mail_address(value: object) -> str | None:
    if isinstance(value, str) and "@" not in value:
        return f"not a mail address: {value!r}"
    return None


GLOBAL_KEYS: tuple[Key, ...] = (
    Key(
        "site-name",
        default="srcore network",
        help="The name of the whole network, shown in page titles, the navigation bar and mail.",
    ),
    Key(
        "environment",
        type="enum",
        choices=("development", "staging", "production"),
        default="development",
        help="Where this network runs. Anything but 'production' shows a banner on every "
        "page; 'development' also relaxes secure-cookie and CSRF-over-TLS requirements and "
        "reloads templates.",
    ),
    Key(
        "log-level",
        type="enum",
        choices=("debug", "info", "warning", "error"),
        default="info",
        help="The least severe log messages written by every service.",
    ),
    Key(
        "redis-url",
        type="url",
        check=_redis_url,
        help="Redis for caches, rate limits and token revocation shared between processes, "
        "e.g. redis://127.0.0.1:6379/0. Empty: in-process fallbacks, fine for one process.",
    ),
    Key(
        "webhooks-broker",
        type="url",
        help="The Celery broker URL webhook deliveries are queued on, e.g. "
        "redis://127.0.0.1:6379/1. Empty: each service's local worker delivers straight "
        "from its database, with no broker to run.",
    ),
    Key(
        "allow-private-webhook-targets",
        type="list",
        default=(),
        check=_networks,
        help="Networks (CIDR, comma- or line-separated) that webhook deliveries may reach "
        "although they are loopback, private or link-local, e.g. 10.1.0.0/16. Empty: such "
        "targets are refused, which protects internal services from forged requests.",
    ),
    Key(
        "http-timeout",
        type="duration",
        default=timedelta(seconds=10),
        help="How long a service waits on another service's HTTP API (token checks, "
        "manifests) before giving up.",
    ),
    Key(
        "revocation-pull-interval",
        type="duration",
        default=timedelta(seconds=30),
        help="How often each service asks meta for the revocations (logouts, revoked "
        "tokens, suspensions) it may have missed. meta also pushes them at once; this bounds "
        "how late one arrives when a push is lost. 0s: push only.",
    ),
    Key(
        "smtp-host",
        help="The SMTP server outgoing mail is sent through. Empty: mail is written to the "
        "log instead of being sent.",
    ),
    Key(
        "smtp-port",
        type="int",
        check=_port,
        help="The SMTP server's port. Empty: 465 with smtp-tls = tls, 587 with starttls, "
        "25 with none.",
    ),
    Key(
        "smtp-tls",
        type="enum",
        choices=("none", "starttls", "tls"),
        default="starttls",
        help="How the SMTP connection is encrypted: 'starttls' upgrades a plain connection, "
        "'tls' connects with TLS from the start, 'none' sends in the clear (local relays "
        "only).",
    ),
    Key("smtp-user", help="The SMTP login name. Empty: no login."),
    Key("smtp-password", secret=True, help="The SMTP password (see smtp-password-file)."),
    Key(
        "smtp-from",
        check=_mail_address,
        help="The sender address of outgoing mail, e.g. 'Example <noreply@example.org>'.",
    ),
)
"""The keys of the ``[global]`` section, shared by every service."""

SERVICE_KEYS: tuple[Key, ...] = (
    Key(
        "origin",
        type="url",
        required=True,
        check=_origin,
        help="Where users reach this service: scheme, host and port, no path, e.g. "
        "https://todo.example.org. Links and OAuth redirects are built from it.",
    ),
    Key(
        "internal-origin",
        type="url",
        check=_origin,
        help="Where other services reach this one from the inside (e.g. http://10.0.0.5:5001), "
        "if not through origin. Empty: origin is used.",
    ),
    Key(
        "database-url",
        type="url",
        required=True,
        help="This service's own database, as an SQLAlchemy URL: "
        "postgresql+psycopg://user@host/todo in production, sqlite:///var/todo.db for a "
        "demo. Each service has its own database.",
    ),
    Key(
        "secret-key",
        required=True,
        secret=True,
        check=_secret_key,
        help="This service's own key for signing sessions and CSRF tokens, at least 32 "
        "characters; `srcore keygen` prints one. Never share it between services: each "
        "service has its own so a leak of one cannot forge another's sessions.",
    ),
    Key(
        "oauth-client-id",
        help="The client id meta issued for this service, used to log users in. Not needed "
        "in meta's own section.",
    ),
    Key(
        "oauth-client-secret",
        secret=True,
        help="The client secret belonging to oauth-client-id.",
    ),
    Key(
        "session-lifetime",
        type="duration",
        default=timedelta(days=30),
        help="How long a web login to this service lasts without being renewed.",
    ),
    Key(
        "metrics-path",
        default="",
        check=_url_path,
        help="The path Prometheus metrics are served at, e.g. /metrics. Empty: no metrics "
        "endpoint. Keep it away from the public internet with your proxy.",
    ),
    Key(
        "proxy-fix-trusted-hops",
        type="int",
        default=0,
        check=_at_least(0),
        help="How many reverse proxies in front of this service set X-Forwarded-For, "
        "-Proto, -Host and -Port. 0: the headers are ignored (the service is reached "
        "directly). Set it to exactly the number of proxies, or clients can forge their "
        "address.",
    ),
    Key(
        "max-content-length",
        type="int",
        default=16 * 1024 * 1024,
        check=_at_least(1),
        help="The largest request body accepted, in bytes; larger requests get 413.",
    ),
)
"""The keys every service section has, before the keys the service declares itself."""


# -- sections and the config ------------------------------------------------------------


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


# -- locating and reading the file --------------------------------------------------------


def find_config_path(
    explicit: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Path:
    """Find the config file: *explicit*, else ``$SRCORE_CONFIG``, else ``./config.ini``,
    else ``/etc/srcore/config.ini``.

    An explicit path or ``SRCORE_CONFIG`` must exist; nothing else is tried then. Raises
    :class:`ConfigError` naming every place looked at.
    """
    environ = os.environ if environ is None else environ
    if explicit is not None and str(explicit) != "":
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError([Problem(str(path), None, None, None, "no such config file")])
        return path
    from_env = environ.get("SRCORE_CONFIG")
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise ConfigError(
                [Problem(str(path), None, None, None, "no such config file (from $SRCORE_CONFIG)")]
            )
        return path
    for path in DEFAULT_PATHS:
        if path.is_file():
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
                report(lineno, None, None, "text before the first [section] header")
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


# -- loading ------------------------------------------------------------------------------


def _did_you_mean(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    if not close and word:
        close = [c for c in candidates if c.startswith(word)]
    return f"did you mean {close[0]!r}?" if len(close) == 1 else ""


def _unknown_env(
    var: str, sections: Mapping[str, object], known: Mapping[str, tuple[str, str]]
) -> str:
    message = f"environment variable {var} names no "
    section = max(
        (s for s in sections if var.startswith(env_name(s, "x")[:-1])), key=len, default=None
    )
    if section is None:
        return message + f"section of this file (it has {', '.join(sections)})"
    same = [name for name, (s, _) in known.items() if s == section]
    hint = _did_you_mean(var.removesuffix("_FILE"), same)
    return message + f"key of [{section}]" + (f"; {hint}" if hint else "")


def _discovered_specs() -> dict[str, tuple[Key, ...]]:
    from srcore.manifest import discover

    specs: dict[str, tuple[Key, ...]] = {}
    for manifest in discover().values():
        for name, keys in manifest.config.items():
            specs[name] = specs.get(name, ()) + tuple(keys)
    return specs


def _declared(base: Sequence[Key], extra: Sequence[Key]) -> dict[str, Key]:
    keys = {key.name: key for key in base}
    # A service may redeclare a core key, e.g. to make oauth-client-id required.
    keys.update((key.name, key) for key in extra)
    return keys


@dataclass
class _Raw:
    """One key's unconverted value and where it came from."""

    text: str
    source: str
    line: int | None
    origin: str  # the key or variable that was set, for messages: "secret-key-file"
    failed: bool = False  # its file could not be read; already reported


class _Loader:
    def __init__(self, file: str, base_dir: Path, environ: Mapping[str, str]) -> None:
        self.file = file
        self.base_dir = base_dir
        self.environ = environ
        self.problems: list[Problem] = []
        self.failed: set[tuple[str, str]] = set()  # keys whose given value was refused

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
                raw[name] = _Raw(text, f"{self.file}:{line}", line, name)
                continue
            base = name.removesuffix(FILE_SUFFIX)
            if name.endswith(FILE_SUFFIX) and base in keys:
                if base in parsed.values[section]:
                    first = parsed.lines.get((section, base))
                    self.report(
                        line, section, name, f"both {base} (line {first}) and {name} are set"
                    )
                    continue
                raw[base] = self.read_file(text, section, name, line, self.base_dir)
                continue
            hint = _did_you_mean(base, list(keys)) or _did_you_mean(name, list(keys))
            self.report(
                line,
                section,
                name,
                "unknown key, ignored" + (f"; {hint}" if hint else ""),
                "warning",
            )
        return raw

    def read_file(
        self, text: str, section: str, origin: str, line: int | None, base_dir: Path
    ) -> _Raw:
        path = base_dir / text.strip() if text.strip() else Path()
        source = f"file {path}"
        if not text.strip():
            return _Raw("", source, line, origin)
        try:
            content = _read_value_file(path)
        except ValueError as exc:
            self.report(line, section, origin, str(exc))
            return _Raw("", source, line, origin, failed=True)
        if not content:
            self.report(line, section, origin, f"{path} is empty")
            return _Raw("", source, line, origin, failed=True)
        return _Raw(content, source, line, origin)

    def from_env(self, sections: Mapping[str, Mapping[str, Key]]) -> dict[str, dict[str, _Raw]]:
        known = {
            env_name(section, key): (section, key)
            for section, keys in sections.items()
            for key in keys
        }
        out: dict[str, dict[str, _Raw]] = {section: {} for section in sections}
        for var in sorted(v for v in self.environ if v.startswith(ENV_PREFIX)):
            value = self.environ[var]
            if var in known:
                section, key = known[var]
                if f"{var}_FILE" in self.environ and f"{var}_FILE" not in known:
                    self.report(None, section, key, f"both {var} and {var}_FILE are set")
                    continue
                out[section][key] = _Raw(value, f"env {var}", None, f"env {var}")
            elif var.endswith("_FILE") and var.removesuffix("_FILE") in known:
                section, key = known[var.removesuffix("_FILE")]
                if var.removesuffix("_FILE") in self.environ:
                    continue  # reported above
                out[section][key] = self.read_file(value, section, key, None, Path.cwd())
            else:
                self.report(None, None, None, _unknown_env(var, sections, known), "warning")
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
            try:
                value = parse_value(key, given.text)
            except ValueError as exc:
                self.report(given.line, section, name, f"{exc}{where}")
                self.failed.add((section, name))
                continue
            message = key.check(value) if key.check else None
            if message:
                self.report(given.line, section, name, f"{message}{where}")
                self.failed.add((section, name))
                continue
            values[name], sources[name] = value, given.source
        return Section(section, values, sources, keys, lines, self.file)


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


def _declare_sections(
    parsed: _Parsed, specs: Mapping[str, Sequence[Key]], loader: _Loader
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
    return declared, headers


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    specs: Mapping[str, Sequence[Key]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Read, check and convert the config file.

    *specs* maps section names (``"todo"``, ``"todo::mail"``) to the keys a service adds;
    by default they come from the installed services' manifests. *environ* defaults to
    ``os.environ``. Raises :class:`ConfigError` with every problem found; warnings (unknown
    keys and the like) are kept on :attr:`Config.warnings` when the file is usable.
    """
    environ = os.environ if environ is None else environ
    config_path = find_config_path(path, environ=environ)
    file = str(config_path)
    if specs is None:
        try:
            specs = _discovered_specs()
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                [Problem(file, None, None, None, f"cannot read the installed services: {exc}")]
            ) from None

    text, problem = _read_text(config_path, file)
    if text is None:
        raise ConfigError([problem] if problem else [])
    parsed = _parse(text, file)
    loader = _Loader(file, config_path.parent, environ)
    loader.problems.extend(parsed.problems)

    declared, headers = _declare_sections(parsed, specs, loader)
    env = loader.from_env(declared)
    sections: dict[str, Section] = {}
    for name, keys in declared.items():
        raw = loader.from_file(name, keys, parsed)
        raw.update(env[name])
        sections[name] = loader.convert(name, keys, raw, headers[name])
    loader.problems.extend(_network_problems(sections, loader.failed))

    problems = sorted(loader.problems, key=lambda p: (p.line is None, p.line or 0))
    if any(p.severity == "error" for p in problems):
        raise ConfigError(problems)
    return Config(config_path, sections, problems)
