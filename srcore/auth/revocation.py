"""Revocations from meta: the store every check reads, the push receiver and the pull.

meta writes one event per revocation and pushes it to every service (best effort); each
service also pulls the events it may have missed every ``revocation-pull-interval``, so
a lost push costs at most that long. Checks never call meta: :meth:`RevocationStore.
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
every gunicorn worker see a push that reached one of them. With the in-process store and
several workers each worker pulls on its own, so a push that reached another worker takes
up to the pull interval to apply everywhere.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from srcore.auth.tokens import VerificationUnavailable

if TYPE_CHECKING:
    import redis

    from srcore.auth.tokens import AccessToken, KeySource

__all__ = [
    "KINDS",
    "PUSH_TYPE",
    "MemoryRevocationStore",
    "PushError",
    "RedisRevocationStore",
    "RevocationEvent",
    "RevocationPuller",
    "RevocationStore",
    "RevocationUnavailable",
    "make_store",
    "parse_events",
    "verify_push",
]

log = logging.getLogger("srcore.auth")

KINDS = frozenset({"token", "grant", "client", "user", "session", "suspend", "unsuspend"})
#: The ``typ`` header of meta's pushes.
PUSH_TYPE = "srcore-push+jwt"
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
    whole life. The grant events sent with a cut-off end the older tokens of that second.
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
# seconds (0: none). One round trip for a whole batch of events.
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
return n
"""


class RedisRevocationStore:
    """The store in Redis, shared by every process of the service.

    Token and grant entries expire with the tokens; not_before marks and suspensions are
    kept (one small key per user or client). A check is one ``MGET``.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._clock = clock
        self._script: Any = None

    def _key(self, kind: str, subject: str) -> str:
        return f"{self._prefix}{kind}:{subject}"

    @property
    def last_seq(self) -> int:
        import redis

        try:
            value = self._redis.get(self._prefix + "seq")
        except redis.RedisError as exc:
            raise RevocationUnavailable(f"Redis is unreachable: {exc}") from exc
        return int(value) if value is not None else 0

    def apply(self, events: Iterable[RevocationEvent]) -> None:
        import redis

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
        try:
            if self._script is None:
                self._script = self._redis.register_script(_SET_MAX)
            self._script(keys=keys, args=[*values, *ttls])
        except redis.RedisError as exc:
            raise RevocationUnavailable(f"Redis is unreachable: {exc}") from exc

    def _mget(self, keys: Sequence[str]) -> list[Any]:
        import redis

        try:
            result: list[Any] = self._redis.mget(keys)
        except redis.RedisError as exc:
            raise RevocationUnavailable(f"Redis is unreachable: {exc}") from exc
        return result

    def is_revoked(self, token: AccessToken) -> bool:
        keys = [self._key("jti", token.jti), self._key("client", token.client_id)]
        grant = token.claims.get("grant")
        if token.subject is not None:
            user = str(token.subject)
            keys += [self._key("user", user), self._key("suspension", user)]
        if isinstance(grant, str):
            keys.append(self._key("grant", grant))
        values = self._mget(keys)
        if values[0] is not None:
            return True
        if values[1] is not None and _token_before(token.issued_at, int(values[1])):
            return True
        if token.subject is not None:
            if values[2] is not None and _token_before(token.issued_at, int(values[2])):
                return True
            if values[3] is not None and int(values[3]) % 2 == 1:
                return True
        return isinstance(grant, str) and values[-1] is not None

    def session_valid(self, user_id: int, login_time: float | None) -> bool:
        user = str(user_id)
        marks = self._mget(
            [self._key("suspension", user), self._key("user", user), self._key("session", user)]
        )
        if marks[0] is not None and int(marks[0]) % 2 == 1:
            return False
        values = [int(v) for v in marks[1:] if v is not None]
        return not _issued_before(login_time, max(values) if values else None)

    def user_not_before(self, user_id: int) -> int | None:
        user = str(user_id)
        values = [
            int(v)
            for v in self._mget([self._key("user", user), self._key("session", user)])
            if v is not None
        ]
        return max(values) if values else None


def make_store(redis_url: str | None, service_id: str) -> RevocationStore:
    """The Redis store when *redis_url* is set (connected on first use), else in-process."""
    if not redis_url:
        return MemoryRevocationStore()
    import redis

    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    return RedisRevocationStore(client, prefix=f"srcore:revocation:{service_id}:")


# -- meta's push ------------------------------------------------------------------------


class PushError(Exception):
    """A push that is refused: *status* (400, 401 or 503) and a reason for the error body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


_MAX_PUSH = 1024 * 1024


