"""srcore.throttle: delays, lockout and expiry, on limits' memory storage and on a real Redis.

``limits`` stamps failures with :func:`time.time`, so the tests move that clock.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srcore.testing import require_or_skip
from srcore.throttle import (
    TURN_SECONDS,
    TURN_WAIT,
    Decision,
    FallbackStore,
    Store,
    Throttle,
    make_store,
)
from srcore.windows import MovingWindows

REDIS_URL = "redis://127.0.0.1:6379/0"


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    if request.param == "memory":
        yield make_store(None)
        return
    require_or_skip(_redis_available(), "Redis at " + REDIS_URL)
    found = make_store(REDIS_URL)
    yield found
    found.primary.storage.close()  # type: ignore[attr-defined]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    found = Clock()
    monkeypatch.setattr(time, "time", found)
    return found


def _throttle(store: Store, clock: Clock, **options: object) -> Throttle:
    # A fresh prefix per test: Redis is shared between runs and workers.
    options.setdefault("prefix", f"test:{uuid.uuid4().hex}")
    return Throttle(store, **options)  # type: ignore[arg-type]


KEYS = [("login-account", "alice"), ("login-ip", "192.0.2.1")]


def test_free_failures_then_doubling_delays_then_lockout(store: Store, clock: Clock) -> None:
    throttle = _throttle(store, clock, max_failures=6, lockout=timedelta(minutes=15))
    assert throttle.check(KEYS) == Decision(True, 0.0)
    for _ in range(2):
        assert throttle.failure(KEYS).allowed
    decision = throttle.failure(KEYS)  # the third: 1 s
    assert decision == Decision(False, 1.0)
    assert throttle.check(KEYS).retry_after == 1.0
    clock.advance(1)
    assert throttle.check(KEYS).allowed
    assert throttle.failure(KEYS).retry_after == 2.0  # the fourth: 2 s
    clock.advance(2)
    assert throttle.failure(KEYS).retry_after == 4.0  # the fifth: 4 s
    clock.advance(4)
    locked = throttle.failure(KEYS)  # the sixth: locked out
    assert locked == Decision(False, 900.0)
    assert locked.retry_after_seconds == 900
    clock.advance(899.5)
    decision = throttle.check(KEYS)
    assert not decision.allowed and decision.retry_after_seconds == 1
    clock.advance(0.5)
    assert throttle.check(KEYS).allowed
    # Still remembered: the next failure locks again at once.
    assert throttle.failure(KEYS).retry_after == 900.0


def test_waits_are_exact_to_the_millisecond_on_any_clock(store: Store, clock: Clock) -> None:
    """Redis keeps the times of Lua's numbers to 14 digits (0.1 ms today): a wait must
    not come out a hair long, which a Retry-After rounds up to a whole extra second."""
    clock.now = 1_700_000_000.123456
    throttle = _throttle(store, clock, max_failures=6)
    for _ in range(3):
        throttle.failure(KEYS)
    decision = throttle.check(KEYS)
    assert decision == Decision(False, 1.0) and decision.retry_after_seconds == 1


def test_counters_expire_after_the_window(store: Store, clock: Clock) -> None:
    throttle = _throttle(store, clock, max_failures=3, lockout=10, window=30)
    for _ in range(3):
        throttle.failure(KEYS)
    assert not throttle.check(KEYS).allowed
    clock.advance(31)
    assert throttle.check(KEYS).allowed
    assert throttle.failure(KEYS).allowed  # counting starts afresh


def test_a_lockout_lasts_until_a_window_passes_without_failures(store: Store, clock: Clock) -> None:
    """Failures counted one by one would age out of the window and let an attacker back
    to the free attempts; a locked key stays locked while failures keep coming."""
    throttle = _throttle(store, clock, max_failures=3, free_failures=3, lockout=10, window=40)
    for _ in range(3):
        throttle.failure(KEYS)
    for _ in range(12):  # 120 s: three windows
        clock.advance(10)
        assert throttle.check(KEYS).allowed
        assert throttle.failure(KEYS) == Decision(False, 10.0)
    clock.advance(41)
    assert throttle.failure(KEYS).allowed


def test_redis_keys_carry_a_ttl(clock: Clock) -> None:
    require_or_skip(_redis_available(), "Redis at " + REDIS_URL)
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"test:{uuid.uuid4().hex}"
    throttle = Throttle(make_store(REDIS_URL), lockout=60, window=120, prefix=prefix)
    throttle.failure([("a", "b")])
    names = client.keys(f"*{prefix}:a:b:*")
    assert names
    for name in names:
        assert 0 < client.pttl(name) <= 120_000
    throttle.success([("a", "b")])
    assert client.keys(f"*{prefix}:*") == []
    client.close()


def test_keys_are_independent_and_success_clears_only_its_keys(store: Store, clock: Clock) -> None:
    throttle = _throttle(store, clock, max_failures=2, free_failures=0, lockout=60)
    account, ip = KEYS
    throttle.failure([account, ip])
    throttle.failure([account, ip])
    assert not throttle.check([account]).allowed
    assert not throttle.check([("login-account", "bob"), ip]).allowed
    assert throttle.check([("login-account", "bob")]).allowed
    throttle.success([account])
    assert throttle.check([account]).allowed
    assert not throttle.check([ip]).allowed


def test_concurrent_failures_are_all_counted(store: Store, clock: Clock) -> None:
    throttle = _throttle(store, clock, max_failures=201, free_failures=201, lockout=60)
    threads = [
        threading.Thread(target=lambda: [throttle.failure(KEYS[:1]) for _ in range(25)])
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert throttle.check(KEYS[:1]).allowed  # 200 failures: not one counted twice
    assert throttle.failure(KEYS[:1]) == Decision(False, 60.0)  # ... nor one lost


def test_memory_store_is_bounded(clock: Clock) -> None:
    store = make_store(None, max_keys=10)
    assert isinstance(store, MovingWindows)
    throttle = Throttle(store, max_failures=1, free_failures=0, lockout=60)
    for i in range(25):
        throttle.failure([("ip", str(i))])
    assert len(store) == 10  # keys: a failure here writes two (its log and its lock)
    assert throttle.check([("ip", "0")]).allowed  # the oldest were dropped
    assert not throttle.check([("ip", "24")]).allowed


#: wait_after reads no store.
_UNUSED = cast(Store, object())


@given(
    failures=st.integers(min_value=0, max_value=10_000),
    max_failures=st.integers(min_value=1, max_value=50),
    free=st.integers(min_value=0, max_value=50),
)
def test_wait_never_exceeds_the_lockout_and_never_shrinks(
    failures: int, max_failures: int, free: int
) -> None:
    free = min(free, max_failures)
    throttle = Throttle(_UNUSED, max_failures=max_failures, free_failures=free, lockout=900)
    wait = throttle.wait_after(failures)
    assert 0 <= wait <= 900
    assert throttle.wait_after(failures + 1) >= wait
    if failures >= max_failures:
        assert wait == 900


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="max_failures"):
        Throttle(_UNUSED, max_failures=0)
    with pytest.raises(ValueError, match="free_failures"):
        Throttle(_UNUSED, max_failures=3, free_failures=4)
    with pytest.raises(ValueError, match="window"):
        Throttle(_UNUSED, lockout=60, window=30)


def test_make_store_picks_by_url() -> None:
    from limits.storage import RedisStorage

    assert isinstance(make_store(None), MovingWindows)
    assert isinstance(make_store(""), MovingWindows)
    shared = make_store(REDIS_URL)  # connects lazily
    assert isinstance(shared, FallbackStore) and isinstance(shared.primary, RedisStorage)
    assert isinstance(shared.fallback, MovingWindows)


# -- Redis going away and coming back ---------------------------------------------------------


def test_a_throttle_keeps_counting_in_process_while_redis_is_away_and_goes_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A redis-server of this test's own, stopped and started again: meanwhile the lockout
    still holds (counted in process), then the counting goes back to Redis."""
    import redis

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import reliability

    require_or_skip(reliability.redis_available(), "redis-server")
    with reliability.RedisServer(tmp_path / "redis") as server:
        store = make_store(server.url, timeout=0.5)
        assert isinstance(store, FallbackStore)
        store.retry_every = 0.0  # try Redis at every use, so the test needs no waiting
        throttle = Throttle(store, max_failures=3, free_failures=3, lockout=60, prefix="t")
        key = [("login-account", "alice")]
        throttle.failure(key)
        client = redis.Redis.from_url(server.url)
        assert client.keys("*t:login-account:alice:log*"), "counted in Redis"
        client.close()
        assert not store.degraded

        server.stop()
        with caplog.at_level(logging.WARNING, "srcore.throttle"):
            assert throttle.check(key).allowed  # an answer, not an error
            throttle.failure(key)
            throttle.failure(key)
            throttle.failure(key)
            assert store.degraded
            refused = throttle.check(key)
        assert not refused.allowed and refused.retry_after > 0  # locked, in process
        warnings = [r.getMessage() for r in caplog.records if r.name == "srcore.throttle"]
        assert len(warnings) == 1 and "unreachable" in warnings[0]  # said once, not per use

        server.start()  # empty: Redis kept nothing
        caplog.clear()
        with caplog.at_level(logging.WARNING, "srcore.throttle"):
            throttle.failure([("login-account", "bob")])
        assert not store.degraded
        assert any("reachable again" in r.getMessage() for r in caplog.records)
        client = redis.Redis.from_url(server.url)
        assert client.keys("*t:login-account:bob:log*"), "counted in Redis again"
        client.close()
        store.primary.storage.close()  # type: ignore[attr-defined]


