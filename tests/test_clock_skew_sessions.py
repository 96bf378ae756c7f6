"""A service's web session against meta's logouts when the two hosts' clocks disagree.

A "log out everywhere" at meta ends every session that started before it; its cut-off is
meta's time. The session's start is meta's time too (the ``iat`` of the access token meta
handed over at login), so a service whose clock runs ahead keeps no session past a
logout, and one whose clock runs behind ends no session that started after it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore.auth.revocation import RevocationEvent
from tests.fake_meta import FakeMeta, build_service
from tests.test_auth_oauth_client import at_meta, start_login

SKEW = 120  # seconds


@pytest.fixture
def fake() -> FakeMeta:
    meta = FakeMeta()
    meta.add_user(42, "alice")
    meta.logged_in = 42
    return meta


@pytest.fixture
def service(tmp_path: Path, fake: FakeMeta) -> Iterator[Any]:
    app = build_service(tmp_path, fake)
    yield app
    app.extensions["srcore"].db.dispose()


def meta_clock(fake: FakeMeta, monkeypatch: pytest.MonkeyPatch, offset: int) -> int:
    """Make *fake* meta's clock *offset* seconds from this host's; return meta's now."""
    issue = fake.token
    now = int(time.time()) + offset

    def token(**kwargs: Any) -> str:
        return issue(**{**kwargs, "iat": now})

    monkeypatch.setattr(fake, "token", token)
    return now


def test_a_service_ahead_keeps_no_session_past_a_later_logout(
    service: Any, fake: FakeMeta, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta_now = meta_clock(fake, monkeypatch, -SKEW)
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    assert client.get("/private").status_code == 200
    store = service.extensions["srcore"].identity.store
    store.apply([RevocationEvent(1, "user", "42", meta_now + 30)])  # logout, 30 s later
    assert client.get("/private").status_code == 302


def test_a_service_behind_keeps_a_session_started_after_a_logout(
    service: Any, fake: FakeMeta, monkeypatch: pytest.MonkeyPatch
) -> None:
    meta_now = meta_clock(fake, monkeypatch, SKEW)
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    store = service.extensions["srcore"].identity.store
    # The logout came 30 s before the login, but its event arrives after it.
    store.apply([RevocationEvent(1, "user", "42", meta_now - 30)])
    assert client.get("/private").status_code == 200


@pytest.mark.parametrize("iat", [None, "soon", True, -5, 2**63])
def test_a_token_without_a_usable_time_falls_back_to_this_host_s_clock(
    service: Any, fake: FakeMeta, monkeypatch: pytest.MonkeyPatch, iat: Any
) -> None:
    issue = fake.token
    monkeypatch.setattr(fake, "token", lambda **kwargs: issue(**{**kwargs, "iat": iat}))
    client = service.test_client()
    client.get(at_meta(fake, start_login(client)))
    assert client.get("/private").status_code == 200
    store = service.extensions["srcore"].identity.store
    store.apply([RevocationEvent(1, "user", "42", int(time.time()) + 5)])
    assert client.get("/private").status_code == 302
