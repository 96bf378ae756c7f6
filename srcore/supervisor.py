"""srcore's one process supervisor: what ``srcore dev``, ``make demo``, the test helpers and
the benchmarks run their servers and workers with.

Every child gets a process group of its own (``start_new_session``), so a signal meant for
the supervisor never reaches a child half-way through its start-up, and stopping a child
means stopping its whole group: gunicorn's workers and a reloader's server go with it and
none is left holding a port. Stopping is one bounded sequence for everyone: SIGTERM to
each group, up to *stop_timeout* seconds for the groups to empty, SIGKILL for what is left.
A supervisor killed outright (``kill -9``) cannot run that sequence: a watchdog process it
starts with its first child runs it instead (:func:`srcore.process_groups.watch_groups`).

A signal (SIGINT, SIGTERM, SIGHUP) only asks for a stop (:meth:`Supervisor.request_stop`); every
wait of the supervisor notices and raises :class:`Stopped`, so a Ctrl-C at any moment of a
start-up ends in the same place: :meth:`Supervisor.stop`, a "stopping" line and status 0.

The lines of all children are merged into one log by honcho's :class:`~honcho.printer.
Printer` (time, name, colour per process). honcho's ``Manager`` is not used: its loop exits
130 on Ctrl-C; a Ctrl-C before every child's pid has come back from its helper process
raises ``KeyError`` in its handler and leaves the loop waiting forever; it waits for group
leaders only, and sends SIGKILL only once some child has exited by itself.

Signal handlers only record the signal; :meth:`Supervisor.take_signals` turns it into a
stop request outside the handler, because setting a ``threading.Event`` inside a handler
can deadlock with a wait on the same event that the signal interrupted.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime
import fcntl
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from honcho.colour import get_colours
from honcho.printer import Message, Printer

from srcore import process_groups
from srcore.process_groups import group_alive, signal_group

__all__ = [
    "AlreadyRunning",
    "Child",
    "Finished",
    "Program",
    "Stopped",
    "Supervisor",
    "http_ok",
    "lock_path",
    "running_alone",
]

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
#: The signals that ask the supervisor to stop: Ctrl-C, kill, a closed terminal.
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(Exception):
    """A wait of the supervisor gave up because a stop was asked for (a signal, usually)."""


class AlreadyRunning(Exception):
    """Another process holds the lock :func:`running_alone` asked for.

    *holder* is what that process wrote about itself (what it is, its pid, its terminal,
    since when), or a placeholder when it has not written it yet.
    """

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"{path} is held by {holder}")
        self.path = path
        self.holder = holder


def lock_path(config: Path) -> Path:
    """The lock of the programs that run the network of *config* (``make demo``,
    ``srcore dev``): beside the config, so that two runs on one config exclude each other
    and runs on two configs do not."""
    return config.with_name(f".{config.name}.lock")


@contextlib.contextmanager
def running_alone(path: Path, what: str) -> Iterator[None]:
    """Hold the exclusive lock *path* for the block, or raise :class:`AlreadyRunning`.

    The lock is ``flock`` on the file, which the kernel drops with the process however it
    ends (Ctrl-C, ``kill -9``, a closed terminal), so no stale lock is ever left to delete
    by hand; the file itself stays. While held, it says *what* runs, its pid, its terminal
    and since when: what a second run quotes, so that its user can find the first one. The
    descriptor is not inherited by children (close-on-exec): a child left running cannot
    keep the lock once its supervisor is gone.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Never through a link: one planted in a shared directory would have the lock's text
    # written over the file it names (OSError, ELOOP, instead).
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
            raise AlreadyRunning(path, holder or f"{what} (starting)") from None
        about = f"{what} (pid {os.getpid()}"
        terminal = _terminal_name()
        if terminal:
            about += f" in {terminal}"
        about += f", since {datetime.datetime.now():%H:%M:%S})"
        os.ftruncate(fd, 0)
        os.pwrite(fd, about.encode(), 0)
        yield
    finally:
        os.close(fd)