def test_an_unreachable_redis_is_retried_only_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While Redis is away, a use tries it at most once per ``retry_every``: a login does not
    wait for a connect timeout at every check."""
    tries: list[str] = []

    class Away:
        def __getattr__(self, name: str) -> Any:
            from limits.errors import StorageError

            def fail(*_args: object) -> None:
                tries.append(name)
                raise StorageError(ConnectionError("refused"))

            return fail

    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    store = FallbackStore(cast(Store, Away()), make_store(None), retry_every=5.0)
    throttle = Throttle(store, max_failures=3, lockout=60)
    for _ in range(4):
        throttle.failure([("login-account", "alice")])
    assert len(tries) == 1 and not throttle.check([("login-account", "alice")]).allowed
    now[0] += 5.0
    throttle.check([("login-account", "alice")])
    assert len(tries) == 2


def test_networks_on_their_own_redis_database_count_apart(clock: Clock) -> None:
    """operators.md: two networks sharing a Redis server, each with its own database
    number, do not count each other's failed logins (on the same number they would)."""
    require_or_skip(_redis_available(), "Redis at " + REDIS_URL)
    base = REDIS_URL.rsplit("/", 1)[0]
    prefix = f"test:{uuid.uuid4().hex}"
    stores = [make_store(f"{base}/{n}") for n in (14, 15, 14)]
    production, staging, production_too = (
        Throttle(store, max_failures=2, free_failures=2, lockout=60, prefix=prefix)
        for store in stores
    )
    key = [("login-account", "user:1")]
    try:
        production.failure(key)
        production.failure(key)
        assert not production.check(key).allowed
        assert not production_too.check(key).allowed  # same database: counted together
        assert staging.check(key).allowed
    finally:
        production.success(key)
        for store in stores:
            store.primary.storage.close()  # type: ignore[attr-defined]


