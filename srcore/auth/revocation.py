"""Revocations from meta: the store every check reads, the event receiver and the pull.

meta writes one event per revocation and, in the same transaction, a ``revocation:issued``
webhook (srcore's outbox) that its webhook worker delivers to every service's
``/_srcore/events``, retrying until it arrives; each service also pulls the events it may
have missed every ``revocation-pull-interval``, so an undelivered one costs at most that
long. Checks never call meta: :meth:`RevocationStore.
is_revoked` is the token verifier's hook and :meth:`RevocationStore.session_valid` the web
session's.

Event kinds (see meta's ``revocation_event`` table):

``token``      subject = jti, revoked until ``expires_at``
``grant``      subject = grant id, every token of the grant revoked until ``expires_at``
``client``     subject = client id, its tokens issued before ``not_before`` die
``user``       subject = user id, its tokens *and* web sessions from before ``not_before`` die
``session``    subject = user id, its web sessions from before ``not_before`` die (tokens live)
``suspend``    subject = user id, refused until an ``unsuspend`` with a higher seq
``unsuspend``

Times are whole epoch seconds, so "before" is compared on whole seconds and includes the
second of the revocation itself: a token issued in the same second as a "log out
everywhere" is refused rather than let through.

The in-process store serves one process; with ``[global] redis-url`` the Redis store lets
every gunicorn worker see a push that reached one of them (each worker still checks an
in-memory copy, kept current through Redis pub/sub). With the in-process store and
several workers each worker pulls on its own, so a push that reached another worker takes
up to the pull interval to apply everywhere.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from srcore.auth.tokens import VerificationUnavailable
from srcore.extras import MissingExtraError
from srcore.forks import reset_in_child

if TYPE_CHECKING:
    import redis

    from srcore.auth.tokens import AccessToken

__all__ = [
    "EVENTS_PATH",
    "KINDS",
    "MemoryRevocationStore",
    "RedisRevocationStore",
    "RevocationEvent",
    "RevocationPuller",
    "RevocationStore",
    "RevocationUnavailable",
    "SeenMessages",
    "apply_event",
    "make_seen_messages",
    "make_store",
    "parse_events",
]

log = logging.getLogger("srcore.auth")

KINDS = frozenset({"token", "grant", "client", "user", "session", "suspend", "unsuspend"})
_MAX_SUBJECT = 256


class RevocationUnavailable(VerificationUnavailable):
    """The revocation list cannot be read (Redis unreachable)."""


@dataclass(frozen=True)
class RevocationEvent:
    """One revocation, as meta numbers and sends it."""

    seq: int
    kind: str
    subject: str
    not_before: int | None = None
    expires_at: int | None = None

    @classmethod
    def from_json(cls, data: object) -> RevocationEvent:
        """Parse one event of a push or pull; raises ValueError naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("an event must be an object")
        seq, kind, subject = data.get("seq"), data.get("kind"), data.get("subject")
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ValueError("an event's seq must be a non-negative integer")
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if not isinstance(subject, str) or not subject or len(subject) > _MAX_SUBJECT:
            raise ValueError("an event's subject must be a non-empty string")
        times: list[int | None] = []
        for name in ("not_before", "expires_at"):
            value = data.get(name)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"an event's {name} must be an integer or null")
            times.append(value)
        if kind in ("client", "user", "session") and times[0] is None:
            raise ValueError(f"a {kind} event needs not_before")
        return cls(seq, str(kind), subject, times[0], times[1])


def parse_events(items: object) -> list[RevocationEvent]:
    """Parse a list of events (ignoring none); raises ValueError on the first bad one."""
    if not isinstance(items, list):
        raise ValueError("events must be a list")
    return [RevocationEvent.from_json(item) for item in items]


class RevocationStore(Protocol):
    """What the token verifier and the web session ask; what pushes and pulls feed."""

    def apply(self, events: Iterable[RevocationEvent]) -> None:
        """Record *events*; applying one twice, or out of order, changes nothing."""

    def is_revoked(self, token: AccessToken) -> bool:
        """Whether *token* (already verified) has been revoked since it was issued."""

    def session_valid(self, user_id: int, login_time: float | None) -> bool:
        """Whether a web session of *user_id* that started at *login_time* still stands."""

    def user_not_before(self, user_id: int) -> int | None:
        """The latest ``user``/``session`` not_before known for *user_id*."""

    @property
    def last_seq(self) -> int:
        """The highest event seq applied, where the next pull starts."""


