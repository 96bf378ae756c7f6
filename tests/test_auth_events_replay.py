"""``/_srcore/events`` applies each of meta's messages once: a message replayed within the
signature's time window (by whoever recorded it on the way) is acknowledged and ignored,
in one process and, with Redis, across every process of the service; with Redis, the
revocations one process receives reach the others too."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_meta import FakeMeta, build_service

from srcore.auth.revocation import RevocationUnavailable, state_of
from srcore.testing import create_user, require_or_skip

REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    if request.param == "redis":
        require_or_skip(_redis_up(), "Redis")
        return "revocation-pull-interval = 0s\nredis-url = " + REDIS_URL + "\n"
    return "revocation-pull-interval = 0s\n"


@pytest.fixture
def apps(tmp_path: Path, backend: str) -> Iterator[tuple[Any, Any, FakeMeta]]:
    """Two processes of one service (same database, same config), and meta."""
    fake = FakeMeta()
    first = build_service(tmp_path, fake, global_extra=backend)
    second = build_service(tmp_path, fake, global_extra=backend, another_process=True)
    yield first, second, fake
    for app in (first, second):
        state_of(app).stop()
        app.extensions["srcore"].db.dispose()


def _post(app: Any, message: tuple[dict[str, str], bytes]) -> Any:
    headers, body = message
    return app.test_client().post("/_srcore/events", data=body, headers=headers)


def _email(app: Any, user_id: int) -> str:
    st = app.extensions["srcore"]
    with st.db.transaction() as db:
        return str(db.get(st.user_model, user_id).email)


def test_a_replayed_profile_does_not_roll_a_newer_one_back(
    apps: tuple[Any, Any, FakeMeta], backend: str
) -> None:
    first, second, fake = apps
    create_user(first, "alice", id=41)
    old = fake.webhook("profile:updated", fake.add_user(41, "alice", email="old@example.org"))
    new = fake.webhook("profile:updated", fake.add_user(41, "alice", email="new@example.org"))
    assert _post(first, old).status_code == 204
    assert _post(first, new).status_code == 204
    assert _email(first, 41) == "new@example.org"
    # Replayed to the same process: acknowledged (meta stops retrying) and ignored.
    assert _post(first, old).status_code == 204
    assert _email(first, 41) == "new@example.org"
    if "redis-url" in backend:
        # Another process of the service shares what the first one has seen.
        assert _post(second, old).status_code == 204
        assert _email(first, 41) == "new@example.org"


def test_a_message_that_failed_can_be_retried(apps: tuple[Any, Any, FakeMeta]) -> None:
    first, _, fake = apps
    store = first.extensions["srcore"].identity.store
    real_apply = store.apply
    calls: list[int] = []

    def flaky(events: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RevocationUnavailable("the revocation list is down")
        real_apply(events)

    store.apply = flaky
    message = fake.push([{"seq": 3, "kind": "token", "subject": "j3", "expires_at": None}])
    assert _post(first, message).status_code == 503
    assert _post(first, message).status_code == 204
    assert store.last_seq == 3
    assert len(calls) == 2


def test_a_forged_id_is_not_remembered(apps: tuple[Any, Any, FakeMeta]) -> None:
    """A message whose signature fails must not use up the id of a genuine one."""
    first, _, fake = apps
    create_user(first, "bob", id=42)
    headers, body = fake.webhook("profile:updated", fake.add_user(42, "bob", email="b@x.org"))
    forged = dict(headers, **{"webhook-signature": "v1,AAAA"})
    assert _post(first, (forged, body)).status_code == 401
    assert _post(first, (headers, body)).status_code == 204
    assert _email(first, 42) == "b@x.org"


def test_a_push_to_one_process_reaches_the_others(
    apps: tuple[Any, Any, FakeMeta], backend: str
) -> None:
    first, second, fake = apps
    fanout = state_of(second).fanout
    second.test_client().get("/")  # its first request starts its threads
    if "redis-url" in backend:
        assert fanout is not None and fanout.subscribed.wait(5)
    else:
        assert fanout is None
    message = fake.push([{"seq": 5, "kind": "token", "subject": "j5", "expires_at": None}])
    assert _post(first, message).status_code == 204
    assert first.extensions["srcore"].identity.store.last_seq == 5
    store = second.extensions["srcore"].identity.store
    deadline = time.monotonic() + 5
    while store.last_seq < 5 and time.monotonic() < deadline and fanout is not None:
        time.sleep(0.01)
    # Without Redis only the other process's pull would bring it (off here).
    assert store.last_seq == (5 if fanout is not None else 0)
