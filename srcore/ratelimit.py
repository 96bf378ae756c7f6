"""Write rate limits: how many state-changing requests one user, client or address may make.

Every POST, PUT, PATCH and DELETE a service answers is counted against its ``[global]
write-rate-limit`` (a burst and an hourly cap by default; a service's own section may set
its own), per *identity*: the logged-in user of a page, the user a bearer token acts for
(so all of a user's tokens and sessions share one count), the OAuth client of a token
acting for no user, and the client's address for anyone else (an IPv6 address by its /64,
which one subscriber usually holds whole). A request over the limit is answered 429 with
``Retry-After`` before its view runs, so it writes nothing. Safe methods are never
counted: the read path costs one method comparison.

A view may be left out with :func:`exempt` (webhook receivers, callbacks other services
make) or limited further with :func:`write_limit`, counted per identity and route on top
of the service-wide count; :func:`exempt_endpoints` leaves out endpoints by name.

The counts live in ``limits``' Redis storage when ``[global] redis-url`` is set, shared by
every process and host of the service, and in process memory otherwise. While Redis cannot
be reached each process counts on its own (:class:`srcore.throttle.FallbackStore`) and
says so in the log: a request is never refused because the counter is away.
"""

from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from flask import Flask, Response, current_app, request, session

from srcore.throttle import Decision, FallbackStore, Store, limits_url
from srcore.windows import MovingWindows

if TYPE_CHECKING:
    from limits import RateLimitItem

__all__ = [
    "EXTENSION_KEY",
    "WriteLimits",
    "client_address",
    "exempt",
    "exempt_endpoints",
    "identity",
    "init_app",
    "parse_limits",
    "write_limit",
    "write_limits",
]

#: Where an app keeps its :class:`WriteLimits`.
EXTENSION_KEY = "srcore.ratelimit"
#: The methods that are counted; the others never change state (and are never slowed).
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The value of ``write-rate-limit`` that turns the limits off.
OFF = "off"

#: srcore's own endpoints that are never counted: meta's pushes to the service, logging
#: out (which must always work), the health check and metrics.
SRCORE_EXEMPT = frozenset(
    {"srcore_meta_events", "srcore_logout", "srcore_healthz", "srcore_metrics"}
)

_MARK = "srcore_write_limits"
_EXEMPT: tuple[RateLimitItem, ...] = ()
_V = TypeVar("_V", bound=Callable[..., Any])


def parse_limits(values: Iterable[str]) -> tuple[RateLimitItem, ...]:
    """Read limits written as ``limits`` parses them (``60/minute``, ``500 per hour``),
    shortest window first; ``("off",)`` is none at all. Raises :class:`ValueError`."""
    from limits import parse

    texts = [str(value).strip() for value in values if str(value).strip()]
    if [text.lower() for text in texts] == [OFF]:
        return ()
    if not texts:
        raise ValueError(f"no limit given: write limits like 60/minute, 500/hour, or {OFF}")
    items = []
    for text in texts:
        try:
            item = parse(text)
        except ValueError:
            raise ValueError(
                f"not a rate limit: {text!r} (write a count per time, like 60/minute or "
                f"500 per hour, or {OFF} alone)"
            ) from None
        if item.amount < 1:
            raise ValueError(f"{text!r} allows nothing at all: use {OFF} to turn limits off")
        items.append(item)
    return tuple(sorted(items, key=lambda item: item.get_expiry()))


def exempt(view: _V) -> _V:
    """Count no request of *view* (put it below the route decorator).

    For routes other services or meta call on their own schedule (webhook receivers,
    callbacks), and for what must always work, like logging out.
    """
    setattr(view, _MARK, _EXEMPT)
    return view