def _terminal_name() -> str | None:
    """The terminal this process runs in (/dev/pts/3), when it has one."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError, AttributeError):
            if stream.isatty():
                return os.ttyname(stream.fileno())
    return None


@dataclass(frozen=True)
class Program:
    """A command line to run: its name in the log, argv, environment and directory.

    Programs with the same *colour_key* (default: the name) share a colour in the log,
    so a service's server and its worker read as one service.
    """

    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    cwd: Path | None = None
    colour_key: str | None = None


@dataclass(frozen=True)
class Finished:
    """What a one-shot program (:meth:`Supervisor.run`) ended with."""

    returncode: int
    output: str


class Child:
    """A running program: its process (the leader of its own process group) and its last
    lines, kept so that a caller can wait for a line and quote a failure's tail."""

    def __init__(self, program: Program, process: subprocess.Popen[bytes]) -> None:
        self.program = program
        self.process = process
        self.lines: deque[str] = deque(maxlen=500)
        self.seen = threading.Condition()
        self.reader: threading.Thread | None = None
        #: Set while the supervisor itself stops or restarts it: not an exit to report.
        self.stopping = False
        self.reported = False

    @property
    def name(self) -> str:
        return self.program.name

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """Whether anything is left in its process group (the leader is reaped first)."""
        self.process.poll()
        return group_alive(self.process.pid)

    def tail(self, count: int = 40) -> str:
        return "\n".join(list(self.lines)[-count:])


