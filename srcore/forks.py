"""Objects that keep threads, locks or sockets, and a process that forks.

gunicorn and Celery's prefork pool fork worker processes from a parent that may have
built such objects already. A child has none of the parent's threads, and a lock one of
them held at the fork stays held for good; :func:`reset_in_child` lets an object start
afresh in the child instead of comparing process ids on every use.

Both also keep files in the temporary directory for their workers (gunicorn a heartbeat
file per worker, Celery's prefork pool its shared memory, ``srcore serve`` its metrics
directory): a host where this user can write none of the places Python looks (a container
with a read-only root and ``TMPDIR`` unset) failed each of them with a traceback.
:func:`temporary_directory_problem` says so in one line, before anything forks.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Callable

__all__ = ["reset_in_child", "temporary_directory_problem"]

#: The variables Python's :mod:`tempfile` reads, in its order, before its fixed places.
_TEMPORARY_VARIABLES = ("TMPDIR", "TEMP", "TMP")
#: The places it tries next (on POSIX), before the working directory.
_TEMPORARY_PLACES = ("/tmp", "/var/tmp", "/usr/tmp")  # noqa: S108 - named, never used


def reset_in_child(method: Callable[[], object]) -> None:
    """Call the bound *method* in every forked child, for as long as its object lives.

    Only a weak reference is kept, so registering does not keep the object alive.
    """
    ref = weakref.WeakMethod(method)

    def after_fork() -> None:
        found = ref()
        if found is not None:
            found()

    os.register_at_fork(after_in_child=after_fork)


def temporary_directory_problem() -> str | None:
    """Why this process has no directory for temporary files, in one line; ``None`` when
    it has one.

    Python takes the first of ``$TMPDIR``, ``$TEMP``, ``$TMP``, ``/tmp``, ``/var/tmp``,
    ``/usr/tmp`` and the working directory where it can make a file, and raises a bare
    ``FileNotFoundError`` when it can in none.
    """
    try:
        tempfile.gettempdir()
    except OSError:
        pass
    else:
        return None
    tried = [f"{name}={os.environ[name]}" for name in _TEMPORARY_VARIABLES if os.environ.get(name)]
    if not tried:
        tried.append("TMPDIR (not set)")
    try:
        here = os.getcwd()
    except OSError:
        here = "(gone)"
    places = ", ".join([*tried, *_TEMPORARY_PLACES])
    return (
        f"no directory for temporary files: this user (uid {os.getuid()}) can write in none of "
        f"{places} or the working directory {here}: set TMPDIR to a directory it can write in "
        "(a tmpfs, or one beside its databases)"
    )
