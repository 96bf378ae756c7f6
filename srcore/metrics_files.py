"""The metrics directory of a server under gunicorn: made by the master, shared by its
workers' Prometheus files, folded as workers die, removed when a killed server left it.

Each worker process keeps its Prometheus values in files of its own, in a directory the
master makes for the server (:mod:`srcore.gunicorn_worker`) and the metrics page adds up
(:mod:`srcore.metrics`). A worker restarted by max-requests or a timeout leaves its files
behind: its counts must stay in the sums, as counters only ever grow, but one file per
type per worker that ever lived would grow the directory, and every scrape's work, for
the life of the server. So the master folds a dead worker's files into one file per type
(``counter_dead.db``), and a scrape reads the directory while no folding is half done.

Every one of these files is written through a memory map, and a page of a map that the
file system has no block for, when first written, kills the process with ``SIGBUS``: on
a full disk (or a full tmpfs ``/tmp``) prometheus-client's files, which it makes sparse,
killed the worker counting a request, and then the master folding that worker's files,
taking the whole server down. So srcore reserves the blocks of a file before it is
mapped or grown (:func:`reserve_space_for_values`); a full disk is then an
:class:`OSError` where it can be handled: the process stops counting, a fold is left
undone, and requests are served.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator
from typing import Any

__all__ = [
    "FOLD_LOCK",
    "METRICS_DIR_PREFIX",
    "SERVER_LOCK",
    "fold_dead_process",
    "make_metrics_dir",
    "metrics_lock",
    "remove_stale_metrics_dirs",
    "reserve_space_for_values",
]

#: A file in the directory held locked (shared) by its server while it runs: a directory
#: whose lock nobody holds was left by a server that was killed, and may be removed.
SERVER_LOCK = "server.lock"
#: The lock a fold takes exclusively and a scrape shared, so a scrape never sees a dead
#: worker's counts twice (folded and not yet removed) or not at all.
FOLD_LOCK = "fold.lock"
#: The prefix of the directories servers make in the temporary directory.
METRICS_DIR_PREFIX = "srcore-metrics-"

#: How the values of a dead process combine with those of the ones dead before it, by
#: file type (``counter``, ``gauge_max``...): as the metrics page combines them. A gauge
#: in mode ``all`` keeps one series per process by definition, and ``live*`` ones leave
#: with their process, so neither is folded.
_FOLDS: dict[str, str] = {
    "counter": "sum",
    "histogram": "sum",
    "summary": "sum",
    "gauge_sum": "sum",
    "gauge_min": "min",
    "gauge_max": "max",
    "gauge_mostrecent": "mostrecent",
}
_DEAD = "dead"


def _fold_values(
    into: dict[str, tuple[float, float]], values: list[tuple[str, float, float]], how: str
) -> None:
    for key, value, timestamp in values:
        if key not in into:
            into[key] = (value, timestamp)
            continue
        old, old_timestamp = into[key]
        if how == "sum":
            into[key] = (old + value, 0.0)
        elif how == "min":
            into[key] = (min(old, value), timestamp)
        elif how == "max":
            into[key] = (max(old, value), timestamp)
        elif timestamp >= old_timestamp:  # mostrecent
            into[key] = (value, timestamp)


#: How large a new file of values is made: prometheus-client's own first size.
_INITIAL_SIZE = 64 * 1024
#: Errors of a file system that cannot reserve blocks ahead: its files stay sparse.
_CANNOT_RESERVE = frozenset({errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS})


def _reserve(path: str, size: int) -> None:
    """Give the file *path* (made if missing) blocks for its first *size* bytes now.

    Raises :class:`OSError` (``ENOSPC``) when the file system has no room for them; a file
    this call made is then removed, so that no reader finds it empty.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        made = os.fstat(fd).st_size == 0
        try:
            os.posix_fallocate(fd, 0, size)
        except OSError as exc:
            if exc.errno in _CANNOT_RESERVE:
                return  # as prometheus-client alone: sparse, and counting on the disk's room
            if made:
                os.unlink(path)
            raise
    finally:
        os.close(fd)


def _entry_size(key: str) -> int:
    """Bytes one value of *key* takes in a file: its length, the key padded to 8, two
    doubles (prometheus-client's layout)."""
    length = len(key.encode("utf-8"))
    return 4 + length + (8 - (length + 4) % 8) + 16


_reserved_class: type[Any] | None = None


def _reserved_mmaped_dict() -> type[Any]:
    """prometheus-client's ``MmapedDict`` with the blocks of its file reserved before the
    file is mapped, and before it grows to hold a new key (it doubles)."""
    global _reserved_class
    if _reserved_class is not None:
        return _reserved_class
    from prometheus_client.mmap_dict import MmapedDict

    class ReservedMmapedDict(MmapedDict):
        def __init__(self, filename: str, read_mode: bool = False) -> None:
            if not read_mode:
                try:
                    size = os.stat(filename).st_size
                except FileNotFoundError:
                    size = 0
                _reserve(filename, max(size, _INITIAL_SIZE))
            super().__init__(filename, read_mode)  # type: ignore[no-untyped-call]

        def _init_value(self, key: str) -> None:
            needed = self._used + _entry_size(key)
            if needed > self._capacity:
                capacity = self._capacity
                while needed > capacity:
                    capacity *= 2
                _reserve(self._fname, capacity)
            super()._init_value(key)  # type: ignore[no-untyped-call]

    _reserved_class = ReservedMmapedDict
    return ReservedMmapedDict


