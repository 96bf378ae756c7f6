"""What meta's per-address form limits (``RATE_LIMITS``) cost, and that they still hold.

Without Redis, and while Redis is away, the limits are counted in process. ``limits``' own
memory storage (Flask-Limiter's for ``memory://`` and its in-memory fallback) starts a timer
after each hit that walks every key it holds: with 100,000 addresses seen in the window each
login POST of everyone cost 25 ms of CPU more. Here each hit touches its own key, starts no
thread, and the keys held are bounded. The limits count an IPv6 client by its /64 and an
IPv4 address alone, in process memory and in Redis alike.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from srcore.config import env_name
from srcore.testing import free_port, require_or_skip

REDIS_URL = "redis://127.0.0.1:6379/0"

# The limits keep nothing in the database: one backend is enough.
pytestmark = pytest.mark.parametrize("srcore_backend", ["sqlite"], indirect=True)


def _redis_available() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory", "redis", "redis-away"])
def where(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Where the limits are kept: in process, in Redis, or ``redis-url`` set while nothing
    listens there (a port on 127.0.0.1)."""
    kind: str = request.param
    if kind == "redis":
        require_or_skip(_redis_available(), "Redis at " + REDIS_URL)
        monkeypatch.setenv(env_name("global", "redis-url"), REDIS_URL)
    elif kind == "redis-away":
        url = f"redis://127.0.0.1:{free_port()}/0"
        monkeypatch.setenv(env_name("global", "redis-url"), url)
    return kind


@pytest.fixture
def app(where: str, app: Any) -> Iterator[Any]:
    """meta with only its per-address form limits (not the failed-login throttle, which
    would answer first), its limiter's Redis connections closed afterwards."""
    app.extensions["meta"].protection = None
    yield app
    primary = getattr(getattr(_storage(app), "store", None), "primary", None)
    if primary is not None:
        primary.storage.close()


def _limiter(app: Any) -> Any:
    from flask_limiter import Limiter

    found = [ext for ext in app.extensions["limiter"] if isinstance(ext, Limiter)]
    assert len(found) == 1, found
    return found[0]


def _storage(app: Any) -> Any:
    return _limiter(app).storage


def _login(app: Any, csrf: Any, address: str) -> tuple[int, str]:
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    answer = csrf.post(client, "/login", {"login": "nobody", "password": "wrong password!"})
    return answer.status_code, answer.get_data(as_text=True)


def _fresh() -> tuple[str, str, str]:
    """Two neighbouring IPv6 /64s and an IPv4 /24, each as its prefix, that no other run
    used: Redis keeps the counts a minute."""
    tag = uuid.uuid4().int
    net = f"2001:db8:{tag & 0xFFFF:x}:{(tag >> 16) & 0xFFFE:x}"
    neighbour = f"2001:db8:{tag & 0xFFFF:x}:{((tag >> 16) & 0xFFFE) + 1:x}"
    return net, neighbour, f"198.{18 + ((tag >> 32) & 1)}.{(tag >> 33) & 0xFF}"


def test_form_limits_start_no_thread_and_keep_their_keys_bounded(
    app: Any, csrf: Any, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from srcore.throttle import FallbackStore
    from srcore.windows import MovingWindows

    started: list[threading.Thread] = []
    real_start = threading.Thread.start

    def start(thread: threading.Thread) -> None:
        started.append(thread)
        real_start(thread)

    monkeypatch.setattr(threading.Thread, "start", start)
    _net, _neighbour, ipv4 = _fresh()
    for host in range(1, 6):
        status, _page = _login(app, csrf, f"{ipv4}.{host}")
        assert status == 400, (host, status)
    assert started == []

    store = _storage(app).store
    # With redis-url set the limits are kept in Redis (and in process only while it is away).
    assert isinstance(store, FallbackStore) == (where != "memory")
    in_process = store.fallback if isinstance(store, FallbackStore) else store
    assert isinstance(in_process, MovingWindows)
    assert in_process.max_keys == 100_000
    if where == "memory":
        assert len(in_process) == 5  # a key per address, nothing else kept
    elif where == "redis-away":
        assert store.degraded and len(in_process) == 5
    else:
        assert not store.degraded and len(in_process) == 0


def test_login_posts_are_limited_per_ipv6_64_and_per_ipv4_address(
    app: Any, csrf: Any, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``/login`` takes 20 POSTs a minute per client, in any minute (a moving window)."""
    from meta.protection import RATE_LIMITS

    assert RATE_LIMITS["login"] == "20 per minute"
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    net, neighbour, ipv4 = _fresh()

    # One subscriber taking the next address of its /64 each time.
    answers = [_login(app, csrf, f"{net}::{host:x}") for host in range(1, 22)]
    assert [status for status, _page in answers[:20]] == [400] * 20
    status, page = answers[20]
    assert status == 429 and "Too many attempts from your address" in page
    assert _login(app, csrf, f"{neighbour}::1")[0] == 400  # another /64: its own allowance

    # IPv4 addresses are each their own, and one alone is limited.
    assert {_login(app, csrf, f"{ipv4}.{host}")[0] for host in range(1, 22)} == {400}
    assert [_login(app, csrf, f"{ipv4}.1")[0] for _ in range(20)] == [400] * 19 + [429]

    # Still refused until a minute has passed since the first POSTs, then served again.
    clock[0] += 59
    assert _login(app, csrf, f"{net}::99")[0] == 429
    clock[0] += 2
    assert _login(app, csrf, f"{net}::99")[0] == 400
    assert _login(app, csrf, f"{ipv4}.1")[0] == 400


def test_the_limit_holds_in_any_minute(
    app: Any, csrf: Any, where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A moving window: 10 POSTs, 10 more half a minute later, and a minute after the
    first only the first 10 are forgotten (a fixed window would forget all 20)."""
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    _net, _neighbour, ipv4 = _fresh()
    address = f"{ipv4}.3"
    assert {_login(app, csrf, address)[0] for _ in range(10)} == {400}
    clock[0] += 30
    assert {_login(app, csrf, address)[0] for _ in range(10)} == {400}
    assert _login(app, csrf, address)[0] == 429
    clock[0] += 31
    assert [_login(app, csrf, address)[0] for _ in range(11)] == [400] * 10 + [429]


def test_form_limits_are_kept_in_redis_when_it_is_set(app: Any, csrf: Any, where: str) -> None:
    """Every worker counts together: the windows are in Redis, not in the process."""
    if where != "redis":
        return
    import redis

    _net, _neighbour, ipv4 = _fresh()
    assert _login(app, csrf, f"{ipv4}.7")[0] == 400
    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*meta-windows/{ipv4}.7/*", count=1000))
        assert len(keys) == 1 and client.llen(keys[0]) == 1, keys
    finally:
        client.close()
