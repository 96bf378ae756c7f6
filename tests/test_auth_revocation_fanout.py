"""The fan-out of pushes between a service's processes over Redis, and its catch-up.

Each "process" here is a store with its own Redis client and subscriber thread on the
same channel; what the channel misses is brought by that process's pull (a fake feed of
meta's events).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from srcore.auth.revocation import (
    MemoryRevocationStore,
    RedisFanout,
    RevocationEvent,
    RevocationPuller,
    make_fanout,
)
from srcore.auth.tokens import AccessToken
from srcore.testing import require_or_skip

REDIS_URL = "redis://127.0.0.1:6379/0"


def token(*, jti: str = "j1", user: int | None = None, iat: int | None = None) -> AccessToken:
    now = int(time.time())
    return AccessToken(
        subject=user,
        client_id="app",
        scopes=frozenset(),
        expires_at=now + 3600,
        issued_at=now - 10 if iat is None else iat,
        jti=jti,
        hash="h",
        claims={},
    )


def revoke(seq: int, jti: str) -> RevocationEvent:
    return RevocationEvent(seq, "token", jti, None, int(time.time()) + 60)


def eventually(check: Callable[[], bool], seconds: float = 5.0) -> bool:
    """Poll *check* until it holds or *seconds* pass; never asserts on how long it took."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


class Feed:
    """meta's event log as the pull sees it."""

    def __init__(self) -> None:
        self.events: list[RevocationEvent] = []
        self.asked = 0

    def __call__(self, since: int) -> tuple[list[RevocationEvent], int]:
        self.asked += 1
        batch = [e for e in self.events if e.seq > since]
        return batch, max([since, *(e.seq for e in batch)])


@dataclass
class Process:
    store: MemoryRevocationStore
    fanout: RedisFanout
    puller: RevocationPuller
    #: How many times the fan-out said it was (re)subscribed.
    subscriptions: list[float]


@pytest.fixture
def processes() -> Iterator[tuple[Feed, Callable[[], Process]]]:
    """Make "processes" of one service (a fresh channel), all pulling from one feed.

    Their pull threads do not run unless a test starts them (and then a round is an
    hour): the pulls in these tests are the ones the tests make or ask for.
    """
    require_or_skip(_redis_available(), f"Redis at {REDIS_URL}")
    service = f"t{uuid.uuid4().hex[:12]}"
    feed = Feed()
    made: list[Process] = []

    def make() -> Process:
        store = MemoryRevocationStore()
        puller = RevocationPuller(store, feed, interval=3600)
        subscriptions: list[float] = []

        def subscribed() -> None:
            subscriptions.append(time.monotonic())
            puller.wake()

        fanout = make_fanout(REDIS_URL, service, store, on_subscribed=subscribed)
        assert fanout is not None
        made.append(Process(store, fanout, puller, subscriptions))
        return made[-1]

    yield feed, make
    for process in made:
        process.fanout.close()
        process.puller.stop()
        process.fanout._redis.close()


def start(process: Process) -> Process:
    """Subscribe *process* to its service's channel."""
    process.fanout.ensure_started()
    assert process.fanout.subscribed.wait(5)
    return process


def test_a_push_to_one_process_reaches_the_others(
    processes: tuple[Feed, Callable[[], Process]],
) -> None:
    _, make = processes
    one, other = start(make()), start(make())
    events = [revoke(9, "shared"), RevocationEvent(10, "user", "8", int(time.time()))]
    one.store.apply(events)  # what the receiver does with a push, then:
    assert one.fanout.publish(events)
    assert eventually(lambda: other.store.is_revoked(token(jti="shared")))
    assert eventually(lambda: other.store.user_not_before(8) is not None)
    assert other.store.last_seq == 10


