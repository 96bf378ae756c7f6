"""Brute-force protection: growing delays, then a lockout, per account and per client.

:class:`Throttle` is plain logic over failure logs kept in a :mod:`limits` storage (the
package Flask-Limiter stores its rate limits with): it counts failures per key
(``("login-account", "alice")``, ``("login-ip", "192.0.2.1")``) and answers whether a new
attempt may go ahead and, if not, how long to wait. The first ``free_failures`` failures
cost nothing; after that each failure makes the next attempt wait ``base_delay`` seconds,
doubling every time; from ``max_failures`` on the key is locked for ``lockout`` seconds
after each failure. A failure counts for ``window`` seconds; a locked key stays locked
(each failure re-arming the lockout) until ``window`` seconds pass without one. A success
forgets the key at once.

Each counter is three keys of the storage's moving-window log: every failure's time
(``log``, for the count), the last failure's (``last``, which the delays run from) and the
last failure's while locked (``lock``). :func:`make_store` picks the storage from
``[global] redis-url`` (``limits``' Redis storage, shared by every worker and host) or
keeps it in process (:class:`srcore.windows.MovingWindows`, capped at a number of keys).
:class:`srcore.limiter_storage.WindowsStorage` puts the same choice behind a ``limits``
storage URI (``srcore://``) for Flask-Limiter's moving-window strategy.

Both stamp entries with :func:`time.time` and take no clock, so this module reads the
time the same way: tests move ``time.time`` rather than pass a clock.

An attempt is checked before it is tried and counted after, so attempts sent at once all
pass the check before any of them is counted: as many guesses per lockout as the server
takes requests at once. :meth:`Throttle.take_turn` lets one attempt of a counter run at a
time (a fourth key, ``turn``, held for :data:`TURN_SECONDS` at most); the attempt that
finds the turn taken is refused for a moment (:data:`TURN_WAIT`), and the next one checks
after the failure before it is counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from srcore.extras import MissingExtraError

__all__ = [
    "TURN_SECONDS",
    "TURN_WAIT",
    "Decision",
    "FallbackStore",
    "Store",
    "Throttle",
    "ThrottleKey",
    "limits_url",
    "make_store",
]

log = logging.getLogger("srcore.throttle")

#: A counter's key: what is counted (``"login-account"``) and for whom (``"alice"``).
ThrottleKey = tuple[str, str]

#: The three storage keys of one counter (see the module's docstring).
_PARTS = ("log", "last", "lock")

#: How long an attempt may hold its counter's turn (seconds): a process that ended while
#: holding one leaves it at most this long.
TURN_SECONDS = 30

#: The wait (seconds) an attempt is told when another attempt of its counter has the turn.
TURN_WAIT = 1.0


@dataclass(frozen=True)
class Decision:
    """Whether an attempt may go ahead; if not, how many seconds until it may."""

    allowed: bool
    retry_after: float = 0.0

    @property
    def retry_after_seconds(self) -> int:
        """``retry_after`` rounded up to whole seconds, for a ``Retry-After`` header."""
        whole = int(self.retry_after)
        return whole + 1 if self.retry_after > whole else whole


class Store(Protocol):
    """The moving-window part of a :mod:`limits` storage that :class:`Throttle` uses."""

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Log an entry now unless *limit* entries are younger than *expiry* seconds."""

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """The oldest entry younger than *expiry* seconds, and how many there are."""

    def clear(self, key: str) -> None:
        """Forget *key*."""


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Throttle:
    """Growing delays and a lockout window over failure logs in *store*."""

    def __init__(
        self,
        store: Store,
        *,
        max_failures: int = 5,
        lockout: float | timedelta = 900.0,
        base_delay: float | timedelta = 1.0,
        free_failures: int = 3,
        window: float | timedelta | None = None,
        prefix: str = "srcore:throttle",
    ) -> None:
        if max_failures < 1:
            raise ValueError("max_failures must be at least 1")
        if not 0 <= free_failures <= max_failures:
            raise ValueError("free_failures must be between 0 and max_failures")
        self.store = store
        self.max_failures = max_failures
        self.lockout = _seconds(lockout)
        self.base_delay = _seconds(base_delay)
        self.free_failures = free_failures
        window_seconds = _seconds(window) if window is not None else 4 * self.lockout
        if window_seconds < self.lockout:
            raise ValueError("window must be at least as long as lockout")
        # The storages take whole seconds.
        self.window = max(math.ceil(window_seconds), 1)
        self.prefix = prefix

    def __repr__(self) -> str:
        return (
            f"<Throttle max_failures={self.max_failures} lockout={self.lockout:g}s "
            f"base_delay={self.base_delay:g}s store={type(self.store).__name__}>"
        )

    def wait_after(self, failures: int) -> float:
        """How long after the last of *failures* failures the next attempt must wait."""
        if failures >= self.max_failures:
            return self.lockout
        if failures < self.free_failures or failures <= 0:
            return 0.0
        # Cap the exponent: the lockout bounds the wait anyway.
        exponent = min(failures - self.free_failures, 62)
        return min(self.base_delay * 2.0**exponent, self.lockout)

    def _name(self, key: ThrottleKey, part: str) -> str:
        kind, value = key
        return f"{self.prefix}:{kind}:{value}:{part}"

    def _newest(self, key: ThrottleKey, part: str) -> float | None:
        """The time logged under the one-entry *part* of *key*, if younger than the window."""
        when, count = self.store.get_moving_window(self._name(key, part), 1, self.window)
        return when if count else None

    def _stamp(self, key: ThrottleKey, part: str) -> None:
        # A one-entry log keeps its entry for the window, so it is cleared to take a new one.
        name = self._name(key, part)
        self.store.clear(name)
        self.store.acquire_entry(name, 1, self.window)

    def _until(self, key: ThrottleKey) -> float:
        """When the next attempt concerning *key* may go ahead (0: at once)."""
        locked = self._newest(key, "lock")
        if locked is not None:
            return locked + self.lockout
        _oldest, failures = self.store.get_moving_window(
            self._name(key, "log"), self.max_failures, self.window
        )
        wait = self.wait_after(failures)
        if wait <= 0:
            return 0.0
        last = self._newest(key, "last")
        return last + wait if last is not None else 0.0

    def _decide(self, keys: Iterable[ThrottleKey]) -> Decision:
        retry_after = 0.0
        now = time.time()
        for key in keys:
            retry_after = max(retry_after, self._until(key) - now)
        # To the millisecond: Redis keeps times to 14 digits (0.1 ms), and a wait a hair
        # too long would make a Retry-After one second longer.
        retry_after = round(retry_after, 3)
        return Decision(allowed=retry_after <= 0, retry_after=max(retry_after, 0.0))

    def check(self, keys: Sequence[ThrottleKey]) -> Decision:
        """Whether an attempt concerning all of *keys* may go ahead now."""
        return self._decide(keys)

    def failure(self, keys: Sequence[ThrottleKey]) -> Decision:
        """Record a failed attempt for each of *keys*; return what the next attempt faces."""
        wait = 0.0
        for key in keys:
            if self._newest(key, "lock") is not None:
                self._stamp(key, "lock")  # locked: each failure re-arms the lockout
                wait = max(wait, self.lockout)
                continue
            log = self._name(key, "log")
            # Refused once max_failures are logged, which is when the lock takes over.
            self.store.acquire_entry(log, self.max_failures, self.window)
            _oldest, failures = self.store.get_moving_window(log, self.max_failures, self.window)
            after = self.wait_after(failures)
            # A free failure needs no stamp: while the count stays below free_failures
            # nothing waits, and once it reaches them a stamped failure was the last.
            if failures >= self.max_failures:
                self._stamp(key, "lock")
            elif after > 0:
                self._stamp(key, "last")
            wait = max(wait, after)
        # The failures were just stamped: the wait runs from now.
        return Decision(allowed=wait <= 0, retry_after=wait)

    def take_turn(self, keys: Sequence[ThrottleKey]) -> Decision:
        """:meth:`check` an attempt concerning all of *keys*, holding their turn if it may
        go ahead: until :meth:`end_turn`, another attempt concerning one of them is
        refused (for :data:`TURN_WAIT`). Refused, it holds nothing.

        End the turn after the attempt's :meth:`failure` or :meth:`success` is recorded,
        or when it ends without either.
        """
        taken: list[ThrottleKey] = []
        for key in dict.fromkeys(keys):
            if not self.store.acquire_entry(self._name(key, "turn"), 1, TURN_SECONDS):
                self.end_turn(taken)
                return Decision(allowed=False, retry_after=TURN_WAIT)
            taken.append(key)
        decision = self._decide(keys)  # what the attempts before this one left
        if not decision.allowed:
            self.end_turn(taken)
        return decision

    def end_turn(self, keys: Iterable[ThrottleKey]) -> None:
        """Give back the turn :meth:`take_turn` took for *keys*."""
        for key in keys:
            self.store.clear(self._name(key, "turn"))

    def success(self, keys: Sequence[ThrottleKey]) -> None:
        """Forget the failures of *keys* (pass the account's key, not a shared one)."""
        for key in keys:
            for part in _PARTS:
                self.store.clear(self._name(key, part))