def _issued_before(issued: float | None, not_before: int | None) -> bool:
    """Whether a web session that started at *issued* predates the cut-off *not_before*.

    Sessions count the whole cut-off second as before it (``log_in`` moves a new session
    past a cut-off it already knows of), so a session from just before a logout dies.
    """
    if not_before is None:
        return False
    return issued is None or math.floor(issued) <= not_before


def _token_before(issued_at: int, not_before: int | None) -> bool:
    """Whether a token issued at *issued_at* predates the cut-off *not_before*.

    Matches meta's own rule (``iat < not_before``): a token minted in the cut-off second
    may come from the login that followed it, and refusing it would refuse it for its
    whole life. The events meta sends with a cut-off end the older tokens of that second
    exactly: a ``grant`` event for each OAuth grant of the account and a ``token`` event
    for each personal access token, so "before" is decided by what was issued, not by
    the clock.
    """
    return not_before is not None and issued_at < not_before


def _suspension_code(event: RevocationEvent) -> int:
    # seq and state in one number, so "keep the larger" keeps the latest state.
    return event.seq * 2 + (1 if event.kind == "suspend" else 0)


class MemoryRevocationStore:
    """The in-process store: dictionaries behind a lock, expired entries swept on apply."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._jtis: dict[str, float] = {}
        self._grants: dict[str, float] = {}
        self._clients: dict[str, int] = {}
        self._users: dict[str, int] = {}
        self._sessions: dict[str, int] = {}
        self._suspension: dict[str, int] = {}
        self._seq = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def apply(self, events: Iterable[RevocationEvent]) -> None:
        now = self._clock()
        with self._lock:
            for event in events:
                self._apply_one(event, now)
            self._sweep(now)

    def _apply_one(self, event: RevocationEvent, now: float) -> None:
        self._seq = max(self._seq, event.seq)
        kind, subject = event.kind, event.subject
        if kind in ("token", "grant"):
            expires = math.inf if event.expires_at is None else float(event.expires_at)
            if expires < now:
                return
            table = self._jtis if kind == "token" else self._grants
            table[subject] = max(table.get(subject, 0.0), expires)
        elif kind in ("client", "user", "session"):
            assert event.not_before is not None
            nbs = {"client": self._clients, "user": self._users, "session": self._sessions}[kind]
            nbs[subject] = max(nbs.get(subject, event.not_before), event.not_before)
        else:
            code = _suspension_code(event)
            self._suspension[subject] = max(self._suspension.get(subject, -1), code)

    def _sweep(self, now: float) -> None:
        for table in (self._jtis, self._grants):
            for key in [k for k, expires in table.items() if expires < now]:
                del table[key]

    def _suspended(self, user: str) -> bool:
        return self._suspension.get(user, 0) % 2 == 1

    def is_revoked(self, token: AccessToken) -> bool:
        now = self._clock()
        expires = self._jtis.get(token.jti)
        if expires is not None and expires >= now:
            return True
        grant = token.claims.get("grant")
        if isinstance(grant, str):
            expires = self._grants.get(grant)
            if expires is not None and expires >= now:
                return True
        if _token_before(token.issued_at, self._clients.get(token.client_id)):
            return True
        if token.subject is not None:
            user = str(token.subject)
            if self._suspended(user) or _token_before(token.issued_at, self._users.get(user)):
                return True
        return False

    def session_valid(self, user_id: int, login_time: float | None) -> bool:
        user = str(user_id)
        if self._suspended(user):
            return False
        return not _issued_before(login_time, self.user_not_before(user_id))

    def user_not_before(self, user_id: int) -> int | None:
        user = str(user_id)
        values = [v for v in (self._users.get(user), self._sessions.get(user)) if v is not None]
        return max(values) if values else None


# Set KEYS[i] to ARGV[i] unless it already holds a larger number; ARGV[n+i] is a TTL in
# seconds (0: none); then publish ARGV[2n+2] on the channel ARGV[2n+1]. One round trip
# for a whole batch of events, and no process can read the keys without the message
# being on its way.
_SET_MAX = """
local n = #KEYS
for i = 1, n do
  local current = tonumber(redis.call('GET', KEYS[i]) or '-1')
  local value = tonumber(ARGV[i])
  if value > current then
    local ttl = tonumber(ARGV[n + i])
    if ttl > 0 then
      redis.call('SET', KEYS[i], ARGV[i], 'EX', ttl)
    else
      redis.call('SET', KEYS[i], ARGV[i])
    end
  end
