"""Moving-window counters in process memory, for the write limits, the login throttle and
the rate limits Flask-Limiter keeps (through :class:`srcore.throttle.WindowsStorage`).

The counts answer as ``limits``' moving-window storages do (:class:`srcore.throttle.Store`),
so Redis and process memory are interchangeable behind :class:`srcore.throttle.FallbackStore`.
``limits``' own memory storage is not used: it expires entries with a timer that, after each
entry, walks every key it holds. An entry then costs in proportion to the keys seen in the
window (14 ms of CPU per write with 20,000 identities; half a core for 5 failed logins a
second once 100,000 names and addresses were tried), and keys are cheap to come by.

Entries are stamped with :func:`time.time`, as ``limits`` stamps them.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence

__all__ = ["MovingWindows"]


class MovingWindows:
    """Moving-window counts kept in this process: per key, the times of its entries.

    Here an entry reads and prunes its own key only, and at most *max_keys* keys are kept,
    the one written longest ago dropped first (a key dropped starts afresh).
    """

    def __init__(self, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be at least 1")
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._times: OrderedDict[str, list[float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._times)

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        """Count *amount* entries of *key* now, unless that makes more than *limit* in the
        last *expiry* seconds (then count none)."""
        now = time.time()
        with self._lock:
            return self._acquire(key, limit, expiry, amount, now)

    def acquire_all(self, checks: Sequence[tuple[str, int, int]]) -> tuple[int, float] | None:
        """Count one entry under each ``(key, limit, expiry)`` of *checks* in turn, stopping
        at the first that is full; None when all took one, else that check's index and the
        oldest entry in its window (as :meth:`get_moving_window` tells it). No other
        thread's count comes between the checks."""
        now = time.time()
        with self._lock:
            for index, (key, limit, expiry) in enumerate(checks):
                if not self._acquire(key, limit, expiry, 1, now):
                    return index, self._window(key, expiry, now)[0]
        return None

    def _acquire(self, key: str, limit: int, expiry: int, amount: int, now: float) -> bool:
        times = self._times.pop(key, None) or []
        self._times[key] = times  # the most recently written, last
        del times[: bisect_left(times, now - expiry)]
        allowed = len(times) + amount <= limit
        if allowed:
            times.extend([now] * amount)
        while len(self._times) > self.max_keys:
            self._times.popitem(last=False)
        return allowed

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        """The oldest entry of *key* in the last *expiry* seconds, and how many there are."""
        now = time.time()
        with self._lock:
            return self._window(key, expiry, now)

    def _window(self, key: str, expiry: int, now: float) -> tuple[float, int]:
        live = [t for t in self._times.get(key, ()) if t >= now - expiry]
        return (live[0] if live else now), len(live)

    def clear(self, key: str) -> None:
        with self._lock:
            self._times.pop(key, None)

    def reset(self) -> int:
        """Forget every key; return how many there were."""
        with self._lock:
            count = len(self._times)
            self._times.clear()
            return count