def write_limit(*rules: str) -> Callable[[_V], _V]:
    """Limit the writes of a view further: ``@write_limit("10/hour")``, counted per identity
    for this route alone, on top of the service's ``write-rate-limit`` (put it below the
    route decorator). A rule that does not parse fails when the module is imported."""
    items = parse_limits(rules)
    if not items:
        raise ValueError(f"write_limit needs a limit; to count nothing, use exempt, not {OFF}")

    def decorate(view: _V) -> _V:
        setattr(view, _MARK, items)
        return view

    return decorate


def exempt_endpoints(app: Flask, *endpoints: str) -> None:
    """Count no request of *endpoints* of *app*, named as ``url_for`` names them."""
    write_limits(app).exempt.update(endpoints)


def write_limits(app: Flask | None = None) -> WriteLimits:
    """The write limits of *app*, or of the current app."""
    target = app if app is not None else current_app
    result: WriteLimits = target.extensions[EXTENSION_KEY]
    return result


class WindowStore(Store, Protocol):
    """A :class:`~srcore.throttle.Store` that also counts one write against all of its
    limits at once (:meth:`srcore.windows.MovingWindows.acquire_all`)."""

    def acquire_all(self, checks: Sequence[tuple[str, int, int]]) -> tuple[int, float] | None:
        """Count one entry per ``(key, limit, expiry)``, in turn, up to the first full one:
        None, or its index and the oldest entry of its window."""


#: Lua run by Redis for :meth:`_RedisWindows.acquire_all`: ``limits``' own moving-window
#: scripts, each as a function of its keys and arguments, called for one check after the
#: other. ARGV: the time, then each check's limit and expiry.
_ACQUIRE_ALL = """
local function acquire(KEYS, ARGV)
{acquire}
end
local function window(KEYS, ARGV)
{window}
end
local now = ARGV[1]
for i = 1, #KEYS do
    local limit, expiry = ARGV[2 * i], ARGV[2 * i + 1]
    if not acquire({{KEYS[i]}}, {{now, limit, expiry, 1}}) then
        local found = window({{KEYS[i]}}, {{tonumber(now) - tonumber(expiry), limit}})
        return {{i, found and found[1] or false}}
    end
end
return false
"""


class _RedisWindows:
    """``limits``' Redis storage, with a write's checks made in one round trip.

    Counting each limit with its own call cost a round trip per limit (two with the
    default burst and hourly cap), and one more to read the window of a refusal. Here
    ``limits``' acquire and window scripts run inside one script, with the same keys, the
    same arguments and in the same order, stopping at the first refusal as before. A
    Redis Cluster (whose keys may sit on different nodes) is counted call by call.
    """

    def __init__(self, storage: Any) -> None:
        from limits.storage import RedisClusterStorage, RedisStorage

        self.storage = storage
        self._script: Any = None
        if isinstance(storage, RedisStorage) and not isinstance(storage, RedisClusterStorage):
            source = _ACQUIRE_ALL.format(
                acquire=RedisStorage.SCRIPT_ACQUIRE_MOVING_WINDOW.decode(),
                window=RedisStorage.SCRIPT_MOVING_WINDOW.decode(),
            )
            self._script = storage.get_connection().register_script(source.encode())

    def acquire_entry(self, key: str, limit: int, expiry: int, amount: int = 1) -> bool:
        return bool(self.storage.acquire_entry(key, limit, expiry, amount))

    def get_moving_window(self, key: str, limit: int, expiry: int) -> tuple[float, int]:
        oldest, count = self.storage.get_moving_window(key, limit, expiry)
        return float(oldest), int(count)

    def clear(self, key: str) -> None:
        self.storage.clear(key)

    def acquire_all(self, checks: Sequence[tuple[str, int, int]]) -> tuple[int, float] | None:
        if self._script is None:
            for index, (key, limit, expiry) in enumerate(checks):
                if not self.acquire_entry(key, limit, expiry):
                    return index, self.get_moving_window(key, limit, expiry)[0]
            return None
        from limits.errors import StorageError

        now = time.time()
        keys = [self.storage.prefixed_key(key) for key, _limit, _expiry in checks]
        args: list[float | int] = [now]
        for _key, limit, expiry in checks:
            args += [limit, expiry]
        try:
            answer = self._script(keys, args)
        except self.storage.base_exceptions as exc:
            raise StorageError(exc) from exc
        if not answer:
            return None
        oldest = answer[1] if len(answer) > 1 and answer[1] is not None else now
        return int(answer[0]) - 1, float(oldest)


