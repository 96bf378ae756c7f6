"""Coalesced nudges: a few ``process`` messages in flight per service, not one per commit.

Celery spends milliseconds of CPU on every message it runs, even one that finds its rows
already done by a task that took them along. So a commit that emitted takes one of a few
*slots* (a Redis sorted set next to the broker's queues) before it sends a message, and
sends nothing when every slot is taken. That is safe because a task gives its slot back
before it looks at the outbox one last time: a commit that found every slot taken
committed its row before some task's last look, which therefore sees it.

A slot whose message is lost (a worker killed before it acknowledged, Redis restarted)
expires after its lease, and the periodic sweep still queues rows that nobody claimed,
so a lost message delays rows; it never loses them.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import redis

__all__ = ["NudgeSlots", "supports_slots"]

# KEYS[1]: the slot set. ARGV: slots, lease in seconds, token. Scores are expiry times
# read from Redis's own clock, so workers on machines with skewed clocks agree.
_ACQUIRE = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', t)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('ZADD', KEYS[1], t + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[2]) * 1000))
return 1
"""

# KEYS[1]: the slot set. ARGV: lease in seconds, token. Only a slot still held is renewed.
_RENEW = """
local now = redis.call('TIME')
local t = tonumber(now[1]) + tonumber(now[2]) / 1000000
local renewed = redis.call('ZADD', KEYS[1], 'XX', 'CH', t + tonumber(ARGV[1]), ARGV[2])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000))
return renewed
"""


def supports_slots(broker: str) -> bool:
    """Whether *broker* is a Redis URL, where the slots can live beside the queues."""
    return urlsplit(broker).scheme in ("redis", "rediss")


class NudgeSlots:
    """At most *slots* tokens per service, each held until released or its lease ends.

    Builds no connection until first used; redis-py's pool reconnects after a fork.
    Redis errors propagate: a caller that cannot take a slot should send its message
    anyway (an extra message costs little; a missing one delays rows until the sweep).
    """

    def __init__(
        self,
        client: redis.Redis,
        service_id: str,
        *,
        slots: int = 8,
        lease: timedelta = timedelta(seconds=60),
    ) -> None:
        if slots < 1:
            raise ValueError("slots must be at least 1")
        self.client = client
        self.key = f"srcore-webhooks.{service_id}.nudges"
        self.slots = slots
        self.lease = lease
        self._acquire: Any = client.register_script(_ACQUIRE)
        self._renew: Any = client.register_script(_RENEW)

    @classmethod
    def from_url(cls, url: str, service_id: str, *, timeout: float, **options: Any) -> NudgeSlots:
        """Slots on the Redis at *url*, each call bounded by *timeout* seconds."""
        import redis

        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cls(client, service_id, **options)

    def __repr__(self) -> str:
        return f"<NudgeSlots {self.key} x{self.slots}>"

    def acquire(self) -> str | None:
        """A new slot's token, or None when every slot is held (send no message then)."""
        token = secrets.token_hex(8)
        taken = self._acquire(keys=[self.key], args=[self.slots, self.lease.total_seconds(), token])
        return token if int(taken) else None

    def renew(self, token: str) -> bool:
        """Extend *token*'s lease (a task that hands its work on); False if it expired."""
        return bool(int(self._renew(keys=[self.key], args=[self.lease.total_seconds(), token])))

    def release(self, token: str) -> None:
        """Give *token*'s slot back (a slot that expired meanwhile is already free)."""
        self.client.zrem(self.key, token)

    def held(self) -> int:
        """How many slots are held now, expired ones included until the next acquire."""
        return int(self.client.zcard(self.key))
