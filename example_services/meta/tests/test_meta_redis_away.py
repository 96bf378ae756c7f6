"""meta with ``redis-url`` set while Redis cannot be reached: logins, failed logins and
rate-limited forms are answered as without Redis (each process counting on its own), not
with an error page; the lockout still holds."""

from __future__ import annotations

import socket
import time
from typing import Any

import pytest

from srcore.config import env_name


@pytest.fixture
def _redis_away(monkeypatch: pytest.MonkeyPatch) -> None:
    """``[global] redis-url`` naming a port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(env_name("global", "redis-url"), f"redis://127.0.0.1:{port}/0")


@pytest.fixture
def app(_redis_away: None, app: Any) -> Any:
    return app


def test_logins_and_the_lockout_work_while_redis_is_away(
    app: Any, accounts: Any, csrf: Any, password: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from meta.settings import meta_settings

    assert app.extensions["srcore"].config.global_["redis-url"].startswith("redis://127.0.0.1:")
    accounts.make("alice")
    accounts.make("bob")
    client = app.test_client()
    done = csrf.post(client, "/login", {"login": "alice", "password": password}, page="/login")
    assert done.status_code == 302 and done.headers["Location"] == "/profile"

    # Failed logins are still counted (in this process) and lock the account.
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    stranger = app.test_client()
    most = meta_settings(app).login_max_failures
    for attempt in range(most):
        wrong = csrf.post(
            stranger, "/login", {"login": "bob", "password": "wrong password!"}, page="/login"
        )
        assert wrong.status_code == 400, attempt
        clock[0] += 100  # past every growing delay, well within the lockout
    locked = csrf.post(stranger, "/login", {"login": "bob", "password": password}, page="/login")
    assert locked.status_code == 429 and "Too many failed attempts" in locked.get_data(as_text=True)


def test_rate_limited_forms_are_served_while_redis_is_away(app: Any, csrf: Any) -> None:
    client = app.test_client()
    for _ in range(2):
        sent = csrf.post(client, "/forgot", {"email": "nobody@example.org"}, page="/forgot")
        assert sent.status_code == 200, sent.get_data(as_text=True)[:300]