class Supervisor:
    """Starts programs, merges their output, and stops them all within a bound.

    *output* receives the merged log (stdout by default); *colour* None means "when
    *output* is a terminal" (honcho's rule); without colour the children's own ANSI codes
    are stripped too. *name* labels the supervisor's own lines. Use it as a context
    manager: leaving the block stops every child, however the block was left.
    """

    def __init__(
        self,
        output: IO[str] | None = None,
        *,
        name: str = "system",
        names: Iterable[str] = (),
        colour: bool | None = None,
        stop_timeout: float = 5.0,
        kill_timeout: float = 5.0,
    ) -> None:
        stream = output if output is not None else sys.stdout
        isatty = getattr(stream, "isatty", None)
        terminal = bool(isatty and isatty())
        #: Whether lines are coloured: honcho colours only a terminal's.
        self.colour = terminal if colour is None else colour and terminal
        self.printer = Printer(stream, colour=self.colour)
        self.name = name
        self.printer.width = max([len(name), *(len(n) for n in names)])
        self.stop_timeout = stop_timeout
        self.kill_timeout = kill_timeout
        self.children: list[Child] = []
        self.stop_requested = threading.Event()
        self.force = threading.Event()
        self.reason = ""
        # What the signal handler records: the names of the signals received, taken over
        # by take_signals() outside the handler (an Event set in a handler can deadlock
        # with the same Event's wait it interrupted).
        self._signals: list[str] = []
        self._taken = 0
        self._print_lock = threading.Lock()
        self._mid_line = False
        self._closed = False
        self._children_lock = threading.RLock()
        self._colours = get_colours()
        self._colour_of: dict[str, str] = {}
        self._watchdog: subprocess.Popen[bytes] | None = None

    # -- the log -----------------------------------------------------------------------

    def align(self, names: Iterable[str]) -> None:
        """Make room for *names* in the log's name column now, before they print."""
        with self._print_lock:
            self.printer.width = max([self.printer.width, *(len(name) for name in names)])

    def say(self, text: str) -> None:
        """One line of the supervisor's own."""
        self._write(self.name, text, None)

    def _write(self, name: str, text: str, colour: str | None) -> None:
        if not self.colour:
            text = _ANSI.sub("", text)
        message = Message("line", text, datetime.datetime.now(), name, colour)
        with self._print_lock:
            if self._mid_line:  # after the first half of a one-shot program's line
                self._mid_line = False
                self.printer.output.write("\n")
            self.printer.width = max(self.printer.width, len(name))
            # The reader of our output may have gone away (a closed pipe, a terminal hung
            # up: EIO): keep running, unheard, so that the children are still read and
            # stopped.
            with contextlib.suppress(OSError, ValueError):
                self.printer.write(message)

    def echo(self, text: str) -> None:
        """Raw text (no prefix) into the log, between whole lines."""
        with self._print_lock, contextlib.suppress(OSError, ValueError):
            self.printer.output.write(text)
            self.printer.output.flush()
            if text:
                self._mid_line = not text.endswith("\n")

    def _pump(self, child: Child, colour: str | None) -> None:
        stream = child.process.stdout
        assert stream is not None
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            with child.seen:
                child.lines.append(line)
                child.seen.notify_all()
            self._write(child.name, line, colour)
        stream.close()

    # -- starting ----------------------------------------------------------------------

    def _spawn(self, program: Program) -> Child:
        # Checked and added under the lock stop() takes its list under: no child can start
        # after stop() decided whom to stop (a restart in another thread, say).
        with self._children_lock:
            self.check()
            if self._closed:
                raise Stopped("stopped")
            process = subprocess.Popen(  # noqa: S603 - argv comes from the caller's code
                program.argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=dict(program.env) if program.env is not None else None,
                cwd=program.cwd,
                start_new_session=True,
            )
            child = Child(program, process)
            self.children.append(child)
            self._tell_watchdog(f"+{process.pid}")
        return child

    # -- the watchdog --------------------------------------------------------------------

    def _tell_watchdog(self, line: str) -> None:
        """Register (``+PGID``) or release (``-PGID``) a group with the watchdog, which is
        started with the first child.

        Why a watchdog process and not ``PR_SET_PDEATHSIG`` in each child: the death signal
        fires when the *thread* that started the child ends (a restart from another thread
        would kill its program with that thread), it must be set between fork and exec (a
        ``preexec_fn``, unsafe beside the reader threads) or by a launcher in every child,
        it reaches the child alone (not the workers in its group), and it is Linux's. A pipe
        reaches end of file on any end of its writer, on every system, and the watchdog
        stops the whole groups with the same bounded sequence as :meth:`stop`.
        """
        with self._children_lock:
            if self._watchdog is None:
                if line.startswith("-"):
                    return
                self._watchdog = subprocess.Popen(  # noqa: S603 - our own file, no input
                    (
                        sys.executable,
                        "-I",  # the standard library only: no site, no cwd on sys.path
                        process_groups.__file__,
                        str(self.stop_timeout),
                    ),
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    start_new_session=True,
                )
            stdin = self._watchdog.stdin
            assert stdin is not None
            with contextlib.suppress(OSError, ValueError):  # a watchdog someone killed
                stdin.write(f"{line}\n".encode())
                stdin.flush()

    def _release(self, children: Iterable[Child]) -> None:
        """Tell the watchdog that *children*'s groups are stopped, when they are (their ids
        may be reused by then, by processes it must leave alone)."""
        for child in children:
            if child.process.poll() is not None and not child.alive():
                self._tell_watchdog(f"-{child.pid}")

    def _close_watchdog(self) -> None:
        """After the last stop: the watchdog reads end of file, finds nothing left, exits."""
        with self._children_lock:
            watchdog, self._watchdog = self._watchdog, None
        if watchdog is None:
            return
        assert watchdog.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            watchdog.stdin.close()
        try:
            watchdog.wait(timeout=self.stop_timeout + self.kill_timeout + 5)
        except subprocess.TimeoutExpired:
            watchdog.kill()
            watchdog.wait()

    def start(self, program: Program) -> Child:
        """Start *program* in a process group of its own; its lines go to the log."""
        key = program.colour_key or program.name
        if key not in self._colour_of:
            self._colour_of[key] = next(self._colours)
        colour = self._colour_of[key]
        with self._print_lock:  # the names line up from its first line on
            self.printer.width = max(self.printer.width, len(program.name))
        child = self._spawn(program)
        child.reader = threading.Thread(
            target=self._pump, args=(child, colour), name=f"supervisor-{program.name}", daemon=True
        )
        child.reader.start()
        self.say(f"started {program.name} (pid {child.pid})")
        return child

    def restart(self, child: Child) -> Child:
        """Stop *child*'s group (the same bounded sequence) and start its program again."""
        child.stopping = True
        self._stop_groups([child])
        self._release([child])
        with self._children_lock:
            self.children.remove(child)
        return self.start(child.program)

    def run(self, program: Program, *, echo: bool = True, finish_timeout: float = 120) -> Finished:
        """Run a one-shot *program* (a migration, a config check) to its end.

        Its output is passed on as it comes, in chunks rather than lines (a progress line
        written in two halves shows its first half at once), and returned. A stop asked
        for meanwhile lets it finish, up to *finish_timeout* seconds, rather than cut a
        migration in the middle; then :class:`Stopped` is raised.
        """
        child = self._spawn(program)
        child.stopping = True
        process = child.process
        chunks: list[str] = []

        def read() -> None:
            assert process.stdout is not None
            decoder = codecs.getincrementaldecoder("utf-8")("replace")
            while chunk := process.stdout.read1(4096):  # type: ignore[attr-defined]
                text = decoder.decode(chunk)
                chunks.append(text)
                if echo:
                    self.echo(text)
            process.stdout.close()

        reader = threading.Thread(target=read, name=f"supervisor-{program.name}", daemon=True)
        reader.start()
        child.reader = reader
        deadline: float | None = None
        while process.poll() is None:
            self.take_signals()
            if self.stop_requested.is_set() and deadline is None:
                self.say(f"letting {program.name} finish (up to {finish_timeout:.0f} s)")
                deadline = time.monotonic() + finish_timeout
            if deadline is not None and (self.force.is_set() or time.monotonic() > deadline):
                break
            time.sleep(0.05)
        if process.poll() is None:
            self._stop_groups([child])
        self._release([child])
        reader.join(timeout=5)
        with self._children_lock:
            self.children.remove(child)
            idle = not self.children
        if idle:  # a supervisor used for one-shot programs alone may never be stopped
            self._close_watchdog()
        self.check()
        return Finished(process.returncode, "".join(chunks))

    # -- waiting -----------------------------------------------------------------------

    def request_stop(self, reason: str = "") -> None:
        """Ask for a stop (safe in a signal handler); a second request skips the grace."""
        if self.stop_requested.is_set():
            self.force.set()
        self.reason = self.reason or reason
        self.stop_requested.set()

    def take_signals(self) -> None:
        """Turn the signals the handler recorded into stop requests (main thread)."""
        while self._taken < len(self._signals):
            self._taken += 1
            self.request_stop(self._signals[self._taken - 1])

    def check(self) -> None:
        """Raise :class:`Stopped` when a stop was asked for."""
        self.take_signals()
        if self.stop_requested.is_set():
            raise Stopped(self.reason)

    def sleep(self, seconds: float) -> None:
        """Sleep, but raise :class:`Stopped` as soon as a stop is asked for."""
        deadline = time.monotonic() + seconds
        while True:
            self.check()
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))

    def wait_for_line(self, child: Child, pattern: str, *, timeout: float) -> str:
        """The first line of *child* matching *pattern* (a regex, searched); raises
        :class:`Stopped`, or RuntimeError when the child exits or *timeout* passes first."""
        found = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            # Whether it ended before these lines were looked at: its last lines count.
            ended = child.process.poll() is not None and not (
                child.reader and child.reader.is_alive()
            )
            with child.seen:
                lines = list(child.lines)
                for line in lines[seen:]:
                    if found.search(line):
                        return line
                seen = len(lines)
                if not ended:
                    child.seen.wait(0.1)
            self.check()
            if ended:
                raise RuntimeError(
                    f"{child.name} exited with status {child.process.returncode}:\n{child.tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name}: no {pattern!r} within {timeout:.0f} s")

    def wait_until(self, ready: Callable[[], bool], child: Child, *, timeout: float) -> None:
        """Until *ready()* is true; raises :class:`Stopped`, or RuntimeError when *child*
        exits or *timeout* passes first."""
        deadline = time.monotonic() + timeout
        while not ready():
            if child.process.poll() is not None:
                if child.reader is not None:
                    child.reader.join(timeout=2)
                raise RuntimeError(
                    f"{child.name} exited with status {child.process.returncode}:\n{child.tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"{child.name} was not ready within {timeout:.0f} s")
            self.sleep(0.1)

    def watch(
        self,
        *,
        until: Literal["any", "all", "stop"] = "any",
        guard: Callable[[], str | None] | None = None,
    ) -> int:
        """Until a stop is asked for (0), or until children exit (1): *until* says whether
        any of them, all of them (the others keep running meanwhile), or none ends the
        watch. Each exit is reported once; a child the supervisor stops or restarts is not
        reported.

        *guard*, called about once a second, names what went wrong around the children
        (their directory deleted, say) or returns None; a reason is said and ends the
        watch (1): what the children cannot notice themselves.
        """
        checked = time.monotonic()
        while True:
            time.sleep(0.2)
            self.take_signals()
            if self.stop_requested.is_set():
                return 0
            if guard is not None and time.monotonic() - checked >= 1.0:
                checked = time.monotonic()
                reason = guard()
                if reason is not None:
                    self.say(reason)
                    return 1
            with self._children_lock:
                children = list(self.children)
            for child in children:
                code = child.process.poll()
                if code is not None and not child.stopping and not child.reported:
                    child.reported = True
                    self.say(f"{child.name} exited with status {code}")
            exited = [c.reported for c in children]
            if until == "stop" or not exited:
                continue
            if all(exited) if until == "all" else any(exited):
                return 1

    # -- stopping ----------------------------------------------------------------------

    def stop(self) -> str:
        """Stop every child: a "stopping" line, SIGTERM to each group, a bounded wait,
        SIGKILL for what is left. Returns (and prints) the one-line summary."""
        started = time.monotonic()
        self.take_signals()
        with self._children_lock:
            self._closed = True
            children = list(self.children)
        for child in children:
            child.stopping = True
        names = ", ".join(c.name for c in children) or "nothing was running"
        self.say(f"stopping{' (' + self.reason + ')' if self.reason else ''}: {names}")
        killed = self._stop_groups(children)
        self._release(children)
        for child in children:
            if child.reader is not None:
                child.reader.join(timeout=2)
        with self._children_lock:
            for child in children:
                if child in self.children:
                    self.children.remove(child)
        self._close_watchdog()
        summary = f"stopped {len(children)} process(es) in {time.monotonic() - started:.1f} s"
        if killed:
            summary += f"; killed {', '.join(killed)} after {self.stop_timeout:g} s"
        self.say(summary)
        return summary

    def _stop_groups(self, children: list[Child]) -> list[str]:
        """SIGTERM to each group, SIGKILL to the groups left after the bound; the names of
        the killed. Returns once every group is empty (or the kill bound passed)."""
        for child in children:
            signal_group(child.pid, signal.SIGTERM)
        killed: list[str] = []
        deadline = time.monotonic() + self.stop_timeout
        while any(child.alive() for child in children):
            self.take_signals()  # a second Ctrl-C: no more waiting
            if not killed and (self.force.is_set() or time.monotonic() > deadline):
                killed = [child.name for child in children if child.alive()]
                for child in children:
                    signal_group(child.pid, signal.SIGKILL)
                deadline = time.monotonic() + self.kill_timeout
            elif killed and time.monotonic() > deadline:
                break
            time.sleep(0.05)
        for child in children:  # reap the leaders (a zombie holds nothing, but is untidy)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.process.wait(timeout=1)
        return killed

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        """SIGINT, SIGTERM and SIGHUP ask for a stop (a second one skips the grace) while
        the block runs; the previous handlers come back afterwards.

        SIGHUP is a closed terminal: the children run in process groups (and sessions) of
        their own, so the hang-up reaches none of them, and a supervisor that SIGHUP's
        default action ended would leave them all running, ports held, with no terminal
        left to stop them from.
        """

        def handler(signum: int, _frame: Any) -> None:
            self._signals.append(signal.Signals(signum).name)

        previous = {s: signal.signal(s, handler) for s in _STOP_SIGNALS}
        try:
            yield
        finally:
            for signum, old in previous.items():
                signal.signal(signum, old)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        with self._children_lock:
            running = bool(self.children)
        if running:
            self.stop()
        self._close_watchdog()


def http_ok(url: str, *, timeout: float = 1.0) -> bool:
    """Whether *url* answers 200 now: what :meth:`Supervisor.wait_until` polls for a
    server's ``/healthz``."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            return bool(response.status == 200)
    except OSError:
        return False