class _FallbackWindows(FallbackStore):
    """:class:`~srcore.throttle.FallbackStore` over :class:`WindowStore` storages."""

    def acquire_all(self, checks: Sequence[tuple[str, int, int]]) -> tuple[int, float] | None:
        refused: tuple[int, float] | None = self._use("acquire_all", checks)
        return refused


class WriteLimits:
    """One service's write limits: its rules, its counters and the endpoints left out.

    *rules* come from :func:`parse_limits` (none: nothing is counted). The storage is built
    on the first write, so an app that only reads opens no connection and starts no thread.
    Counters are keyed under *prefix* (``srcore-writes/<service>``), then the identity.
    """

    def __init__(
        self, rules: Sequence[RateLimitItem], *, redis_url: str | None = None, prefix: str
    ) -> None:
        self.rules = tuple(rules)
        self.redis_url = redis_url or None
        self.prefix = prefix
        self.exempt: set[str] = set()
        self._store: WindowStore | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        rules = ", ".join(str(rule) for rule in self.rules) or OFF
        return f"<WriteLimits {rules} {'redis' if self.redis_url else 'memory'}>"

    @property
    def enabled(self) -> bool:
        """Whether the service counts writes at all."""
        return bool(self.rules)

    def store(self) -> WindowStore:
        """The moving-window storage of the counts, built on first use."""
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = self._build()
        return self._store

    def _build(self) -> WindowStore:
        from limits.storage import storage_from_string

        memory = MovingWindows()
        if self.redis_url is None:
            return memory
        shared = storage_from_string(
            limits_url(self.redis_url),
            socket_timeout=2,
            socket_connect_timeout=2,
            wrap_exceptions=True,
        )
        return _FallbackWindows(_RedisWindows(shared), memory)

    def hit(
        self, who: str, *, route: str | None = None, extra: Sequence[RateLimitItem] = ()
    ) -> tuple[Decision, RateLimitItem | None]:
        """Count one write of *who*; say whether it may go ahead and, if not, which limit
        refused it. *extra* limits are counted for *route* alone.

        The route's own limits are counted first, then the shortest window first, and
        counting stops at the first refusal: writes refused for a burst or by a tighter
        route do not use up the hourly allowance.
        """
        rules = [*extra, *self.rules]
        keys = [rule.key_for(self.prefix, f"route:{route}", who) for rule in extra]
        keys += [rule.key_for(self.prefix, who) for rule in self.rules]
        # One call, and on Redis one round trip, for all of them.
        checks = [
            (key, rule.amount, rule.get_expiry()) for rule, key in zip(rules, keys, strict=True)
        ]
        refused = self.store().acquire_all(checks)
        if refused is None:
            return Decision(allowed=True), None
        index, oldest = refused
        rule = rules[index]
        # An entry counts until its expiry has passed, so one second more than what is
        # left of it: a client that waits as told is let in.
        wait = max(math.floor(oldest + rule.get_expiry() - time.time()) + 1, 1)
        return Decision(allowed=False, retry_after=float(wait)), rule


