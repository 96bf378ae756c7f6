"""The metrics directory of a server under gunicorn: made by the master, shared by its
workers' Prometheus files, folded as workers die, removed when a killed server left it.

Each worker process keeps its Prometheus values in files of its own, in a directory the
master makes for the server (:mod:`srcore.gunicorn_worker`) and the metrics page adds up
(:mod:`srcore.metrics`). A worker restarted by max-requests or a timeout leaves its files
behind: its counts must stay in the sums, as counters only ever grow, but one file per
type per worker that ever lived would grow the directory, and every scrape's work, for
the life of the server. So the master folds a dead worker's files into one file per type
(``counter_dead.db``), and a scrape reads the directory while no folding is half done.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from collections.abc import Iterator

__all__ = [
    "FOLD_LOCK",
    "METRICS_DIR_PREFIX",
    "SERVER_LOCK",
    "fold_dead_process",
    "make_metrics_dir",
    "metrics_lock",
    "remove_stale_metrics_dirs",
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
    Raises :class:`OSError` or :class:`RuntimeError` (a file the process left torn).
    """
    from prometheus_client.mmap_dict import MmapedDict

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
            folded = MmapedDict(aside)  # type: ignore[no-untyped-call]
            try:
                for key, (value, timestamp) in values.items():
                    folded.write_value(key, value, timestamp)  # type: ignore[no-untyped-call]
            finally:
                folded.close()  # type: ignore[no-untyped-call]
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