end
redis.call('PUBLISH', ARGV[2 * n + 1], ARGV[2 * n + 2])
return n
"""


class _Mirror(MemoryRevocationStore):
    """The in-process copy a :class:`RedisRevocationStore` answers checks from."""

    def note_seq(self, seq: int) -> None:
        with self._lock:
            self._seq = max(self._seq, seq)

    def after_fork(self) -> None:
        self._lock = threading.Lock()


def _event_json(event: RevocationEvent) -> dict[str, Any]:
    return {
        "seq": event.seq,
        "kind": event.kind,
        "subject": event.subject,
        "not_before": event.not_before,
        "expires_at": event.expires_at,
    }


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisRevocationStore:
    """The store in Redis, shared by every process of the service, mirrored in each.

    Redis holds the state (token and grant entries expire with the tokens; not_before
    marks and suspensions are kept, one small key per user or client) and carries every
    applied batch on a pub/sub channel of the service (``<prefix>events:db<n>``: pub/sub
    ignores the database number, the channel name does not). Each process keeps a copy in
    memory, and checks (:meth:`is_revoked`, :meth:`session_valid`, :meth:`user_not_before`)
    read only that copy: authentication costs no round trip.

    A daemon thread per process (started on first use, again after a fork) subscribes to
    the channel and applies what it hears to the copy. On every (re)subscription it loads
    the whole state from Redis, after the subscription is confirmed, so neither a new
    process nor one whose connection dropped (pub/sub loses what is sent meanwhile)
    misses an event. :meth:`apply` updates this process's copy at once and writes the
    events to Redis with their publication in one atomic script.

    When Redis is unreachable the store keeps serving from the copy rather than failing
    requests: the thread logs a warning and keeps reconnecting (then reloads), events
    applied meanwhile (meta's pushes and pulls, which reach every process on their own)
    go into the copy and are written to Redis once it answers again, and
    :attr:`last_seq` falls back to the copy so the pull from meta keeps catching up. A
    process that has never loaded the state is the exception: its copy knows nothing,
    so until the first load its checks raise :class:`RevocationUnavailable` (the first
    one waits up to :attr:`load_wait` seconds for it).
    """

    #: How long the first check of a process waits for the first load from Redis.
    load_wait = 5.0
    #: Seconds of silence on the subscription before it is PINGed (twice that: dead).
    ping_interval = 10.0
    #: Events kept for writing to Redis while it is unreachable (older ones: the pull).
    max_pending = 10_000

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        db = client.connection_pool.connection_kwargs.get("db", 0)
        self._channel = f"{prefix}events:db{db}"
        self._clock = clock
        self._script: Any = None
        self._mirror = _Mirror(clock=clock)
        self._lock = threading.Lock()
        self._pending: list[RevocationEvent] = []
        self._pending_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._started = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loaded = threading.Event()
        self._tried = threading.Event()
        #: The subscriber's current PubSub (tests find its connection through it).
        self._pubsub: Any = None
        #: How many times the state was loaded from Redis in this process.
        self.loads = 0
        reset_in_child(self._forked)

    def _key(self, kind: str, subject: str) -> str:
        return f"{self._prefix}{kind}:{subject}"

    # -- the subscriber thread ------------------------------------------------------------

    def _forked(self) -> None:
        """In a forked child: the parent's locks may be held for good, its thread is gone."""
        self._lock = threading.Lock()
        self._pending_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._mirror.after_fork()
        self._started = False

    def _ensure_started(self) -> None:
        if self._started:
            return
        with self._start_lock:
            if self._started:
                return
            self._stop = threading.Event()
            self._loaded = threading.Event()
            self._tried = threading.Event()
            self._thread = threading.Thread(
                target=self._run,
                args=(self._stop, self._loaded, self._tried),
                name="srcore-revocation-subscriber",
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

    def _run(self, stop: threading.Event, loaded: threading.Event, tried: threading.Event) -> None:
        import redis

        delay, down_since = 0.2, None
        while not stop.is_set():
            pubsub: Any = self._redis.pubsub()  # type: ignore[no-untyped-call]
            self._pubsub = pubsub
            try:
                pubsub.subscribe(self._channel)
                heard, pinged = time.monotonic(), False
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.25)  # close() waits at most this
                    now = time.monotonic()
                    if message is None:
                        if self._pending:
                            self._flush()
                        if now - heard > 2 * self.ping_interval:
                            raise redis.ConnectionError("no answer to PING on the subscription")
                        if now - heard > self.ping_interval and not pinged:
                            pubsub.ping()
                            pinged = True
                        continue
                    heard, pinged = now, False
                    if message["type"] == "subscribe":
                        # A first subscription or redis-py's own reconnection: whatever was
                        # published while unsubscribed is only in the stored state.
                        self._flush()
                        self._load()
                        loaded.set()
                        tried.set()
                        delay = 0.2
                        if down_since is not None:
                            log.warning(
                                "revocations: Redis answers again after %.0f s; state reloaded",
                                time.monotonic() - down_since,
                            )
                            down_since = None
                    elif message["type"] == "message":
                        self._receive(message["data"])
            except (redis.RedisError, OSError) as exc:
                if down_since is None:
                    down_since = time.monotonic()
                    log.warning(
                        "revocations: Redis is unreachable (%s); checks use this process's "
                        "copy, retrying in the background",
                        exc,
                    )
                else:
                    log.debug("revocations: Redis still unreachable: %s", exc)
            except Exception:  # keep the thread alive whatever went wrong
                log.exception("revocations: the Redis subscriber failed; restarting it")
            finally:
                self._pubsub = None
                with contextlib.suppress(Exception):
                    pubsub.close()
                tried.set()
            stop.wait(delay)
            delay = min(delay * 2, 5.0)

    def _receive(self, data: bytes | str) -> None:
        try:
            events = parse_events(json.loads(data))
        except ValueError as exc:
            log.warning("revocations: ignoring a bad message on %s: %s", self._channel, exc)
            return
        with self._lock:
            self._mirror.apply(events)

    def _load(self) -> None:
        """Merge the whole stored state into the copy (every value only ever grows)."""
        now = self._clock()
        events: list[RevocationEvent] = []
        seq = 0
        match = _glob_escape(self._prefix) + "*"
        keys = list(self._redis.scan_iter(match=match, count=1000))
        for start in range(0, len(keys), 500):
            batch = keys[start : start + 500]
            pipe = self._redis.pipeline(transaction=False)
            for key in batch:
                pipe.get(key)
                pipe.pttl(key)
            results = pipe.execute()
            for i, key in enumerate(batch):
                value, pttl = results[2 * i], results[2 * i + 1]
                name = (key.decode() if isinstance(key, bytes) else key)[len(self._prefix) :]
                try:
                    if name == "seq":
                        seq = max(seq, int(value or 0))
                    elif value is not None:
                        event = self._stored_event(name, int(value), int(pttl), now)
                        if event is not None:
                            events.append(event)
                except ValueError:
                    log.warning("revocations: ignoring the odd key %s in Redis", name)
        with self._lock:
            self._mirror.apply(events)
            self._mirror.note_seq(seq)
        self.loads += 1

    @staticmethod
    def _stored_event(name: str, value: int, pttl: int, now: float) -> RevocationEvent | None:
        """The event that puts one stored key's value into the copy (seq 0 if none)."""
        kind, _, subject = name.partition(":")
        if not subject:
            return None
        if kind in ("jti", "grant"):
            if pttl == -2:  # expired between GET and PTTL
                return None
            expires = None if pttl < 0 else math.ceil(now + pttl / 1000)
            return RevocationEvent(0, "token" if kind == "jti" else "grant", subject, None, expires)
        if kind in ("client", "user", "session"):
            return RevocationEvent(0, kind, subject, value)
        if kind == "suspension":
            state = "suspend" if value % 2 == 1 else "unsuspend"
            return RevocationEvent(value // 2, state, subject)
        return None

    # -- writing ------------------------------------------------------------------------

    def _write(self, events: Sequence[RevocationEvent]) -> None:
        """Write *events* to Redis and publish them, in one script; raises RedisError."""
        now = self._clock()
        keys: list[str] = []
        values: list[int] = []
        ttls: list[int] = []
        top = -1
        for event in events:
            top = max(top, event.seq)
            kind = event.kind
            if kind in ("token", "grant"):
                if event.expires_at is None:
                    value, ttl = 1, 0
                else:
                    ttl = math.ceil(event.expires_at - now) + 1
                    if ttl <= 0:
                        continue
                    value = 1
                name = "jti" if kind == "token" else "grant"
            elif kind in ("client", "user", "session"):
                assert event.not_before is not None
                value, ttl, name = event.not_before, 0, kind
            else:
                value, ttl, name = _suspension_code(event), 0, "suspension"
            keys.append(self._key(name, event.subject))
            values.append(value)
            ttls.append(ttl)
        if top >= 0:
            keys.append(self._prefix + "seq")
            values.append(top)
            ttls.append(0)
        if not keys:
            return
        payload = json.dumps([_event_json(e) for e in events], separators=(",", ":"))
        if self._script is None:
            self._script = self._redis.register_script(_SET_MAX)
        self._script(keys=keys, args=[*values, *ttls, self._channel, payload])

    def _flush(self) -> None:
        """Write the events Redis missed while it was unreachable; raises RedisError."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._write(batch)
        except BaseException:
            self._keep(batch)
            raise
        log.warning("revocations: %d event(s) kept during the outage written to Redis", len(batch))

    def _keep(self, events: list[RevocationEvent]) -> None:
        with self._pending_lock:
            # The oldest go first: the pull from meta, which starts at the lower of the
            # stored and the copy's seq, brings them again.
            self._pending = (events + self._pending)[-self.max_pending :]

    def apply(self, events: Iterable[RevocationEvent]) -> None:
        import redis

        events = list(events)
        if not events:
            return
        self._ensure_started()
        with self._lock:
            self._mirror.apply(events)
        with self._pending_lock:
            batch, self._pending = self._pending + events, []
        try:
            self._write(batch)
        except redis.RedisError as exc:
            self._keep(batch)
            log.warning(
                "revocations: Redis is unreachable (%s); %d event(s) applied in this process "
                "only, written to Redis when it answers again",
                exc,
                len(events),
            )

    # -- reading ------------------------------------------------------------------------

    @property
    def last_seq(self) -> int:
        """The lower of the stored seq and the copy's, or the copy's when Redis is down.

        A lagging copy costs a few events pulled again; a store Redis lost (a restart
        without persistence, writes that failed) is written again by the pull.
        """
        import redis

        self._ensure_started()
        mirrored = self._mirror.last_seq
        try:
            value = self._redis.get(self._prefix + "seq")
        except redis.RedisError:
            return mirrored
        return min(mirrored, int(value) if value is not None else 0)

    def _ready(self) -> None:
        self._ensure_started()
        if self._loaded.is_set():
            return
        self._tried.wait(self.load_wait)
        if not self._loaded.is_set():
            raise RevocationUnavailable(
                "Redis is unreachable and the revocation list was never loaded from it"
            )

    def is_revoked(self, token: AccessToken) -> bool:
        self._ready()
        with self._lock:
            return self._mirror.is_revoked(token)

    def session_valid(self, user_id: int, login_time: float | None) -> bool:
        self._ready()
        with self._lock:
            return self._mirror.session_valid(user_id, login_time)

    def user_not_before(self, user_id: int) -> int | None:
        self._ready()
        with self._lock:
            return self._mirror.user_not_before(user_id)


def make_store(redis_url: str | None, service_id: str) -> RevocationStore:
    """The Redis store when *redis_url* is set (connected on first use), else in-process."""
    if not redis_url:
        return MemoryRevocationStore()
    try:
        import redis
    except ImportError as exc:
        raise MissingExtraError("redis", "[global] redis-url (revocations)") from exc

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    return RedisRevocationStore(client, prefix=f"srcore:revocation:{service_id}:")


# -- the pull ---------------------------------------------------------------------------

#: Fetch the events after a seq: returns (events, last seq).
Fetch = Callable[[int], tuple[list[RevocationEvent], int]]


class RevocationPuller:
    """Pull missed events from meta every *interval* seconds in a daemon thread.

    The thread is started by :meth:`ensure_started`, which the app calls on a request:
    never at import or app build, and again in each process after gunicorn forks.
    """

    #: The most pages of events one pull reads before waiting for the next round.
    max_pages = 100

    def __init__(self, store: RevocationStore, fetch: Fetch, *, interval: float) -> None:
        self.store = store
        self.fetch = fetch
        self.interval = interval
        self._started = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        reset_in_child(self._forked)
        #: How many pulls ran (successful or not).
        self.pulls = 0
        #: Called with the events of each pull once the store has them (the app's webhook
        #: subscriptions follow them: :func:`srcore.webhooks.accounts.after_revocations`).
        self.listeners: list[Callable[[list[RevocationEvent]], None]] = []

    def pull_once(self) -> int:
        """Apply every event meta has after the store's last seq; return how many."""
        applied = 0
        for _ in range(self.max_pages):
            since = self.store.last_seq
            events, last = self.fetch(since)
            events = [e for e in events if e.seq > since]
            if events:
                self.store.apply(events)
                applied += len(events)
                for listener in self.listeners:
                    try:
                        listener(events)
                    except Exception:  # the store has them either way; logged for the operator
                        log.exception("applying pulled revocations to webhooks failed")
            if not events or last <= since:
                break
        self.pulls += 1
        return applied

    def _forked(self) -> None:
        self._start_lock = threading.Lock()
        self._started = False

    def ensure_started(self) -> None:
        """Start the thread in this process if it is not running here yet (cheap if it is)."""
        if self._started or self.interval <= 0:
            return
        with self._start_lock:
            if self._started:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="srcore-revocation-pull", daemon=True
            )
            self._thread.start()
            self._started = True

    def stop(self) -> None:
        """Stop the thread (tests; the process exiting stops it too)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._started = False

    def _run(self, stop: threading.Event) -> None:
        # Rounds start every `interval` seconds, however long a pull takes, so a lost push
        # costs at most the interval (plus one pull), not interval + pull time each round.
        next_round = time.monotonic()
        while not stop.is_set():
            try:
                self.pull_once()
            except Exception as exc:  # keep pulling whatever went wrong this round
                log.warning("pulling revocations from meta failed: %s", exc)
            next_round = max(next_round + self.interval, time.monotonic())
            stop.wait(next_round - time.monotonic())


# -- Flask glue -------------------------------------------------------------------------

#: Where meta's webhook worker delivers ``revocation:issued`` and ``profile:updated``.
EVENTS_PATH = "/_srcore/events"
#: The events of meta a service applies (meta's first-party subscription lists them).
REVOCATION_EVENT = "revocation:issued"
PROFILE_EVENT = "profile:updated"
_MAX_BODY = 1024 * 1024


def _error(status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> Any:
    """The standard JSON error body: these requests come from meta, never from a browser."""
    from flask import jsonify

    from srcore.validation import FieldError, error_body

    response = jsonify(error_body([FieldError(reason=reason)]))
    response.status_code = status
    response.headers.extend(headers)
    return response


def events_secret(link: Any) -> str | None:
    """The ``whsec_`` secret meta signs this service's events with (derived, not stored)."""
    from srcore.webhooks.signing import derive_secret

    client_secret = getattr(link.meta, "client_secret", None)
    if not client_secret:
        return None
    return derive_secret(str(client_secret), link.service_id)


def apply_event(link: Any, message: object) -> None:
    """Apply one verified message of meta's (``{"type", "timestamp", "data"}``).

    ``revocation:issued`` events go to the revocation store; ``profile:updated`` updates
    the local copy of the user (users this service has never seen are not created: they
    arrive when they first log in or call the API). Other types are ignored. Raises
    ValueError for a malformed message, RevocationUnavailable when the store is down.
    """
    from srcore.auth.oauth_client import profile_values, upsert_user

    if not isinstance(message, Mapping):
        raise ValueError("the body must be an object")
    kind, data = message.get("type"), message.get("data")
    if not isinstance(data, Mapping):
        raise ValueError("the message has no data object")
    if kind == REVOCATION_EVENT:
        events = parse_events(data.get("events"))
        link.store.apply(events)
        # Suspensions and revoked accounts also stop their webhook subscriptions here.
        from flask import current_app

        from srcore.webhooks.accounts import after_revocations

        after_revocations(current_app._get_current_object(), events)  # type: ignore[attr-defined]
    elif kind == PROFILE_EVENT:
        upsert_user(profile_values(data), create=False)


# -- replays -----------------------------------------------------------------------------


class SeenMessages(Protocol):
    """The ids of meta's messages already applied, remembered while a replay would verify.

    A signed message stays valid for its whole timestamp window: whoever recorded one (a
    proxy's log, a reused connection) could send it again and roll a profile back to an
    older copy. Each id is claimed before its message is applied and released if applying
    fails, so meta's retry of a failed delivery still gets through.
    """

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
    from srcore.webhooks.signing import DEFAULT_TOLERANCE

    window = 2 * DEFAULT_TOLERANCE.total_seconds() + 60
    if not redis_url:
        return MemorySeenMessages(window)
    try:
        import redis
    except ImportError as exc:
        raise MissingExtraError("redis", "[global] redis-url (replay protection)") from exc

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    return RedisSeenMessages(client, service_id, window)


#: Where an app keeps its :class:`SeenMessages`.
_SEEN_KEY = "srcore.events_seen"


def receive_events() -> Any:
    """``POST /_srcore/events``: apply what meta's webhook worker delivered.

    The request is a Standard Webhooks message signed with the secret both sides derive
    from this service's OAuth client secret (:func:`srcore.webhooks.derive_secret`):
    401 when the signature, its headers or its timestamp do not check out, 400 for a body
    that is not an event, 503 when the revocation list cannot be written (meta retries),
    204 once applied, and 204 without applying it again for a message id already applied
    (a replay, or meta retrying a delivery whose answer it did not get).
    """
    from flask import current_app, request

    from srcore.webhooks.signing import WebhookVerificationError, verify

    link = current_app.extensions["srcore"].identity
    secret = events_secret(link)
    unauthorized = [("WWW-Authenticate", 'Bearer error="invalid_token"')]
    if secret is None:
        return _error(401, "This service has no OAuth client secret to check meta's events.")
    body = request.get_data(cache=False)
    if len(body) > _MAX_BODY:
        return _error(413, "The body is too large.")
    try:
        message = verify(secret, dict(request.headers), body)
    except WebhookVerificationError as exc:
        if str(exc) == "the body is not JSON":
            return _error(400, "The body must be a JSON webhook message.")
        return _error(401, f"The event's signature does not check out: {exc}.", unauthorized)
    seen: SeenMessages = current_app.extensions[_SEEN_KEY]
    message_id = str(request.headers.get("webhook-id", ""))
    try:
        if not seen.claim(message_id):
            return "", 204
    except RevocationUnavailable as exc:
        return _error(503, str(exc))
    try:
        apply_event(link, message)
    except RevocationUnavailable as exc:
        seen.release(message_id)
        return _error(503, str(exc))
    except ValueError as exc:
        seen.release(message_id)
        return _error(400, f"Bad event: {exc}")
    except BaseException:
        seen.release(message_id)
        raise
    return "", 204


def init_app(app: Any) -> None:
    """Add the receiver of meta's events to *app* and start the pull on its first request."""
    st = app.extensions["srcore"]
    link = st.identity
    app.extensions[_SEEN_KEY] = make_seen_messages(
        str(st.config.global_.get("redis-url") or "") or None, st.service_id
    )
    app.add_url_rule(
        EVENTS_PATH,
        endpoint="srcore_meta_events",
        view_func=receive_events,
        methods=["POST"],
    )
    puller = link.puller
    if puller is not None:
        from srcore.webhooks.accounts import after_revocations

        puller.listeners.append(functools.partial(after_revocations, app))
        start = puller.ensure_started

        def start_pulling() -> None:
            start()

        app.before_request(start_pulling)