def reserve_space_for_values() -> None:
    """Have prometheus-client reserve the blocks of this process's value files before it
    maps or grows them, so that a full disk fails a count with :class:`OSError`
    (which :mod:`srcore.metrics` answers by no longer counting) instead of killing the
    process with ``SIGBUS``. prometheus-client offers no setting for it: its value class
    looks the file class up in its module at each new file, and it is replaced there."""
    from prometheus_client import values

    values.MmapedDict = _reserved_mmaped_dict()  # type: ignore[attr-defined]


def _read_values(path: str) -> list[tuple[str, float, float]]:
    from prometheus_client.mmap_dict import MmapedDict

    return [
        (key, value, timestamp)
        for key, value, timestamp, _ in MmapedDict.read_all_values_from_file(path)  # type: ignore[no-untyped-call]
    ]


@contextlib.contextmanager
def metrics_lock(directory: str, *, exclusive: bool) -> Iterator[None]:
    """Hold the directory's :data:`FOLD_LOCK`; without one (a directory srcore did not
    make), hold nothing: nothing folds there."""
    try:
        fd = os.open(os.path.join(directory, FOLD_LOCK), os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # releases the lock


def fold_dead_process(directory: str, pid: int) -> None:
    """Fold the metric files of the dead process *pid* into the ``*_dead.db`` ones.

    The new file is written aside and renamed over the old, then the process's file is
    removed, all under the exclusive :data:`FOLD_LOCK`, so a scrape sees the counts once.
    Raises :class:`OSError` (no room on the disk for the folded file: nothing is changed)
    or :class:`RuntimeError` (a file the process left torn).
    """
    with metrics_lock(directory, exclusive=True):
        for kind, how in _FOLDS.items():
            mine = os.path.join(directory, f"{kind}_{pid}.db")
            if not os.path.isfile(mine):
                continue
            dead = os.path.join(directory, f"{kind}_{_DEAD}.db")
            values: dict[str, tuple[float, float]] = {}
            if os.path.isfile(dead):
                _fold_values(values, _read_values(dead), how)
            _fold_values(values, _read_values(mine), how)
            aside = dead + ".new"  # not *.db: the metrics page reads only those
            with contextlib.suppress(FileNotFoundError):
                os.unlink(aside)
            try:
                folded = _reserved_mmaped_dict()(aside)
                try:
                    for key, (value, timestamp) in values.items():
                        folded.write_value(key, value, timestamp)
                finally:
                    folded.close()
            except OSError:  # no room for it (ENOSPC): the files stay as they were
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(aside)
                raise
            os.replace(aside, dead)
            os.unlink(mine)


def make_metrics_dir() -> tuple[str, int]:
    """A fresh directory for one server's metrics (mode 0700) and the descriptor holding
    its :data:`SERVER_LOCK`, which the server keeps open while it runs.

    The lock file is locked before it gets its name, so another server starting at the
    same moment never takes the new directory for a dead one's.
    """
    directory = tempfile.mkdtemp(prefix=METRICS_DIR_PREFIX)
    aside = os.path.join(directory, SERVER_LOCK + ".new")
    fd = os.open(aside, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.rename(aside, os.path.join(directory, SERVER_LOCK))
    os.close(os.open(os.path.join(directory, FOLD_LOCK), os.O_RDWR | os.O_CREAT, 0o600))
    return directory, fd


#: The files a server makes in its metrics directory: prometheus-client's and srcore's.
_OURS = re.compile(
    r"^(?:(?:counter|histogram|summary|gauge_[a-z]+)_(?:\d+|dead)\.db(?:\.new)?"
    rf"|{re.escape(SERVER_LOCK)}|{re.escape(FOLD_LOCK)})$"
)


def remove_stale_metrics_dirs(parent: str | None = None) -> list[str]:
    """Remove the metrics directories that servers killed before they could (SIGKILL, a
    power cut) left in *parent* (the temporary directory); return their paths.

    Only this user's ``srcore-metrics-*`` directories with a :data:`SERVER_LOCK` nobody
    holds (a running server, or a worker it left, holds it), and in them only the files
    a server makes: anything else put there stays, with its directory.
    """
    parent = tempfile.gettempdir() if parent is None else parent
    removed = []
    try:
        names = os.listdir(parent)
    except OSError:
        return []
    for name in names:
        directory = os.path.join(parent, name)
        if not name.startswith(METRICS_DIR_PREFIX):
            continue
        try:
            info = os.lstat(directory)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
                continue
            fd = os.open(os.path.join(directory, SERVER_LOCK), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue  # not a server's (or an older srcore's): left alone
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # its server runs
        try:
            for entry in os.listdir(directory):
                if _OURS.match(entry):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(os.path.join(directory, entry))
            with contextlib.suppress(OSError):
                os.rmdir(directory)
                removed.append(directory)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed
