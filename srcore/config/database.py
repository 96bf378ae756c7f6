"""Database URLs in the config: the driver must load, and SQLite paths are relative to
the config file.

A misspelt driver otherwise shows only when a service starts, as SQLAlchemy's traceback;
checking that SQLAlchemy can load the dialect and its DB-API module (without connecting)
turns it into one line naming the drivers that exist. A relative SQLite path is resolved
against the config file's directory, as ``*-file`` values are, so a service does not
create an empty database wherever it happens to be started.
"""

from __future__ import annotations

import difflib
import importlib
import os
import pwd
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError

from srcore.config.keys import env_name
from srcore.config.masking import mask_urls
from srcore.config.sqlite_files import StorageProblem, storage_problem

__all__ = [
    "check_database_url",
    "describe_connect_failure",
    "driver_cause",
    "missing_sqlite_database",
    "resolve_sqlite_path",
    "sqlite_directory_problem",
    "sqlite_file",
    "sqlite_storage_problem",
]

# What srcore.db.normalize_url makes of a URL naming no driver: psycopg 3.
_PLAIN = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg"}
# The backends SQLAlchemy itself ships; each module names its drivers as attributes.
_BACKENDS = ("postgresql", "sqlite", "mysql", "mariadb", "oracle", "mssql")


def _parse(url: str) -> URL:
    parsed = make_url(url)
    if parsed.drivername in _PLAIN:
        parsed = parsed.set(drivername=_PLAIN[parsed.drivername])
    return parsed


def _known_drivers() -> dict[str, bool]:
    """Every ``backend+driver`` SQLAlchemy knows, and whether its DB-API module loads."""
    known: dict[str, bool] = {}
    for backend in _BACKENDS:
        try:
            module = importlib.import_module(f"sqlalchemy.dialects.{backend}")
        except ImportError:
            continue
        for name in dir(module):
            dialect = getattr(getattr(module, name), "dialect", None)
            if name.startswith("_") or name == "base" or not isinstance(dialect, type):
                continue
            try:
                dialect.import_dbapi()  # type: ignore[attr-defined]
            except Exception:  # any failure means "not usable here"
                known[f"{backend}+{name}"] = False
            else:
                known[f"{backend}+{name}"] = True
    return known


def _drivers_hint(drivername: str) -> str:
    known = _known_drivers()
    close = difflib.get_close_matches(drivername, list(known), n=1, cutoff=0.6)
    installed = ", ".join(sorted(name for name, ok in known.items() if ok))
    hint = f"did you mean {close[0]}? " if close and close[0] != drivername else ""
    return f"{hint}(installed drivers: {installed})"


def check_database_url(value: object) -> str | None:
    """A problem message when SQLAlchemy cannot load the driver of the URL *value*."""
    try:
        url = _parse(str(value))
    except (ArgumentError, ValueError):  # a bad port or driver name raises ValueError
        return "not an SQLAlchemy database URL (e.g. postgresql+psycopg://user@host/db)"
    if url.password is not None and str(value).partition("?")[0].count("@") > 1:
        # SQLAlchemy ends the password at its first "@" and takes the rest for the host.
        return "the password has a raw '@': percent-encode it (%40), and ':' '/' '%' too"
    try:
        dialect = url.get_dialect()
    except (NoSuchModuleError, ValueError):  # ValueError: more than one '+'
        return f"unknown database driver {url.drivername}: {_drivers_hint(url.drivername)}"
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        return (
            f"the database driver {url.drivername} is not installed ({exc}): "
            f"{_drivers_hint(url.drivername)}"
        )
    return None


def resolve_sqlite_path(value: str, base_dir: Path) -> str:
    """*value* with a relative SQLite database path made absolute against *base_dir*.

    In-memory databases and ``file:`` URIs are left alone, as is every other backend.
    """
    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        return value  # refused by check_database_url
    database = url.database
    if url.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return value
    if database.startswith("file:") or Path(database).is_absolute():
        return value
    resolved = url.set(database=str(base_dir.absolute() / database))
    return resolved.render_as_string(hide_password=False)


