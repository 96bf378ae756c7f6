"""Process groups and the terminal: how srcore's supervisor reaches every process a child
started, and keeps a terminal's Ctrl-C to itself.

Signals go to whole groups (``killpg``), since a child's own children (gunicorn's workers,
a reloader's server) are in its group and must stop with it. A group counts as gone once
only zombies are left in it: a zombie holds no port and no file.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

__all__ = ["group_alive", "group_members", "signal_group", "terminal_foreground"]


@contextlib.contextmanager
def terminal_foreground() -> Iterator[bool]:
    """Make this process's own process group the terminal's foreground for the block.

    The terminal sends Ctrl-C's SIGINT to its whole foreground group. Started by ``make``,
    that group holds make as well, and an interrupted make ends with "Interrupt" and
    status 130 whatever its recipe did. In a group of its own, only this process hears the
    Ctrl-C, stops its children, and its status is what make reports. Yields whether it
    took the terminal (not without one, nor when running in the background).
    """
    try:
        fd = os.open("/dev/tty", os.O_RDWR | os.O_NOCTTY)
    except OSError:
        yield False
        return
    took = False
    try:
        previous = os.tcgetpgrp(fd)
        if previous == os.getpgrp() and os.getpgrp() != os.getpid():
            os.setpgid(0, 0)
            _set_foreground(fd, os.getpgrp())
            took = True
    except OSError:
        pass
    try:
        yield took
    finally:
        if took:
            with contextlib.suppress(OSError):
                _set_foreground(fd, previous)
        os.close(fd)


def _set_foreground(fd: int, pgid: int) -> None:
    # From a background group tcsetpgrp raises SIGTTOU, which would stop us; blocked, it
    # lets the call through (POSIX).
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTTOU})
    try:
        os.tcsetpgrp(fd, pgid)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def signal_group(pgid: int, signum: int) -> None:
    """Send *signum* to group *pgid*, if it is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def group_alive(pgid: int) -> bool:
    """Whether group *pgid* has a process left that is not a zombie."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still counts for kill(); one whose parent is gone waits for init to reap it,
    # and holds no port or file any more. Where /proc says so, zombies do not count.
    return bool(group_members(pgid)) if os.path.isdir("/proc") else True


def group_members(pgid: int) -> list[int]:
    """The pids of the processes of group *pgid* that are not zombies (Linux's /proc)."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(os.path.join(entry.path, "stat"), encoding="utf-8") as file:
                stat = file.read()
        except OSError:
            continue
        state, _ppid, group = stat.rsplit(")", 1)[1].split()[:3]
        if int(group) == pgid and state != "Z":
            pids.append(int(entry.name))
    return pids
