"""Nudge slots on the real Redis: a bounded number held, released, expiring when lost."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from srcore.testing import require_or_skip
from srcore.webhooks.nudges import NudgeSlots, supports_slots

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def make_slots() -> Iterator[Any]:
    """Slots under a service id of their own; the key is deleted afterwards."""
    require_or_skip(_redis_available(), f"Redis at {REDIS_URL}")
    service = f"test-{uuid.uuid4().hex}"
    made: list[NudgeSlots] = []

    def make(**options: Any) -> NudgeSlots:
        slots = NudgeSlots.from_url(REDIS_URL, service, timeout=2, **options)
        made.append(slots)
        return slots

    yield make
    for slots in made:
        slots.client.delete(slots.key)
        slots.client.close()


def test_at_most_the_configured_number_are_held(make_slots: Any) -> None:
    slots = make_slots(slots=3)
    tokens = [slots.acquire() for _ in range(5)]
    assert all(tokens[:3]) and len(set(tokens[:3])) == 3
    assert tokens[3:] == [None, None]
    assert slots.held() == 3
    slots.release(tokens[0])
    fresh = slots.acquire()
    assert fresh is not None and fresh not in tokens
    assert slots.acquire() is None


def test_processes_share_the_slots(make_slots: Any) -> None:
    """Two clients (a web process and a worker) count against the same slots."""
    web, worker = make_slots(slots=1), make_slots(slots=1)
    token = web.acquire()
    assert token is not None
    assert web.acquire() is None
    worker.release(token)
    assert web.acquire() is not None


def test_a_lost_slot_expires_after_its_lease(make_slots: Any) -> None:
    slots = make_slots(slots=1, lease=timedelta(seconds=0.3))
    held = slots.acquire()
    assert held is not None
    assert slots.acquire() is None
    time.sleep(0.5)  # its message never ran
    assert slots.acquire() is not None
    assert slots.renew(held) is False  # expired and replaced: not revived
    assert slots.client.pttl(slots.key) > 0  # the key itself never outlives its slots


def test_renew_keeps_a_slot_held(make_slots: Any) -> None:
    slots = make_slots(slots=1, lease=timedelta(seconds=0.4))
    held = slots.acquire()
    assert held is not None
    time.sleep(0.25)
    assert slots.renew(held) is True
    time.sleep(0.25)  # past the first lease, within the renewed one
    assert slots.acquire() is None


def test_releasing_twice_or_an_unknown_token_is_harmless(make_slots: Any) -> None:
    slots = make_slots(slots=1)
    token = slots.acquire()
    assert token is not None
    slots.release(token)
    slots.release(token)
    slots.release("not-a-token")
    assert slots.acquire() is not None


def test_only_redis_brokers_carry_slots() -> None:
    assert supports_slots("redis://127.0.0.1:6379/0")
    assert supports_slots("rediss://cache.example:6380/1")
    assert not supports_slots("amqp://guest@localhost//")
    assert not supports_slots("")
    with pytest.raises(ValueError, match="at least 1"):
        NudgeSlots(object(), "todo", slots=0)  # type: ignore[arg-type]
