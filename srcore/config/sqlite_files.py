"""What stands between a service and its SQLite database on disk, found by looking.

SQLite opens a file this user may not write read-only without a word, and an empty
directory entry that is a directory, or a text file, as "unable to open" or "not a
database": the first write, or the first request, is where it shows. The usual cause is
an operator who ran ``srcore migrate`` as root: the database and its ``-wal`` and ``-shm``
files then belong to root. ``srcore config check`` and ``srcore serve`` look first, and
each cause is named with the fix that matches it (a ``chown`` is no "fix database-url").
"""

from __future__ import annotations

import os
import pwd
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["SQLITE_HEADER", "StorageProblem", "companions", "storage_problem"]

#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


@dataclass(frozen=True)
class StorageProblem:
    """Why a database file cannot be used, and what to do about it.

    *fix_key* is whether the path itself is wrong (then the advice is to fix
    ``database-url``); otherwise the path is right and the files are at fault.
    """

    reason: str
    advice: str
    fix_key: bool = False

    def __str__(self) -> str:
        return f"{self.reason}: {self.advice}"


def companions(file: Path) -> list[Path]:
    """*file* and the files SQLite keeps beside it that exist now: ``-wal``, ``-shm``,
    ``-journal``."""
    found = [file] if file.exists() else []
    for suffix in ("-wal", "-shm", "-journal"):
        other = file.with_name(file.name + suffix)
        if other.exists():
            found.append(other)
    return found


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _owner(path: Path) -> int:
    return path.stat().st_uid


def _service_user(file: Path) -> str:
    """Who the service's user is, seen by root (who can write anything, so runs commands
    for the service's user): the owner of the directory, or else of the database."""
    for path in (file.parent, file):
        if path.exists() and _owner(path) != 0:
            return _user(_owner(path))
    return "root"


def _give_back(paths: list[Path], user: str) -> str:
    names = " ".join(shlex.quote(str(path)) for path in paths)
    return (
        f"give {'it' if len(paths) == 1 else 'them'} to the service's user "
        f"(chown {user}: {names}), or run srcore as that user"
    )


#: Who cannot use the files: the user running the check, or the service's user (whom
#: root, who can use anything, stands in for).
_THIS_USER = "this user"
_SERVICE_USER = "the service's user"


def _fix_for(who: str, file: Path) -> str:
    return _user(os.geteuid()) if who == _THIS_USER else _service_user(file)


def _shut_out(folder: Path, file: Path) -> str | None:
    """Who cannot make files in *folder*: this user, or (run as root, who can) the
    service's user when the folder is root's alone and the database another user's."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return _THIS_USER
    if os.geteuid() != 0 or not file.exists():
        return None
    mode = folder.stat().st_mode
    if _owner(folder) == 0 != _owner(file) and not mode & 0o022:
        return _SERVICE_USER
    return None


def _not_writable(paths: list[Path], folder: Path) -> tuple[list[Path], str]:
    """Those of *paths* this user cannot write, or (run as root, who can write anything)
    those that belong to another user than their directory, which is the service's; and
    who cannot write them."""
    unwritable = [path for path in paths if not os.access(path, os.W_OK)]
    if unwritable or os.geteuid() != 0 or _owner(folder) == 0:
        return unwritable, _THIS_USER
    return [path for path in paths if _owner(path) != _owner(folder)], _SERVICE_USER


def _content_problem(file: Path) -> StorageProblem | None:
    if file.is_dir():
        return StorageProblem(
            f"{file} is a directory, not an SQLite database file", "fix the path", fix_key=True
        )
    if not file.is_file():
        return StorageProblem(
            f"{file} is not a regular file, so not an SQLite database", "fix the path", True
        )
    try:
        with open(file, "rb") as opened:
            head = opened.read(len(SQLITE_HEADER))
    except PermissionError:
        return StorageProblem(
            f"the database file {file} belongs to {_user(_owner(file))} and this user "
            "cannot read it",
            _give_back(companions(file), _user(os.geteuid())),
        )
    if head and head != SQLITE_HEADER:  # an empty file is an empty database to SQLite
        return StorageProblem(
            f"{file} is not an SQLite database (it does not start as one)",
            "fix the path, or move the file away for `srcore migrate` to create the database",
            fix_key=True,
        )
    return None


def _who() -> str:
    """This user's name, or its uid when it has none (``docker run --user 4242``)."""
    name = _user(os.geteuid())
    return f"uid {name}" if name.isdigit() else name


def _shut(folder: Path) -> bool:
    """Whether *folder* is a directory this user may not enter (search): nothing in it
    can be looked at, and ``Path.exists`` raises PermissionError there."""
    try:
        return folder.is_dir() and not os.access(folder, os.X_OK)
    except OSError:  # one above it is shut: said for that one
        return False


def _mounted_read_only(folder: Path) -> bool:
    """Whether *folder* is on a file system mounted read-only (``docker run --read-only``,
    a ``:ro`` volume, ``ProtectSystem=strict``), where the files' owner and modes, which
    the other checks read, do not matter."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def storage_problem(file: Path) -> StorageProblem | None:
    """What keeps the service's user (this one) from reading and writing the SQLite
    database *file*, or ``None``.

    A missing directory; a path that is a directory, another kind of file or not an SQLite
    database; a file system mounted read-only; the file, its ``-wal``, ``-shm`` or
    ``-journal`` files or its directory (where SQLite makes them) not writable. A missing
    file is no problem here: ``srcore migrate`` creates it.
    """
    folder = file.parent.absolute()
    file = folder / file.name
    blocked = next((d for d in (*reversed(folder.parents), folder) if _shut(d)), None)
    if blocked is not None:  # nothing beyond it can even be looked at
        return StorageProblem(
            f"this user ({_who()}) may not enter the directory {blocked}, on the way to the "
            "database",
            "let it in (the directory's group, with g+x), or keep the database in a "
            "directory of its own",
        )
    if not folder.is_dir():
        if folder.exists():
            return StorageProblem(
                f"{folder} is not a directory, so no database can be made in it",
                "fix the path",
                fix_key=True,
            )
        return StorageProblem(
            f"the directory {folder} does not exist",
            "create it (SQLite creates the database file, not its directory), or fix the path",
            fix_key=True,
        )
    if file.exists():
        found = _content_problem(file)
        if found is not None:
            return found
    if _mounted_read_only(folder):  # no chown helps: every user is refused (EROFS)
        return StorageProblem(
            f"the file system of {folder} is mounted read-only, and SQLite writes the "
            "database and its -wal and -shm files there",
            "mount it read-write (a container: give the data directory a writable volume)",
        )
    unwritable, who = _not_writable(companions(file), folder)
    if unwritable:
        owners = sorted({_user(_owner(path)) for path in unwritable})
        what = "the database file" if unwritable == [file] else "the database's files"
        return StorageProblem(
            f"{what} {', '.join(map(str, unwritable))} belong{'s' if len(unwritable) == 1 else ''}"
            f" to {', '.join(owners)}, and {who} cannot write "
            f"{'it' if len(unwritable) == 1 else 'them'}",
            _give_back(unwritable, _fix_for(who, file)),
        )
    who_not = _shut_out(folder, file)
    if who_not is not None:
        return StorageProblem(
            f"the directory {folder} is not writable by {who_not}, and SQLite makes its -wal "
            "and -shm files there",
            _give_back([folder], _fix_for(who_not, file)),
        )
    return None