def test_a_process_does_not_apply_its_own_message_again(
    processes: tuple[Feed, Callable[[], Process]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, make = processes
    one, other = start(make()), start(make())
    applied: list[RevocationEvent] = []
    monkeypatch.setattr(one.store, "apply", applied.extend)
    one.fanout.publish([revoke(1, "mine")])
    other.fanout.publish([revoke(2, "theirs")])
    assert eventually(lambda: [e.subject for e in applied] == ["theirs"])
    time.sleep(0.2)
    assert [e.subject for e in applied] == ["theirs"]


def test_nothing_runs_before_the_first_request() -> None:
    store = MemoryRevocationStore()
    fanout = make_fanout(REDIS_URL, "todo", store)
    assert fanout is not None and fanout._thread is None
    assert fanout.channel == "srcore:revocation:todo:events:db0"
    # Another network's database number on the same server: a channel of its own.
    other = make_fanout(REDIS_URL.rsplit("/", 1)[0] + "/1", "todo", store)
    assert other is not None and other.channel == "srcore:revocation:todo:events:db1"
    assert make_fanout(None, "todo", store) is None


def test_a_late_process_pulls_what_was_pushed_before_it(
    processes: tuple[Feed, Callable[[], Process]],
) -> None:
    """A worker that starts (or restarts) later misses nothing pushed before it."""
    feed, make = processes
    first = start(make())
    feed.events.append(revoke(1, "old"))
    first.store.apply(feed.events)
    first.fanout.publish(feed.events)
    late = make()
    late.puller.ensure_started()  # what the first request of a process does
    start(late)
    assert eventually(lambda: late.store.is_revoked(token(jti="old")))


def _kill_subscription(fanout: RedisFanout) -> None:
    """Drop *fanout*'s pub/sub connection from the server side (CLIENT KILL ADDR)."""
    import redis

    assert eventually(lambda: fanout._pubsub is not None and fanout._pubsub.connection is not None)
    sock = fanout._pubsub.connection._sock
    host, port = sock.getsockname()[:2]
    killer = redis.Redis.from_url(REDIS_URL)
    try:
        killer.execute_command("CLIENT", "KILL", "ADDR", f"{host}:{port}")
    finally:
        killer.close()


def test_a_dropped_subscription_asks_for_a_pull(
    processes: tuple[Feed, Callable[[], Process]],
) -> None:
    """What is published while a process is not subscribed never reaches it on the
    channel: each (re)subscription asks its puller for a pull at once."""
    _, make = processes
    writer, reader = start(make()), start(make())
    assert len(reader.subscriptions) == 1
    writer.fanout.channel += ":nobody"  # as one sent while its connection was down
    writer.fanout.publish([revoke(1, "missed")])
    writer.fanout.channel = reader.fanout.channel
    time.sleep(0.2)
    assert not reader.store.is_revoked(token(jti="missed"))  # pub/sub did not bring it
    _kill_subscription(reader.fanout)
    assert eventually(lambda: len(reader.subscriptions) == 2, 10)
    # and it listens again
    writer.fanout.publish([revoke(2, "after")])
    assert eventually(lambda: reader.store.is_revoked(token(jti="after")))


def test_asking_for_a_pull_pulls_at_once() -> None:
    store, feed = MemoryRevocationStore(), Feed()
    puller = RevocationPuller(store, feed, interval=3600)
    puller.ensure_started()
    try:
        assert eventually(lambda: puller.pulls == 1)
        feed.events.append(revoke(1, "missed"))
        puller.wake()
        assert eventually(lambda: store.is_revoked(token(jti="missed")))
        assert eventually(lambda: puller.pulls == 2)
    finally:
        puller.stop()


def test_checks_send_no_command(
    processes: tuple[Feed, Callable[[], Process]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check reads this process's store: no round trip, even with Redis out of reach."""
    _, make = processes
    writer, process = start(make()), start(make())
    now = int(time.time())
    writer.fanout.publish([RevocationEvent(1, "user", "7", now), revoke(2, "j9")])
    assert eventually(lambda: process.store.is_revoked(token(jti="j9")))
    here = threading.current_thread()
    asked: list[str] = []

    def no_connection(*args: Any, **kwargs: Any) -> Any:
        if threading.current_thread() is here:
            asked.append("get_connection")
        raise AssertionError("a check asked Redis")

    monkeypatch.setattr(process.fanout._redis.connection_pool, "get_connection", no_connection)
    for _ in range(100):
        assert process.store.is_revoked(token(user=7, iat=now - 5))
        assert not process.store.is_revoked(token(user=7, iat=now + 1))
        assert process.store.is_revoked(token(jti="j9"))
        assert not process.store.session_valid(7, now - 1)
        assert process.store.session_valid(7, now + 1)
    assert asked == []


def test_redis_down_costs_the_other_processes_a_pull_not_the_event(
    processes: tuple[Feed, Callable[[], Process]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    feed, make = processes
    receiver, other = start(make()), start(make())
    real = receiver.fanout._redis.connection_pool.get_connection

    def down(*args: Any, **kwargs: Any) -> Any:
        raise redis.ConnectionError("Redis is down (test)")

    monkeypatch.setattr(receiver.fanout._redis.connection_pool, "get_connection", down)
    feed.events.append(revoke(1, "during"))
    receiver.store.apply(feed.events)
    assert not receiver.fanout.publish(feed.events)  # logged, not raised
    assert receiver.store.is_revoked(token(jti="during"))
    time.sleep(0.2)
    assert not other.store.is_revoked(token(jti="during"))
    other.puller.pull_once()  # its next round
    assert other.store.is_revoked(token(jti="during"))
    monkeypatch.setattr(receiver.fanout._redis.connection_pool, "get_connection", real)
    assert receiver.fanout.publish([revoke(2, "after")])
    assert eventually(lambda: other.store.is_revoked(token(jti="after")))


def test_a_bad_message_on_the_channel_is_ignored(
    processes: tuple[Feed, Callable[[], Process]],
) -> None:
    _, make = processes
    process, sender = start(make()), make()
    process.fanout._redis.publish(process.fanout.channel, b'{"events": [{"seq": "x"}]}')
    process.fanout._redis.publish(process.fanout.channel, b'[{"seq": 1}]')
    process.fanout._redis.publish(process.fanout.channel, b"not json")
    sender.fanout.publish([revoke(3, "good")])
    assert eventually(lambda: process.store.is_revoked(token(jti="good")))
    assert process.fanout._thread is not None and process.fanout._thread.is_alive()
