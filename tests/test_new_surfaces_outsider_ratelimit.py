"""Write rate limits (srcore.ratelimit) seen from outside: whose count a request lands on
when its credentials are stale, odd or someone else's."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore.auth.revocation import RevocationEvent
from tests.fake_meta import FakeMeta, build_service
from tests.test_auth_oauth_client import at_meta, start_login


@pytest.fixture
def fake() -> FakeMeta:
    meta = FakeMeta()
    meta.add_user(42, "alice")
    meta.logged_in = 42
    return meta


@pytest.fixture
def service(tmp_path: Path, fake: FakeMeta) -> Iterator[Any]:
    app = build_service(tmp_path, fake, service_extra="write-rate-limit = 3/hour\n")
    app.config["WTF_CSRF_ENABLED"] = False
    yield app
    app.extensions["srcore"].db.dispose()


def log_in(service: Any, fake: FakeMeta, monkeypatch: pytest.MonkeyPatch, iat: int) -> Any:
    """A browser logged in by meta, with meta's token issued at *iat*."""
    issue = fake.token
    monkeypatch.setattr(fake, "token", lambda **kwargs: issue(**{**kwargs, "iat": iat}))
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    assert client.get("/private").status_code == 200
    return client


def test_a_session_meta_ended_does_not_spend_its_user_s_writes(
    service: Any, fake: FakeMeta, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of alice's cookie from before she logged out everywhere is no longer alice:
    its writes are counted by its address, not against the session she has now."""
    now = int(time.time())
    stale = log_in(service, fake, monkeypatch, now - 100)
    copy = stale.get_cookie(service.config["SESSION_COOKIE_NAME"])
    store = service.extensions["srcore"].identity.store
    store.apply([RevocationEvent(1, "user", "42", now - 50)])
    fresh = log_in(service, fake, monkeypatch, now)
    # meta's logout ended that session: its page sends the copy to log in again.
    check = service.test_client()
    check.set_cookie(copy.key, copy.value)
    assert check.get("/private").status_code == 302
    # The stale cookie writes from another address until its own count is spent.
    other = {"REMOTE_ADDR": "192.0.2.7"}
    answers = [stale.post("/form", environ_base=other).status_code for _ in range(4)]
    assert answers == [200, 200, 200, 429]
    assert fresh.post("/form").status_code == 200