def limits_url(redis_url: str) -> str:
    """*redis_url* as ``limits`` names its storage: ``[global] redis-url`` is a redis-py
    URL, where a socket is ``unix://``, which ``limits`` knows as ``redis+unix://`` (and
    refuses under redis-py's name). ``redis://`` and ``rediss://`` are the same in both."""
    scheme, sep, rest = redis_url.partition("://")
    if sep and scheme.lower() == "unix":
        return f"redis+unix://{rest}"
    return redis_url


def make_store(redis_url: str | None, *, timeout: float = 2.0, max_keys: int = 100_000) -> Store:
    """``limits``' Redis storage for *redis_url* (counting in process while Redis cannot be
    reached: :class:`FallbackStore`), or counts in process memory when *redis_url* is empty.

    In process at most *max_keys* keys are kept (a counter has up to three), those that
    failed longest ago dropped first: names typed and addresses are as many as attackers
    care to try. With several processes each one counts on its own, so an attacker gets up
    to that many times the attempts: use Redis there. Connecting is lazy: nothing is
    opened until the first check.
    """
    from srcore.windows import MovingWindows

    in_process = MovingWindows(max_keys=max_keys)
    if not redis_url:
        return in_process
    try:
        import redis  # noqa: F401  (limits imports it; name the extra when it is missing)
    except ImportError as exc:
        raise MissingExtraError("redis", "a throttle on Redis ([global] redis-url)") from exc
    from limits.storage import storage_from_string

    shared = storage_from_string(
        limits_url(redis_url),
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        wrap_exceptions=True,
    )
    if not hasattr(shared, "acquire_entry"):
        raise ValueError(f"{type(shared).__name__} keeps no moving windows for a throttle")
    return FallbackStore(shared, in_process)  # type: ignore[arg-type]


