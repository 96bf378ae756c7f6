"""The fan-out of a push between the processes of one service, over Redis pub/sub.

meta pushes each event to one process of a service (whichever gunicorn worker takes the
request), and every process checks its own in-memory store. With ``[global] redis-url``
the process that took the push publishes the events on the service's channel and every
process applies what it hears, so a push reaches them all at once. Redis keeps no state
here: meta's event log, read by the pull, is the record. Whatever the channel misses (a
process subscribing late, a dropped connection, Redis down) the pull brings, and a
process asks its puller for a pull as soon as it is subscribed (again) rather than
waiting for the next round.

Each message is signed with a key derived from the service's ``secret-key``, which its
processes share: any account of a host that reaches the Redis server (one on 127.0.0.1
with no password reaches every account) could otherwise publish an ``unsuspend`` of a
suspended account, with a seq no real event would ever beat, or log everyone out.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from srcore.auth.revocation.store import RevocationStore
from srcore.extras import MissingExtraError
from srcore.forks import reset_in_child
from srcore.identity.protocol import RevocationEvent, parse_events

if TYPE_CHECKING:
    import redis

__all__ = ["RedisFanout", "make_fanout"]

log = logging.getLogger("srcore.auth")


class RedisFanout:
    """Publish the events this process applied; apply what the other processes publish."""

    #: Seconds of silence on the subscription before it is PINGed (twice that: dead).
    ping_interval = 10.0

    def __init__(
        self,
        client: redis.Redis,
        *,
        channel: str,
        store: RevocationStore,
        on_subscribed: Callable[[], None] | None = None,
        key: bytes = b"",
    ) -> None:
        self._redis = client
        #: Signs each message this process publishes, and checks each one it hears.
        self._key = key
        self.channel = channel
        self.store = store
        #: Called on every (re)subscription: what was published before it never came.
        self.on_subscribed = on_subscribed
        self._started = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        #: Set once this process is subscribed (tests wait on it).
        self.subscribed = threading.Event()
        #: The subscriber's current PubSub (tests find its connection through it).
        self._pubsub: Any = None
        #: Marks this process's own messages, which it has applied already.
        self._origin = uuid.uuid4().hex
        reset_in_child(self._forked)

    def publish(self, events: Sequence[RevocationEvent]) -> bool:
        """Send *events* to the other processes; False (logged) if Redis is unreachable."""
        import redis

        if not events:
            return True
        message = {"origin": self._origin, "events": [event.to_json() for event in events]}
        payload = self._sign(json.dumps(message, separators=(",", ":")))
        try:
            self._redis.publish(self.channel, payload)
        except redis.RedisError as exc:
            log.warning(
                "revocations: Redis is unreachable (%s); the other processes get %d "
                "event(s) from their next pull",
                exc,
                len(events),
            )
            return False
        return True

    def _forked(self) -> None:
        """In a forked child: the parent's lock may be held for good, its thread is gone."""
        self._start_lock = threading.Lock()
        self._started = False
        self.subscribed = threading.Event()
        self._origin = uuid.uuid4().hex

    def ensure_started(self) -> None:
        """Start the subscriber thread in this process (cheap once it runs)."""
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run,
                args=(self._stop,),
                name="srcore-revocation-fanout",
                daemon=True,
            )
            self._thread.start()
            self._started = True

    def close(self) -> None:
        """Stop this process's subscriber thread (tests; the process exiting stops it too)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._started = False

    def _run(self, stop: threading.Event) -> None:
        import redis

        delay, down = 0.2, False
        while not stop.is_set():
            pubsub: Any = self._redis.pubsub()  # type: ignore[no-untyped-call,unused-ignore]
            self._pubsub = pubsub
            try:
                pubsub.subscribe(self.channel)
                heard, pinged = time.monotonic(), False
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.25)  # close() waits at most this
                    now = time.monotonic()
                    if message is None:
                        if now - heard > 2 * self.ping_interval:
                            raise redis.ConnectionError("no answer to PING on the subscription")
                        if now - heard > self.ping_interval and not pinged:
                            pubsub.ping()
                            pinged = True
                        continue
                    heard, pinged = now, False
                    if message["type"] == "subscribe":
                        # A first subscription or redis-py's own reconnection.
                        self._subscribed(was_down=down)
                        delay, down = 0.2, False
                    elif message["type"] == "message":
                        self._receive(message["data"])
            except (redis.RedisError, OSError) as exc:
                level = logging.DEBUG if down else logging.WARNING
                log.log(level, "revocations: the fan-out cannot reach Redis: %s", exc)
                down = True
            except Exception:  # keep the thread alive whatever went wrong
                log.exception("revocations: the Redis subscriber failed; restarting it")
            finally:
                self._pubsub = None
                self.subscribed.clear()
                with contextlib.suppress(Exception):
                    pubsub.close()
            stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _subscribed(self, *, was_down: bool) -> None:
        if was_down:
            log.warning("revocations: the fan-out reaches Redis again; pulling what it missed")
        self.subscribed.set()
        if self.on_subscribed is not None:
            self.on_subscribed()

    def _sign(self, text: str) -> str:
        """*text* after the hex HMAC-SHA256 of it and a dot."""
        return f"{hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()}.{text}"

    def _receive(self, data: bytes | str) -> None:
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
        if not hmac.compare_digest(self._sign(text.partition(".")[2]), text):
            log.warning(
                "revocations: ignoring a message on %s that the service did not sign "
                "(another client of the Redis server?)",
                self.channel,
            )
            return
        try:
            message = json.loads(text.partition(".")[2])
            if not isinstance(message, Mapping):
                raise ValueError("a message must be an object")
            if message.get("origin") == self._origin:
                return
            events = parse_events(message.get("events"))
        except ValueError as exc:
            log.warning("revocations: ignoring a bad message on %s: %s", self.channel, exc)
            return
        self.store.apply(events)


def make_fanout(
    redis_url: str | None,
    service_id: str,
    store: RevocationStore,
    *,
    on_subscribed: Callable[[], None] | None = None,
    secret: str = "",
) -> RedisFanout | None:
    """The fan-out of *service_id*'s processes when *redis_url* is set (connected on use),
    its messages signed with a key derived from *secret* (the service's ``secret-key``)."""
    if not redis_url:
        return None
    try:
        import redis
    except ImportError as exc:
        raise MissingExtraError("redis", "[global] redis-url (revocations)") from exc

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    db = client.connection_pool.connection_kwargs.get("db", 0)
    # pub/sub ignores the database number; the channel name does not.
    channel = f"srcore:revocation:{service_id}:events:db{db}"
    key = hmac.new(secret.encode(), b"srcore revocation fan-out", hashlib.sha256).digest()
    return RedisFanout(client, channel=channel, store=store, on_subscribed=on_subscribed, key=key)