def verify_push(
    body: bytes,
    *,
    keys: KeySource,
    issuer: str,
    audience: str,
    now: float,
    leeway: int = 30,
) -> dict[str, Any]:
    """Check a push from meta (a compact JWS) and return its claims, or raise PushError."""
    from joserfc import jws
    from joserfc.errors import JoseError

    from srcore.auth import jose

    if not body or len(body) > _MAX_PUSH:
        raise PushError(400, "The body must be a compact JWS.")
    try:
        token = body.decode("ascii").strip()
        header = jws.extract_compact(token.encode("ascii")).protected
    except (JoseError, ValueError, UnicodeError):
        raise PushError(400, "The body must be a compact JWS.") from None
    if header.get("typ") != PUSH_TYPE:
        raise PushError(400, f"The JWS must have typ {PUSH_TYPE}.")
    if header.get("alg") not in jose.ALGORITHMS:
        raise PushError(401, "The JWS is not signed with an accepted algorithm.")
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise PushError(400, "The JWS kid must be a string.")
    try:
        key_set = keys.key_set(kid)
    except VerificationUnavailable as exc:
        raise PushError(503, str(exc)) from None
    try:
        claims = dict(jose.decode(token, key_set).claims)
    except (JoseError, ValueError, KeyError, TypeError):
        raise PushError(401, "The push's signature is not valid.") from None
    if claims.get("iss") != issuer:
        raise PushError(401, "The push was issued by someone else.")
    aud = claims.get("aud")
    if audience not in (aud if isinstance(aud, list) else [aud]):
        raise PushError(401, "The push is meant for another service.")
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int) or not isinstance(iat, int):
        raise PushError(400, "The push lacks exp or iat.")
    if exp + leeway < now:
        raise PushError(401, "The push has expired.")
    if iat - leeway > now:
        raise PushError(401, "The push was issued in the future.")
    return claims


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
        self._pid: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._start_lock = threading.Lock()
        #: How many pulls ran (successful or not).
        self.pulls = 0

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
            if not events or last <= since:
                break
        self.pulls += 1
        return applied

    def ensure_started(self) -> None:
        """Start the thread in this process if it is not running here yet (cheap if it is)."""
        if self._pid == os.getpid() or self.interval <= 0:
            return
        with self._start_lock:
            if self._pid == os.getpid():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="srcore-revocation-pull", daemon=True
            )
            self._thread.start()
            self._pid = os.getpid()

    def stop(self) -> None:
        """Stop the thread (tests; the process exiting stops it too)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._pid = None

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

PUSH_PATH = "/_srcore/revocations"
PROFILE_PUSH_PATH = "/_srcore/profile"


def _push_claims() -> dict[str, Any]:
    from flask import current_app, request

    link = current_app.extensions["srcore"].identity
    return verify_push(
        request.get_data(cache=False),
        keys=link.keys,
        issuer=link.issuer,
        audience=link.service_id,
        now=time.time(),
    )


def _error(status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> Any:
    """The standard JSON error body: pushes come from meta, never from a browser."""
    from flask import jsonify

    from srcore.validation import FieldError, error_body

    response = jsonify(error_body([FieldError(reason=reason)]))
    response.status_code = status
    response.headers.extend(headers)
    return response


def _refused(exc: PushError) -> Any:
    headers = [("WWW-Authenticate", 'Bearer error="invalid_token"')] if exc.status == 401 else []
    return _error(exc.status, exc.reason, headers)


def receive_revocations() -> Any:
    """``POST /_srcore/revocations``: apply the events meta pushed."""
    from flask import current_app

    try:
        claims = _push_claims()
        events = parse_events(claims.get("events"))
    except PushError as exc:
        return _refused(exc)
    except ValueError as exc:
        return _error(400, f"Bad events: {exc}")
    try:
        current_app.extensions["srcore"].identity.store.apply(events)
    except RevocationUnavailable as exc:
        return _error(503, str(exc))
    return "", 204


def _pushed_profiles(claims: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    profiles: list[Mapping[str, Any]] = []
    top = claims.get("profile")
    if isinstance(top, Mapping):
        profiles.append(top)
    events = claims.get("events")
    for event in events if isinstance(events, list) else []:
        if not isinstance(event, Mapping) or event.get("kind") not in (None, "profile"):
            continue
        inner = event.get("profile", event.get("user"))
        profiles.append(inner if isinstance(inner, Mapping) else event)
    return profiles


def receive_profile() -> Any:
    """``POST /_srcore/profile``: update the local copy of users whose profile changed.

    Users this service has never seen are not created: they arrive when they first log
    in or call the API.
    """
    from srcore.auth.oauth_client import profile_values, upsert_user

    try:
        claims = _push_claims()
    except PushError as exc:
        return _refused(exc)
    profiles = _pushed_profiles(claims)
    if not profiles:
        return _error(400, "The push carries no profile.")
    try:
        rows = [profile_values(p) for p in profiles]
    except ValueError as exc:
        return _error(400, f"Bad profile: {exc}")
    for values in rows:
        upsert_user(values, create=False)
    return "", 204


def init_app(app: Any) -> None:
    """Add meta's push receivers to *app* and start the pull on its first request."""
    link = app.extensions["srcore"].identity
    app.add_url_rule(
        PUSH_PATH,
        endpoint="srcore_push_revocations",
        view_func=receive_revocations,
        methods=["POST"],
    )
    app.add_url_rule(
        PROFILE_PUSH_PATH,
        endpoint="srcore_push_profile",
        view_func=receive_profile,
        methods=["POST"],
    )
    puller = link.puller
    if puller is not None:
        start = puller.ensure_started

        def start_pulling() -> None:
            start()

        app.before_request(start_pulling)
