"""Limits a token or a client cannot talk its way around: a token made through the API
expires no later than the token that made it, and every endpoint where a client
authenticates counts failures against the same throttle as the token endpoint."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from oauth_helpers import TODO_ID, TODO_SECRET, oauth_app

__all__ = ["oauth_app"]  # fixture used by this module


def _pat(app: Any, user_id: int, scope: str, days: int) -> str:
    from meta.models import User
    from meta.oauth.pats import create_token

    with app.test_request_context("/api/tokens", method="POST"):
        from srcore.db import session

        _row, token = create_token(session.get(User, user_id), name="boot", scope=scope, days=days)
        session.commit()
        return token


def _exp(token: str) -> int:
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return int(claims["exp"])


def test_a_token_made_through_the_api_never_outlives_its_maker(app: Any, accounts: Any) -> None:
    alice = accounts.make("alice")
    boot = _pat(app, alice.id, "meta/tokens:RW meta/profile:RO", days=1)
    client = app.test_client()
    for asked in (None, 30, 3650):
        made = client.post(
            "/api/tokens",
            json={"name": "child", "scopes": ["meta/profile:RO"], "expires_in_days": asked},
            headers={"Authorization": f"Bearer {boot}"},
        )
        assert made.status_code == 201, made.get_json()
        body = made.get_json()
        assert _exp(body["token"]) <= _exp(boot), asked
        assert body["expires"] is not None


def test_a_capped_token_does_not_outlive_its_maker_when_a_second_turns(
    app: Any, accounts: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap and the new token's iat come from one reading of the clock: read twice, a
    second turning in between gave the new token one second more than its maker."""
    import time
    import types

    import meta.oauth.pats
    import meta.oauth.server

    alice = accounts.make("alice")
    boot = _pat(app, alice.id, "meta/tokens:RW meta/profile:RO", days=1)
    start = time.time()
    readings = iter(int(start) + 0.7 + 0.5 * step for step in range(1000))
    clock = types.SimpleNamespace(time=lambda: next(readings))  # each reading 0.5 s later
    monkeypatch.setattr(meta.oauth.pats, "time", clock)
    monkeypatch.setattr(meta.oauth.server, "time", clock)
    made = app.test_client().post(
        "/api/tokens",
        json={"name": "child", "scopes": ["meta/profile:RO"], "expires_in_days": 3650},
        headers={"Authorization": f"Bearer {boot}"},
    )
    assert made.status_code == 201, made.get_json()
    assert _exp(made.get_json()["token"]) <= _exp(boot)


def test_repeated_scopes_in_a_form_are_all_checked(app: Any, accounts: Any) -> None:
    alice = accounts.make("alice")
    boot = _pat(app, alice.id, "meta/tokens:RW", days=30)
    wider = app.test_client().post(
        "/api/tokens",
        data={"name": "child", "scopes": ["meta/tokens:RW", "meta/profile:RW"]},
        headers={"Authorization": f"Bearer {boot}"},
    )
    assert wider.status_code == 400, wider.get_json()


@pytest.mark.parametrize(
    ("method", "path", "data"),
    [
        ("POST", "/oauth/introspect", {"token": "x"}),
        ("POST", "/oauth/revoke", {"token": "x"}),
        ("GET", "/oauth/revocations", None),
    ],
)
def test_client_authentication_is_throttled_at_every_endpoint(
    oauth_app: Any, method: str, path: str, data: dict[str, str] | None
) -> None:
    client = oauth_app.test_client()
    stranger = {"REMOTE_ADDR": "192.0.2.7"}
    statuses = []
    for attempt in range(25):
        wrong = base64.b64encode(f"{TODO_ID}:guess{attempt}".encode()).decode()
        answer = client.open(
            path,
            method=method,
            data=data,
            headers={"Authorization": f"Basic {wrong}"},
            environ_base=stranger,
        )
        statuses.append(answer.status_code)
    assert statuses[0] == 401, statuses
    assert statuses[-1] == 429, statuses
    # The real client, from its own address, is not locked out by the stranger.
    real = base64.b64encode(f"{TODO_ID}:{TODO_SECRET}".encode()).decode()
    answer = client.open(
        path,
        method=method,
        data=data,
        headers={"Authorization": f"Basic {real}"},
        environ_base={"REMOTE_ADDR": "192.0.2.8"},
    )
    assert answer.status_code == 200, answer.get_data(as_text=True)


def test_failed_pulls_count_per_client_only(oauth_app: Any) -> None:
    """Services pull unattended every few seconds: several with a wrong secret on one host
    lock themselves out, never the address the other clients there use."""
    client = oauth_app.test_client()
    host = {"REMOTE_ADDR": "192.0.2.9"}
    for service in range(5):
        for attempt in range(10):
            wrong = base64.b64encode(f"service{service}:guess{attempt}".encode()).decode()
            client.get(
                "/oauth/revocations", headers={"Authorization": f"Basic {wrong}"}, environ_base=host
            )
    other = base64.b64encode(b"someone:else").decode()
    next_door = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": f"Basic {other}"},
        environ_base=host,
    )
    assert next_door.status_code == 401, next_door.get_json()