def client_address() -> str:
    """The client's address as limits count it (after ``proxy-fix-trusted-hops``): an IPv6
    address by its /64, which one subscriber usually holds whole, so that taking the next
    address of it is not a fresh allowance."""
    remote = request.remote_addr or "unknown"
    try:
        parsed = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def identity() -> str:
    """Who the current request's writes are counted for: ``user:<id>``, ``client:<id>``
    (a token acting for no user) or ``address:<address>``.

    The API is authenticated by bearer tokens alone and pages by the session alone, as
    :mod:`srcore.auth` reads them; a token that does not verify is counted by address
    (its view answers 401 anyway), and so is a session meta has ended since, or one
    logged out here. Verifying here costs the view nothing: the verifier caches the
    token, and the session's user row stays loaded for the view.
    """
    from srcore.routing import API_PREFIX

    if request.path.startswith(API_PREFIX):
        kind, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if kind.lower() == "bearer" and credentials.strip():
            from srcore.auth.state import auth_state
            from srcore.auth.tokens import TokenError, VerificationUnavailable

            verifier = auth_state().token_verifier
            try:
                token = verifier.verify(credentials.strip()) if verifier is not None else None
            except (TokenError, VerificationUnavailable):
                token = None
            if token is not None:
                if token.subject is not None:
                    return f"user:{token.subject}"
                return f"client:{token.client_id}"
    else:
        from srcore.auth.web import _SESSION_USER, current_user, session_stands

        uid = session.get(_SESSION_USER)
        # A session meta has ended (a logout everywhere, a suspension) or that was logged
        # out here is anyone's who kept a copy of the cookie: its writes must not spend
        # the count of the user's live sessions. While the revocation list cannot be
        # read, the cookie is taken at its word (the view decides what to answer). A
        # logout here is told by the query loading the user's row, which the view then
        # reads without asking again.
        if isinstance(uid, int) and not isinstance(uid, bool):
            stands = session_stands(uid)
            if stands is None:
                return f"user:{uid}"
            users = current_app.extensions["srcore"].user_model is not None
            if stands and (not users or current_user._get_current_object() is not None):
                return f"user:{uid}"
    return f"address:{client_address()}"


_WHOM = {"user": "one account", "client": "one application", "address": "one address"}


def _refusal(who: str, rule: RateLimitItem, decision: Decision) -> Response:
    from srcore.errors import error_response

    count, per = rule.amount, rule.GRANULARITY.name
    window = f"{rule.multiples} {per}s" if rule.multiples > 1 else per
    wait = decision.retry_after_seconds
    message = (
        f"Too many changes: this service takes at most {count} requests that change "
        f"something per {window} from {_WHOM[who.partition(':')[0]]}. "
        f"Try again in {wait} second{'s' if wait != 1 else ''}."
    )
    return error_response(
        429, message, title="Too many requests", headers={"Retry-After": str(wait)}
    )


def init_app(app: Flask) -> None:
    """Count *app*'s writes before each view, against the service's ``write-rate-limit``
    or else ``[global]``'s, in Redis when ``[global] redis-url`` is set."""
    st = app.extensions["srcore"]
    own = st.section["write-rate-limit"]
    rules = parse_limits(own if own is not None else st.config.global_["write-rate-limit"])
    redis_url = str(st.config.global_.get("redis-url") or "") or None
    limits = WriteLimits(rules, redis_url=redis_url, prefix=f"srcore-writes/{st.service_id}")
    limits.exempt.update(SRCORE_EXEMPT)
    app.extensions[EXTENSION_KEY] = limits
    from flask import Request

    from srcore import lifecycle

    def count_writes(req: Request) -> Response | None:
        if req.method not in UNSAFE_METHODS or not limits.rules:
            return None
        endpoint = req.endpoint
        # A request no route takes (404, 405) reaches no view and writes nothing.
        if endpoint is None or req.url_rule is None or endpoint in limits.exempt:
            return None
        extra = getattr(app.view_functions.get(endpoint), _MARK, None)
        if extra == _EXEMPT:
            return None
        who = identity()
        decision, rule = limits.hit(who, route=endpoint, extra=extra or ())
        if decision.allowed or rule is None:
            return None
        return _refusal(who, rule, decision)

    # A step of srcore's one before-request function, after hygiene and the CSRF check.
    lifecycle.add_before(app, count_writes)
