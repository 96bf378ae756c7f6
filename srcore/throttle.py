"""Brute-force protection: growing delays, then a lockout, per account and per client.

:class:`Throttle` is plain logic over a small :class:`Store`: it counts failures per key
(``("login-account", "alice")``, ``("login-ip", "192.0.2.1")``) and answers whether a new
attempt may go ahead and, if not, how long to wait. The first ``free_failures`` failures
cost nothing; after that each failure makes the next attempt wait ``base_delay`` seconds,
doubling every time; from ``max_failures`` on the key is locked for ``lockout`` seconds
after each failure. A key is forgotten ``window`` seconds after its last failure, or at once
on :meth:`Throttle.success`.

Counters live in process (:class:`MemoryStore`, enough for one process) or in Redis
(:class:`RedisStore`, shared by every worker and host); :func:`make_store` picks one from
``[global] redis-url``. The clock is injectable, so the rules are tested without sleeping.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from srcore.extras import MissingExtraError

if TYPE_CHECKING:
    import redis

__all__ = [
    "Decision",
    "MemoryStore",
    "Record",
    "RedisStore",
    "Store",
    "Throttle",
    "ThrottleKey",
    "make_store",
]

#: A counter's key: what is counted (``"login-account"``) and for whom (``"alice"``).
ThrottleKey = tuple[str, str]


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


@dataclass(frozen=True)
class Record:
    """What a store knows about one key: failures so far and when the last one was."""

    failures: int
    last_failure: float


class Store(Protocol):
    """Failure counters that expire ``ttl`` seconds after their last failure."""

    def get_many(self, keys: Sequence[str], *, now: float) -> list[Record | None]:
        """The record of each key (None: no failures remembered)."""

    def add_failure(self, key: str, *, now: float, ttl: float) -> Record:
        """Count one failure of *key* at *now*, atomically; return the new record."""

    def clear(self, keys: Sequence[str]) -> None:
        """Forget *keys*."""


def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class Throttle:
    """Growing delays and a lockout window over failure counters in *store*."""

    def __init__(
        self,
        store: Store,
        *,
        max_failures: int = 5,
        lockout: float | timedelta = 900.0,
        base_delay: float | timedelta = 1.0,
        free_failures: int = 3,
        window: float | timedelta | None = None,
        clock: Callable[[], float] = time.time,
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
        self.window = max(_seconds(window) if window is not None else 4 * self.lockout, 1.0)
        if self.window < self.lockout:
            raise ValueError("window must be at least as long as lockout")
        self.clock = clock
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

    def _names(self, keys: Iterable[ThrottleKey]) -> list[str]:
        return [f"{self.prefix}:{kind}:{value}" for kind, value in keys]

    def _decide(self, records: Iterable[Record | None], now: float) -> Decision:
        retry_after = 0.0
        for record in records:
            if record is None:
                continue
            until = record.last_failure + self.wait_after(record.failures)
            retry_after = max(retry_after, until - now)
        return Decision(allowed=retry_after <= 0, retry_after=max(retry_after, 0.0))

    def check(self, keys: Sequence[ThrottleKey]) -> Decision:
        """Whether an attempt concerning all of *keys* may go ahead now."""
        now = self.clock()
        return self._decide(self.store.get_many(self._names(keys), now=now), now)

    def failure(self, keys: Sequence[ThrottleKey]) -> Decision:
        """Record a failed attempt for each of *keys*; return what the next attempt faces."""
        now = self.clock()
        records = [
            self.store.add_failure(name, now=now, ttl=self.window) for name in self._names(keys)
        ]
        return self._decide(records, now)

    def success(self, keys: Sequence[ThrottleKey]) -> None:
        """Forget the failures of *keys* (pass the account's key, not a shared one)."""
        self.store.clear(self._names(keys))


class MemoryStore:
    """Counters in this process, safe across threads, holding at most *max_keys* keys.

    When full, the keys that failed longest ago are dropped first. With several processes
    each one counts on its own, so an attacker gets up to that many times the attempts:
    use :class:`RedisStore` there.
    """

    def __init__(self, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._data: OrderedDict[str, tuple[Record, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._data)

    def _live(self, key: str, now: float) -> Record | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        record, expires = entry
        if expires <= now:
            del self._data[key]
            return None
        return record

    def get_many(self, keys: Sequence[str], *, now: float) -> list[Record | None]:
        with self._lock:
            return [self._live(key, now) for key in keys]

    def add_failure(self, key: str, *, now: float, ttl: float) -> Record:
        with self._lock:
            previous = self._live(key, now)
            record = Record(failures=(previous.failures if previous else 0) + 1, last_failure=now)
            self._data[key] = (record, now + ttl)
            self._data.move_to_end(key)
            while len(self._data) > self.max_keys:
                self._data.popitem(last=False)
            return record

    def clear(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._data.pop(key, None)


class RedisStore:
    """Counters in Redis, shared by every process: one hash per key, updated atomically.

    A failure is one ``MULTI``/``EXEC`` of ``HINCRBY``, ``HSET`` and ``PEXPIRE``, so
    concurrent failures on many workers are all counted and the key never outlives its TTL.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    def get_many(self, keys: Sequence[str], *, now: float) -> list[Record | None]:
        if not keys:
            return []
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.hmget(key, ["n", "t"])
        found: list[Record | None] = []
        for values in pipe.execute():
            failures, last = values
            if failures is None or last is None:
                found.append(None)
            else:
                found.append(Record(failures=int(failures), last_failure=float(last)))
        return found

    def add_failure(self, key: str, *, now: float, ttl: float) -> Record:
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(key, "n", 1)
        pipe.hset(key, "t", repr(now))
        pipe.pexpire(key, max(int(ttl * 1000), 1))
        results: list[Any] = pipe.execute()
        return Record(failures=int(results[0]), last_failure=now)

    def clear(self, keys: Sequence[str]) -> None:
        if keys:
            self.client.delete(*keys)


def make_store(redis_url: str | None, *, timeout: float = 2.0) -> Store:
    """A :class:`RedisStore` for *redis_url*, or a :class:`MemoryStore` when it is empty.

    Connecting is lazy: nothing is opened until the first check.
    """
    if not redis_url:
        return MemoryStore()
    try:
        import redis
    except ImportError as exc:
        raise MissingExtraError("redis", "a throttle on Redis ([global] redis-url)") from exc

    client = redis.Redis.from_url(redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    return RedisStore(client)
