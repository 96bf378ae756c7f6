"""meta's part of docs/security.md's and docs/operators.md's promises, where no other test
held it:

- with ``redis-url`` the login throttle's counters are shared by every worker (Throttles;
  operators.md, Redis): test_with_redis_every_process_counts_the_same_failures;
- the client address the throttles count and the audit records is the one the trusted
  proxies give, never one the client wrote (operators.md, Reverse proxy and TLS):
  test_a_forged_forwarded_address_neither_evades_the_throttle_nor_enters_the_audit;
- the token of a confirmation link never reaches the access log, whatever the method it
  is sent with (Secrets handling):
  test_a_confirmation_token_is_not_logged_for_any_method.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from argon2 import PasswordHasher
from meta_constants import FAST_HASHER

from srcore.testing import require_or_skip

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def _frozen(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Stop the clock the throttles read (both processes here share it); tests move it."""
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    return clock


@pytest.fixture
def _env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Config from the environment, set before :func:`app` is built (parametrized
    indirectly with the pairs)."""
    for name, value in getattr(request, "param", {}).items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def app(_env: None, app: Any) -> Any:
    return app


@pytest.fixture
def address() -> Iterator[str]:
    """A client address no other test uses: throttle and rate-limit keys in a shared Redis
    are named after it. Its keys are removed afterwards."""
    value = f"198.18.{uuid.uuid4().int % 250 + 1}.{uuid.uuid4().int % 250 + 1}"
    yield value
    if _redis_up():
        import redis

        server = redis.Redis.from_url(REDIS_URL)
        for key in server.scan_iter(match=f"*{value}*", count=1000):
            server.delete(key)


@pytest.mark.parametrize("_env", [{"SRCORE__GLOBAL__REDIS_URL": REDIS_URL}], indirect=True)
def test_with_redis_every_process_counts_the_same_failures(
    app: Any, csrf: Any, address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes of meta, failures spread over both: the lockout comes after
    ``login-max-failures`` in all, as with one process (each alone saw fewer)."""
    require_or_skip(_redis_up(), "Redis")
    import meta as package
    from meta.logic import Passwords
    from meta.settings import meta_settings

    other = package.create_app(config=app.extensions["srcore"].config.path)
    other.config["TESTING"] = True
    other.extensions["meta"].passwords = Passwords(PasswordHasher(**FAST_HASHER))
    name = f"ghost-{uuid.uuid4().hex[:12]}"  # counted as typed, like an account's id
    try:
        clock = _frozen(monkeypatch)
        clients = [c.test_client() for c in (app, other)]
        for client in clients:
            client.environ_base["REMOTE_ADDR"] = address
        most = meta_settings(app).login_max_failures
        assert most >= 2
        for attempt in range(most):
            response = csrf.post(
                clients[attempt % 2], "/login", {"login": name, "password": "wrong password!"}
            )
            assert response.status_code == 400, attempt
            clock[0] += 100  # past every growing delay, well within the lockout
        locked = csrf.post(clients[most % 2], "/login", {"login": name, "password": "x" * 12})
        assert locked.status_code == 429
        assert "Too many failed attempts" in locked.get_data(as_text=True)
        assert int(locked.headers["Retry-After"]) > 100  # the lockout, not a delay
    finally:
        other.extensions["srcore"].db.dispose()
        if _redis_up():
            import redis

            server = redis.Redis.from_url(REDIS_URL)
            for key in server.scan_iter(match=f"*{name}*", count=1000):
                server.delete(key)


@pytest.mark.parametrize(
    "_env",
    [{"SRCORE__META__PROXY_FIX_TRUSTED_HOPS": str(hops)} for hops in (0, 1)],
    indirect=True,
    ids=["no-proxy", "one-proxy"],
)
def test_a_forged_forwarded_address_neither_evades_the_throttle_nor_enters_the_audit(
    app: Any, accounts: Any, csrf: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    hops = app.extensions["srcore"].section["proxy-fix-trusted-hops"]
    from meta.models import AuditEntry
    from sqlalchemy import select

    alice = accounts.make("alice")
    _frozen(monkeypatch)  # no delay between the attempts
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = "127.0.0.1"
    proxy = "198.51.100.7"  # what the one trusted proxy saw, when there is one
    believed = proxy if hops else "127.0.0.1"
    statuses = []
    for i in range(13):
        # A different forged address each time, before the proxy's own entry.
        headers = {"X-Forwarded-For": f"203.0.113.{i + 1}, {proxy}"}
        login = "alice" if i == 0 else f"user{i}"
        response = client.post(
            "/login",
            data={
                "login": login,
                "password": "wrong password!",
                "csrf_token": csrf.token(client, "/forgot"),
            },
            headers=headers,
        )
        statuses.append(response.status_code)
    # The address throttle (looser than the account one) counted every one of them.
    assert statuses[:12] == [400] * 12, statuses
    assert statuses[12] == 429, statuses
    with app.extensions["srcore"].db.transaction() as session:
        entry = session.scalars(
            select(AuditEntry).where(
                AuditEntry.user_id == alice.id, AuditEntry.kind == "login-failed"
            )
        ).one()
        assert entry.address == believed


@pytest.mark.parametrize("method", ["GET", "HEAD", "POST", "PUT", "DELETE"])
def test_a_confirmation_token_is_not_logged_for_any_method(
    app: Any, caplog: pytest.LogCaptureFixture, method: str
) -> None:
    token = "c0nf1rmT0kenXYZ"
    with caplog.at_level(logging.INFO, logger="srcore.access"):
        response = app.test_client().open(f"/confirm/{token}?from=mail", method=method)
    assert response.status_code in (404, 405), response.status_code
    lines = "\n".join(r.getMessage() for r in caplog.records if r.name == "srcore.access")
    assert f"{method} /confirm/[redacted]?from=mail" in lines, lines
    assert token not in lines
