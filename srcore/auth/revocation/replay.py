"""Replay protection for meta's signed messages: each message id is applied once.

A signed message stays valid for its whole timestamp window: whoever recorded one (a
proxy's log, a reused connection) could send it again and roll a profile back to an
older copy. The receiver claims each id before applying its message and releases it if
applying fails, so meta's retry of a failed delivery still gets through.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from srcore.auth.revocation.store import RevocationUnavailable
from srcore.extras import MissingExtraError

if TYPE_CHECKING:
    import redis

__all__ = ["MemorySeenMessages", "RedisSeenMessages", "SeenMessages", "make_seen_messages"]

log = logging.getLogger("srcore.auth")


class SeenMessages(Protocol):
    """The ids of meta's messages already applied, remembered while a replay would verify."""

    def claim(self, message_id: str) -> bool:
        """Remember *message_id*; False if it was already seen within the window."""
        ...

    def release(self, message_id: str) -> None:
        """Forget *message_id* (its message could not be applied)."""
        ...


class MemorySeenMessages:
    """The ids seen by this process (enough for one process; Redis shares them)."""

    def __init__(self, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.window = window
        self._clock = clock
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def claim(self, message_id: str) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._seen) > 1024:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            if self._seen.get(message_id, -math.inf) > now:
                return False
            self._seen[message_id] = now + self.window
            return True

    def release(self, message_id: str) -> None:
        with self._lock:
            self._seen.pop(message_id, None)


class RedisSeenMessages:
    """The ids seen by every process of the service: ``SET NX`` with the window as TTL."""

    def __init__(self, client: redis.Redis, service_id: str, window: float) -> None:
        self._redis = client
        self._prefix = f"srcore:{service_id}:events-seen:"
        self._ttl = max(1, math.ceil(window))

    def claim(self, message_id: str) -> bool:
        import redis

        try:
            return bool(self._redis.set(self._prefix + message_id, 1, nx=True, ex=self._ttl))
        except redis.RedisError as exc:
            raise RevocationUnavailable(f"cannot record meta's message in Redis: {exc}") from exc

    def release(self, message_id: str) -> None:
        import redis

        try:
            self._redis.delete(self._prefix + message_id)
        except redis.RedisError as exc:
            log.warning("cannot forget meta's message %s in Redis: %s", message_id, exc)


def make_seen_messages(redis_url: str | None, service_id: str) -> SeenMessages:
    """Redis-backed when *redis_url* is set (connected on first use), else in-process.

    Ids are kept for twice the signature tolerance: a timestamp is accepted up to that
    far either side of now, so no replay of a forgotten id can verify any more.
    """
    from srcore.signatures import DEFAULT_TOLERANCE

    window = 2 * DEFAULT_TOLERANCE.total_seconds() + 60
    if not redis_url:
        return MemorySeenMessages(window)
    try:
        import redis
    except ImportError as exc:
        raise MissingExtraError("redis", "[global] redis-url (replay protection)") from exc

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    return RedisSeenMessages(client, service_id, window)
