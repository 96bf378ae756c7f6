"""Process groups and the terminal: how srcore's supervisor reaches every process a child
started, keeps a terminal's Ctrl-C to itself, and has its children stopped if it is killed.

Signals go to whole groups (``killpg``), since a child's own children (gunicorn's workers,
a reloader's server) are in its group and must stop with it. A group counts as gone once
only zombies are left in it: a zombie holds no port and no file.

A supervisor killed outright (``kill -9``, the OOM killer) runs no code on its way out,
and its children, each in a session of its own, would keep running and holding their
ports. So it starts one watchdog process (:func:`watch_groups`, this file run as a script)
holding the reading end of a pipe whose only writer is the supervisor: the kernel closes
the writing end however the supervisor ends, the watchdog reads end-of-file, and stops
every group still registered, as the supervisor would have. The file imports nothing but
the standard library, so the watchdog starts in milliseconds and without srcore's imports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from typing import BinaryIO

__all__ = [
    "group_alive",
    "group_members",
    "signal_group",
    "stop_groups",
    "terminal_foreground",
    "watch_groups",
]


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


def stop_groups(groups: Iterable[int], *, grace: float, kill_wait: float = 5.0) -> list[int]:
    """SIGTERM to each of *groups*, up to *grace* seconds for them to empty, SIGKILL to
    what is left, up to *kill_wait* more seconds for that; the groups that were killed."""
    pending = [pgid for pgid in groups if group_alive(pgid)]
    _signal_and_wait(pending, signal.SIGTERM, grace)
    killed = [pgid for pgid in pending if group_alive(pgid)]
    _signal_and_wait(killed, signal.SIGKILL, kill_wait)
    return killed


def _signal_and_wait(groups: list[int], signum: int, seconds: float) -> None:
    """Send *signum* to each of *groups*, then wait up to *seconds* for all to empty."""
    for pgid in groups:
        signal_group(pgid, signum)
    deadline = time.monotonic() + seconds
    while any(group_alive(pgid) for pgid in groups) and time.monotonic() < deadline:
        time.sleep(0.05)


def watch_groups(source: BinaryIO, *, grace: float) -> list[int]:
    """The watchdog's loop: keep the groups *source* registers, stop them at its end.

    *source* carries lines ``+PGID`` (a group started) and ``-PGID`` (a group the
    supervisor has stopped and reaped: its id may be reused and must not be signalled).
    End of file means the supervisor is gone, or done: whatever is still registered is
    stopped (nothing, after an orderly stop). Returns the groups it found running.
    """
    groups: set[int] = set()
    for line in source:
        sign, number = line[:1], line[1:].strip()
        if not number.isdigit():
            continue
        if sign == b"+":
            groups.add(int(number))
        elif sign == b"-":
            groups.discard(int(number))
    running = sorted(pgid for pgid in groups if group_alive(pgid))
    stop_groups(running, grace=grace)
    return running


def _watchdog_main(argv: list[str]) -> int:
    """``python -I process_groups.py GRACE``: the watchdog a supervisor starts."""
    grace = float(argv[1]) if len(argv) > 1 else 5.0
    # Its own session already (the supervisor starts it so): a Ctrl-C or a hang-up meant
    # for the supervisor's terminal does not end it before the children it would stop.
    for signum in (signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    running = watch_groups(sys.stdin.buffer, grace=grace)
    if running:
        with contextlib.suppress(OSError, ValueError):
            print(
                f"srcore: the supervisor is gone: stopped {len(running)} process group(s) "
                "it had started",
                file=sys.stderr,
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(_watchdog_main(sys.argv))