# -- turns: one attempt of a counter at a time ----------------------------------------


def test_one_attempt_of_a_counter_has_the_turn_until_it_gives_it_back(
    store: Store, clock: Clock
) -> None:
    throttle = _throttle(store, clock)
    assert throttle.take_turn(KEYS) == Decision(True, 0.0)
    assert throttle.take_turn(KEYS[:1]) == Decision(False, TURN_WAIT)
    assert throttle.take_turn(KEYS[1:]) == Decision(False, TURN_WAIT)
    assert throttle.take_turn([("login-account", "bob")]).allowed  # another counter
    throttle.end_turn(KEYS)
    assert throttle.take_turn(KEYS).allowed


def test_a_refused_attempt_holds_no_turn(store: Store, clock: Clock) -> None:
    throttle = _throttle(store, clock)
    assert throttle.take_turn(KEYS[1:]).allowed
    # KEYS[0] is free, KEYS[1] is not: refused, and KEYS[0] is not kept either.
    assert not throttle.take_turn(KEYS).allowed
    assert throttle.take_turn(KEYS[:1]).allowed


def test_a_locked_out_counter_refuses_with_its_wait_and_holds_no_turn(
    store: Store, clock: Clock
) -> None:
    throttle = _throttle(store, clock, max_failures=3, lockout=timedelta(minutes=15))
    for _ in range(3):
        throttle.failure(KEYS[:1])
        clock.advance(60)
    for _ in range(2):  # the second would be TURN_WAIT had the first kept its turn
        assert throttle.take_turn(KEYS[:1]) == Decision(False, 900.0 - 60)


def test_a_turn_left_by_an_ended_process_lapses(clock: Clock) -> None:
    throttle = _throttle(make_store(None), clock)
    assert throttle.take_turn(KEYS).allowed  # and never given back
    clock.advance(TURN_SECONDS - 1)
    assert not throttle.take_turn(KEYS).allowed
    clock.advance(2)
    assert throttle.take_turn(KEYS).allowed


def test_attempts_sent_at_once_get_one_turn(store: Store, clock: Clock) -> None:
    throttle = _throttle(store, clock)
    start = threading.Barrier(8)
    got: list[bool] = []

    def attempt() -> None:
        start.wait(timeout=10)
        got.append(throttle.take_turn(KEYS).allowed)

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert sorted(got) == [False] * 7 + [True]
