"""Who receives paste's events, as the worker fans them out: every declared event of an
unlisted paste reaches its owner's webhooks and nobody else's; a public paste's reach
every subscriber."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from srcore.manifest import load_manifest
from srcore.testing import create_user, deliver_pending, log_in_client

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

HOOK = "https://hooks.example.org/paste"
EVENTS = [event.name for event in load_manifest("paste").events]


@pytest.fixture
def auth(make_token: Any, user: Any) -> Any:
    def headers(scopes: str = "paste/pastes:RW", who: Any = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {make_token(scopes, user=who or user)}"}

    return headers


def subscribe(client: Any, headers: dict[str, str], events: list[str]) -> int:
    response = client.post("/api/webhooks", json={"url": HOOK, "events": events}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    sub_id: int = response.get_json()["id"]
    return sub_id


def _paste(client: Any, h: dict[str, str], visibility: str = "unlisted") -> str:
    response = client.post(
        "/api/pastes", json={"text": "my secret", "visibility": visibility}, headers=h
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    short_id: str = response.get_json()["id"]
    return short_id


def _on_its_page(client: Any, h: dict[str, str], user: Any, action: str, **form: str) -> None:
    """Alice makes an unlisted paste, then *action*s it through its page."""
    short_id = _paste(client, h)
    alice = log_in_client(client.application.test_client(), user)
    path = f"/p/{short_id}/{action}"
    match = _CSRF.search(alice.get(path).get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    response = alice.post(path, data={**form, "csrf_token": match.group(1)})
    assert response.status_code == 302, response.get_data(as_text=True)


#: How alice makes each event happen about an unlisted paste. A new event in service.yaml
#: fails the test below until it gets a trigger here.
TRIGGERS: dict[str, Callable[[Any, dict[str, str], Any], object]] = {
    "paste:created": lambda client, h, user: _paste(client, h),
    "paste:updated": lambda client, h, user: _on_its_page(
        client, h, user, "edit", text="still secret", visibility="unlisted"
    ),
    "paste:deleted": lambda client, h, user: _on_its_page(client, h, user, "delete"),
}


@pytest.mark.parametrize("event", EVENTS)
def test_an_unlisted_pastes_events_reach_its_owner_only(
    app: Any, client: Any, auth: Any, user: Any, event: str
) -> None:
    assert event in TRIGGERS, f"{event}: add how it happens to TRIGGERS"
    bob = create_user(app, "bob")
    alices = subscribe(client, auth(), EVENTS)
    bobs = subscribe(client, auth(who=bob), [event])
    TRIGGERS[event](client, auth(), user)
    got = deliver_pending(app)
    assert event in got.get(alices, []), got
    assert bobs not in got, got


def test_a_public_pastes_event_reaches_every_subscriber(
    app: Any, client: Any, auth: Any, user: Any
) -> None:
    bob = create_user(app, "bob")
    bobs = subscribe(client, auth(who=bob), ["paste:created"])
    _paste(client, auth(), visibility="public")
    assert deliver_pending(app) == {bobs: ["paste:created"]}
