"""srcore.limiter_storage.WindowsStorage: the ``srcore://`` storage of ``limits``, for
Flask-Limiter's moving-window strategy, kept in process (bounded in keys, each hit touching
its own key and starting no thread) or in Redis (counting in process while Redis is away)."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from srcore.limiter_storage import WindowsStorage
from srcore.testing import free_port, require_or_skip
from srcore.throttle import FallbackStore
from srcore.windows import MovingWindows

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _close(storage: WindowsStorage) -> None:
    if isinstance(storage.store, FallbackStore):
        storage.store.primary.storage.close()  # type: ignore[attr-defined]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [time.time()]
    monkeypatch.setattr(time, "time", lambda: now[0])
    return now


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[threading.Thread]:
    """The threads started from here on."""
    found: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        found.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    return found


@pytest.fixture(params=["memory", "redis", "redis-away"])
def storage(request: pytest.FixtureRequest) -> Iterator[WindowsStorage]:
    if request.param == "memory":
        built = storage_from_string("srcore://")
    elif request.param == "redis":
        require_or_skip(_redis_available(), "Redis at " + REDIS_URL)
        built = storage_from_string("srcore://", redis_url=REDIS_URL, timeout=2)
    else:
        built = storage_from_string("srcore://", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(built, WindowsStorage)
    yield built
    _close(built)


def test_the_scheme_names_the_storage_and_redis_url_chooses_where() -> None:
    memory = storage_from_string("srcore://")
    assert isinstance(memory, WindowsStorage) and isinstance(memory.store, MovingWindows)
    assert memory.store.max_keys == 100_000
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing is opened until the first hit
    shared = storage_from_string("srcore://", redis_url=url)
    assert isinstance(shared, WindowsStorage) and isinstance(shared.store, FallbackStore)
    _close(shared)


def test_a_moving_window_holds_per_key(storage: WindowsStorage, clock: list[float]) -> None:
    limiter = MovingWindowRateLimiter(storage)
    item = parse("3 per minute")
    key = uuid.uuid4().hex  # Redis is shared between runs
    assert [limiter.hit(item, key) for _ in range(4)] == [True, True, True, False]
    assert limiter.hit(item, key + "-other")
    stats = limiter.get_window_stats(item, key)
    assert stats.remaining == 0 and stats.reset_time == pytest.approx(clock[0] + 60, abs=0.01)
    clock[0] += 30
    assert not limiter.test(item, key)
    clock[0] += 31  # a minute after the first hits
    assert limiter.test(item, key) and limiter.hit(item, key)
    limiter.clear(item, key)
    assert limiter.get_window_stats(item, key).remaining == 3


def test_hits_start_no_thread(storage: WindowsStorage, started: list[threading.Thread]) -> None:
    """``limits``' memory storage starts a timer after a hit, which walks every key it holds
    (half a core at 100,000 keys and 5 hits a second). Here a hit touches its own key, in
    process memory as while Redis is away."""
    limiter = MovingWindowRateLimiter(storage)
    item = parse("5 per hour")
    prefix = uuid.uuid4().hex
    for n in range(50):
        assert limiter.hit(item, f"{prefix}-{n}")
    assert started == []


def test_limits_memory_storage_does_start_threads(started: list[threading.Thread]) -> None:
    """What the test above rules out, so it would see it."""
    limiter = MovingWindowRateLimiter(MemoryStorage())
    assert limiter.hit(parse("5 per hour"), "someone")
    assert started


def test_in_process_keys_are_bounded() -> None:
    storage = storage_from_string("srcore://", max_keys=3)
    assert isinstance(storage, WindowsStorage) and isinstance(storage.store, MovingWindows)
    limiter = MovingWindowRateLimiter(storage)
    item = parse("1 per hour")
    for n in range(10):
        assert limiter.hit(item, f"address-{n}")
    assert len(storage.store) == 3
    assert not limiter.hit(item, "address-9")  # the ones written last are kept
    assert limiter.hit(item, "address-0")  # one dropped starts afresh
    assert storage.reset() == 3 and len(storage.store) == 0


def test_only_the_moving_window_strategy_is_served() -> None:
    from limits.strategies import FixedWindowRateLimiter

    limiter = FixedWindowRateLimiter(storage_from_string("srcore://"))
    with pytest.raises(RuntimeError, match="moving-window"):
        limiter.hit(parse("1 per hour"), "someone")


def test_unknown_options_are_refused() -> None:
    with pytest.raises(TypeError):
        storage_from_string("srcore://", socket_timeout=2)


def test_while_redis_is_away_counting_goes_on_in_process(clock: list[float]) -> None:
    storage = storage_from_string("srcore://", redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert isinstance(storage, WindowsStorage) and isinstance(storage.store, FallbackStore)
    limiter = MovingWindowRateLimiter(storage)
    item = parse("2 per minute")
    assert [limiter.hit(item, "someone") for _ in range(3)] == [True, True, False]
    assert storage.store.degraded and storage.check()
    with pytest.raises(RuntimeError, match="not reset"):
        storage.reset()  # limits' Redis reset would take the throttle's keys along
    _close(storage)
