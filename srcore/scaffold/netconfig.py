"""Add a new service's section to a network's config file.

The file is an operator's: its comments and layout stay exactly as they are. The new
section is appended as text; the file is only read (never rewritten) through
:mod:`configparser`, to learn which sections and ports are taken.
"""

from __future__ import annotations

import configparser
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from srcore.scaffold.generate import ScaffoldError

__all__ = [
    "AddedSection",
    "PendingSection",
    "add_service_section",
    "prepare_service_section",
    "render_section",
    "sqlite_url",
    "taken_ports",
]

#: The first port when the file has no origin to count from.
DEFAULT_FIRST_PORT = 5000


@dataclass(frozen=True)
class AddedSection:
    """What :func:`add_service_section` appended."""

    service_id: str
    port: int
    text: str


def _parse(text: str, source: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        message = " ".join(str(exc).split())
        raise ScaffoldError(f"{source}: cannot read it as an INI file: {message}") from None
    return parser


def taken_ports(parser: configparser.ConfigParser) -> set[int]:
    """The ports of every ``origin`` and ``internal-origin`` in the file."""
    ports: set[int] = set()
    for section in parser.sections():
        for key in ("origin", "internal-origin"):
            value = parser.get(section, key, fallback="").strip()
            if not value:
                continue
            try:
                port = urlsplit(value).port
            except ValueError:
                continue
            if port is not None:
                ports.add(port)
    return ports


def _choose_port(taken: set[int], start: int | None) -> int:
    port = start if start is not None else (max(taken) + 1 if taken else DEFAULT_FIRST_PORT)
    while port in taken:
        port += 1
    if not 0 < port < 65536:
        raise ScaffoldError(f"no free port from {start or port}: ports end at 65535")
    return port


def render_section(
    service_id: str,
    *,
    port: int,
    database_url: str,
    with_client: bool,
    host: str = "127.0.0.1",
) -> str:
    """The text of a new ``[service_id]`` section with fresh secrets."""
    lines = [
        f"; Added by `srcore new-service {service_id}`. Secrets are fresh: keep them local.",
        f"[{service_id}]",
        f"origin = http://{host}:{port}",
        f"database-url = {database_url}",
        f"secret-key = {secrets.token_urlsafe(48)}",
    ]
    if with_client:
        # A first-party OAuth client of meta: meta reads these from this file.
        lines += [
            f"oauth-client-id = {service_id}",
            f"oauth-client-secret = {secrets.token_urlsafe(48)}",
        ]
    return "\n".join(lines) + "\n"


def sqlite_url(path: Path) -> str:
    """The ``database-url`` of the SQLite database at *path*, written so the config accepts
    it: a space, ``%``, ``?`` or ``#`` in the path is percent-encoded (SQLAlchemy decodes
    it), since the config refuses a URL with whitespace and SQLAlchemy reads ``?`` as the
    start of the URL's query."""
    text = "".join(
        char if char.isprintable() and not char.isspace() and char not in "%?#" else quote(char)
        for char in str(path)
    )
    return f"sqlite:///{text}"


@dataclass(frozen=True)
class PendingSection:
    """A section :func:`prepare_service_section` checked and rendered, not yet written."""

    config: Path
    added: AddedSection
    separator: str

    def write(self) -> AddedSection:
        """Append the section to the file."""
        try:
            with self.config.open("a", encoding="utf-8") as handle:
                handle.write(self.separator + self.added.text)
        except OSError as exc:
            raise ScaffoldError(f"{self.config}: cannot write it ({exc.strerror or exc})") from None
        return self.added


def prepare_service_section(
    config: Path, service_id: str, *, port: int | None = None
) -> PendingSection:
    """Check that *config* can take a ``[service_id]`` section and render it, writing
    nothing: ``srcore new-service`` refuses a config it could not add the section to
    before it writes the package, not after."""
    try:
        text = config.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScaffoldError(f"{config}: cannot read it ({exc.strerror or exc})") from None
    except UnicodeDecodeError:
        raise ScaffoldError(f"{config}: cannot read it: it is not UTF-8 text") from None
    parser = _parse(text, str(config))
    if parser.has_section(service_id):
        raise ScaffoldError(f"{config} already has a [{service_id}] section")
    if not os.access(config, os.W_OK):
        raise ScaffoldError(f"{config}: cannot write it (permission denied)")
    chosen = _choose_port(taken_ports(parser), port)
    section = render_section(
        service_id,
        port=chosen,
        database_url=sqlite_url(config.resolve().parent / f"{service_id}.db"),
        with_client=parser.has_section("meta") and service_id != "meta",
    )
    # One blank line between the file's last line and the new section.
    if not text or text.endswith("\n\n"):
        separator = ""
    elif text.endswith("\n"):
        separator = "\n"
    else:
        separator = "\n\n"
    return PendingSection(config, AddedSection(service_id, chosen, section), separator)


def add_service_section(config: Path, service_id: str, *, port: int | None = None) -> AddedSection:
    """Append a ``[service_id]`` section to *config*, keeping everything already there.

    The origin gets the first port from *port* (default: after the highest port of the
    file) that no section uses; the SQLite database goes beside the config file; when the
    network has ``[meta]`` the service also gets an OAuth client id and secret.
    """
    return prepare_service_section(config, service_id, port=port).write()