def sqlite_file(url: str | URL) -> Path | None:
    """The file of an SQLite database *url*; ``None`` for another backend, an in-memory
    database or a ``file:`` URI (whose path and mode SQLite reads itself)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    database = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or database in ("", ":memory:"):
        return None
    if database.startswith("file:"):
        return None
    return Path(database)


def sqlite_directory_problem(url: str | URL) -> str | None:
    """Why no SQLite database can be opened at *url*'s path, or ``None``.

    A directory that does not exist is only found by opening the database, which
    ``srcore migrate`` and the worker do with a clear message, while the web app starts and
    answers every request 503: ``srcore config check`` asks this first. Checked after the
    value is loaded, since a relative path in the file is only then made absolute (one
    from the environment stays relative to the working directory, as SQLAlchemy takes it).
    """
    file = sqlite_file(url)
    folder = file.parent if file is not None else None
    if folder is None or folder.is_dir():
        return None
    shown = folder.absolute()
    if folder.exists():
        return f"{shown} is not a directory: the SQLite database cannot be created in it"
    return (
        f"the directory {shown} does not exist: create it, or fix the path "
        "(SQLite creates the database file, not its directory)"
    )


def sqlite_storage_problem(url: str | URL) -> StorageProblem | None:
    """What keeps this user from using the SQLite database at *url* (see
    :func:`srcore.config.sqlite_files.storage_problem`); ``None`` for another backend."""
    file = sqlite_file(url)
    return None if file is None else storage_problem(file)


def driver_cause(exc: BaseException) -> str | None:
    """What the database driver's error *exc* (or SQLAlchemy's around it) says is wrong
    with the storage: ``"full"``, ``"read-only"``, ``"not-a-database"``, ``"locked"``;
    ``None`` for anything else (a statement's own error, a refused login)."""
    orig = getattr(exc, "orig", None) or exc
    name = str(getattr(orig, "sqlite_errorname", ""))
    state = str(getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or "")
    text = str(orig).lower()
    if name.startswith("SQLITE_FULL") or state == "53100" or "disk is full" in text:
        return "full"
    if "no space left on device" in text:
        return "full"
    if name.startswith("SQLITE_READONLY") or "readonly database" in text or state == "25006":
        return "read-only"  # 25006: PostgreSQL's read_only_sql_transaction
    if name.startswith("SQLITE_NOTADB") or "file is not a database" in text:
        return "not-a-database"
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "database is locked" in text:
        return "locked"
    return None


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _sqlite_advice(file: Path, exc: BaseException, key: str) -> tuple[str, str]:
    """What to add to the driver's reason for a failure on the SQLite database *file*,
    and the advice that matches the cause: only a wrong path is fixed in the config."""
    found = storage_problem(file)
    if found is not None and found.fix_key:
        return found.reason, _capital(found.advice.replace("fix the path", f"fix {key}"))
    if isinstance(exc, FileNotFoundError):  # the file is missing: the path may be misspelt
        return "", f"Fix {key}"
    if found is not None:
        return found.reason, _capital(found.advice)
    folder = file.absolute().parent
    cause = driver_cause(exc)
    if cause == "full":
        return "", f"Make room on the file system of {folder}"
    if cause == "locked":
        return "", (
            "Another process holds its write lock (another srcore migrate?): "
            "let it finish, or stop it"
        )
    if cause == "read-only":
        return "", f"Is the file system of {folder} mounted read-only?"
    if cause == "not-a-database":
        return "", f"Restore it from a backup, or fix {key}"
    return "", f"Check the path and its permissions, or fix {key}"


def _nameless_user(url: URL) -> str | None:
    """Why PostgreSQL's client has no role to log in as for *url*, if that is so.

    A URL without a user (``postgresql+psycopg:///todo``) logs in as ``$PGUSER``, else as
    the name of the process's user, which a uid with no entry in the passwd database has
    not (``docker run --user 4242``): libpq then says only that the "local user with ID"
    does not exist.
    """
    if url.get_backend_name() != "postgresql" or url.username or os.environ.get("PGUSER"):
        return None
    if "user" in url.query:
        return None
    try:
        pwd.getpwuid(os.getuid())
    except KeyError:
        return (
            f"The URL names no role, and this process's user (uid {os.getuid()}) has no "
            "name in the passwd database for PostgreSQL's client to log in as"
        )
    return None


def describe_connect_failure(service: str, url: str | URL, exc: BaseException) -> str:
    """One line on why *service* could not open or use its database *url*, for an operator.

    SQLAlchemy's text of the error carries the exception's class and a link to its own
    docs, and SQLite says only "unable to open database file" when the directory is
    missing: this names the service, the database (without its password), the driver's
    own reason, what is found on disk, and advice that matches the cause: the key to fix
    when the path is wrong, a chown when the files belong to another user, room on a full
    disk.
    """
    parsed: URL | None
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        parsed, shown = None, "(an unreadable URL)"
    else:
        shown = parsed.render_as_string(hide_password=True)
    reason = " ".join(str(getattr(exc, "orig", None) or exc).split())
    key = f"[{service}] database-url (or {env_name(service, 'database-url')}, which wins)"
    advice = f"Check that the server is up and the database exists, or fix {key}"
    if driver_cause(exc) == "full":
        advice = "Make room on the database server's disk"
    file = sqlite_file(parsed) if parsed is not None else None
    if file is not None:
        found, advice = _sqlite_advice(file, exc, key)
        if found and reason.lower() in ("unable to open database file", ""):
            reason = found  # SQLite's own words add nothing to it
        elif found:
            reason = f"{reason}; {found}"
    elif parsed is not None and parsed.get_backend_name() == "sqlite":
        advice = f"Fix {key}"
    elif parsed is not None and (nameless := _nameless_user(parsed)) is not None:
        example = "postgresql+psycopg://ROLE@HOST/DB"
        advice = f"{nameless}: add the role to {key}, as in {example}, or set PGUSER"
    stop = "" if reason.endswith((".", "?", "!")) else "."
    return f"cannot open the database of {service} ({shown}): {mask_urls(reason)}{stop} {advice}"


def missing_sqlite_database(service: str, url: str | URL) -> str | None:
    """Why *service* must not open its SQLite database *url* yet: the file is not there.

    SQLite creates a missing file on connecting, so a misspelt path would leave an empty
    database behind and every request would find no tables. Only ``srcore migrate SERVICE
    upgrade`` creates the file; every other command asks this first. ``None`` when the file
    exists, or *url* is another backend, in memory or a ``file:`` URI.
    """
    file = sqlite_file(url)
    try:
        there = file is None or file.exists()
    except PermissionError:  # a directory on its way is shut: the storage check says which
        return None
    if there or file is None:
        return None  # another kind of file is not missing: opening it says what it is
    reason = FileNotFoundError(
        f"the database file {file.absolute()} does not exist "
        f"(`srcore migrate {service} upgrade` creates it; nothing else does)"
    )
    return describe_connect_failure(service, url, reason)