class FallbackStore:
    """A :class:`Store` on Redis that counts in process while Redis cannot be reached.

    A throttle that raised would turn every login into an error page for as long as Redis is
    down, and one that let attempts through would stop protecting anyone: this keeps
    counting, each process on its own (as a single process does without Redis), and goes
    back to Redis once it answers again (tried every *retry_every* seconds). What was
    counted meanwhile stays in the process; Redis keeps what it had.
    """

    def __init__(self, primary: Store, fallback: Store, *, retry_every: float = 5.0) -> None:
        self.primary = primary
        self.fallback = fallback
        self.retry_every = retry_every
        self._down_until: float | None = None

    @property
    def degraded(self) -> bool:
        """Whether the last use found Redis unreachable."""
        return self._down_until is not None

    def _use(self, method: str, *args: object) -> Any:
        from limits.errors import StorageError

        down = self._down_until
        if down is None or time.monotonic() >= down:
            try:
                answer = getattr(self.primary, method)(*args)
            except StorageError as exc:
                if down is None:
                    log.warning("throttle storage unreachable, counting in process: %s", exc)
                self._down_until = time.monotonic() + self.retry_every
            else:
                if down is not None:
                    log.warning("throttle storage reachable again")
                    self._down_until = None
                return answer
        return getattr(self.fallback, method)(*args)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return bool(self._use("acquire_entry", key, limit, expiry, amount))

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        when, count = self._use("get_moving_window", key, limit, expiry)
        return when, count

    def clear(self, key: str) -> None:
        self._use("clear", key)
