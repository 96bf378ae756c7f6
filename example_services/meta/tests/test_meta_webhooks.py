"""Who receives meta's events: a user's webhooks get that user's profile changes and
nobody else's; network-internal events (revocations, suspensions) cannot be subscribed to
by users at all, through the API or the pages."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from srcore.manifest import load_manifest
from srcore.testing import deliver_pending, log_in_client
from srcore.webhooks.models import Subscription

HOOK = "https://hooks.example.org/meta"
MANIFEST = load_manifest("meta")
EVENTS = [event.name for event in MANIFEST.events]
USER_EVENTS = [event.name for event in MANIFEST.events if event.audience != "internal"]
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def bearer(app: Any, user: Any, scope: str = "meta/profile:RW") -> dict[str, str]:
    """A personal access token of *user*'s, made as the /security page makes them."""
    from meta.models import User
    from meta.oauth.pats import create_token

    from srcore.db import session

    with app.test_request_context():
        _row, token = create_token(session.get(User, user.id), name="hooks", scope=scope, days=1)
        session.commit()
    return {"Authorization": f"Bearer {token}"}


def subscribe(client: Any, headers: dict[str, str], events: list[str]) -> Any:
    return client.post("/api/webhooks", json={"url": HOOK, "events": events}, headers=headers)


def _hook(name: str) -> Callable[[Any, Any], None]:
    def trigger(app: Any, user: Any) -> None:
        from meta import oauth
        from meta.models import User

        with app.app_context(), app.extensions["srcore"].db.transaction() as session:
            getattr(oauth, name)(session.get(User, user.id))

    return trigger


def _audit_entry(app: Any, user: Any) -> None:
    """An audit entry about alice, exported as if a service were named in
    ``[meta] audit-subscribers`` (the test network has none)."""
    from meta import audit
    from meta.oauth.network import Network

    with app.test_request_context(), app.extensions["srcore"].db.transaction() as session:
        entry = audit.record(session, audit.Kind.login, user.id)
        data = audit.entry_json(entry)
        Network.of(session).emit(session, audit.AUDIT_EVENT, data, owner_id=user.id)


#: How each event of meta's happens to alice. A new event in service.yaml fails the test
#: below until it gets a trigger here (None: meta never emits it itself).
TRIGGERS: dict[str, Callable[[Any, Any], None] | None] = {
    "profile:updated": _hook("on_profile_change"),
    "revocation:issued": _hook("on_logout"),
    "audit:recorded": _audit_entry,
}


@pytest.mark.parametrize("event", EVENTS)
def test_no_other_user_receives_any_event_about_alice(
    app: Any, client: Any, accounts: Any, event: str
) -> None:
    assert event in TRIGGERS, f"{event}: add how it happens to TRIGGERS"
    alice, bob = accounts.make("alice"), accounts.make("bob")
    alices = subscribe(client, bearer(app, alice), USER_EVENTS).get_json()["id"]
    bobs = subscribe(client, bearer(app, bob), [event])
    internal = MANIFEST.event(event).audience == "internal"  # type: ignore[union-attr]
    if internal:
        assert bobs.status_code == 400, bobs.get_data(as_text=True)
        assert "internal" in bobs.get_json()["errors"][0]["reason"]
    else:
        assert bobs.status_code == 201, bobs.get_data(as_text=True)
    trigger = TRIGGERS[event]
    if trigger is not None:
        trigger(app, alice)
    got = deliver_pending(app)
    if not internal:
        assert event in got.get(alices, []), got
    assert set(got) <= {alices}, got
    assert all(e in USER_EVENTS for e in got.get(alices, [])), got


@pytest.mark.parametrize("event", [e.name for e in MANIFEST.events if e.audience == "internal"])
def test_internal_events_cannot_be_subscribed_to_through_the_pages(
    app: Any, accounts: Any, event: str
) -> None:
    alice = accounts.make("alice")
    browser = log_in_client(app.test_client(), alice)
    form = browser.get("/webhooks/new")
    assert form.status_code == 200
    page = form.get_data(as_text=True)
    assert f'value="{event}"' not in page
    token = _CSRF.search(page)
    assert token is not None
    response = browser.post(
        "/webhooks/new", data={"csrf_token": token.group(1), "url": HOOK, "events": event}
    )
    assert response.status_code == 400
    assert "internal to the network" in response.get_data(as_text=True)
    with app.extensions["srcore"].db.transaction() as session:
        assert session.scalar(select(func.count()).select_from(Subscription)) == 0


def test_a_password_reset_disables_the_accounts_webhooks_and_tells_the_owner(
    app: Any, client: Any, accounts: Any, smtp_sink: Any
) -> None:
    """Someone registered with alice's address and made a webhook; alice takes the account
    back with a password reset: the webhook stops, and she is told."""
    from datetime import timedelta

    from meta import logic
    from meta.models import User

    from srcore.db import utcnow

    alice, bob = accounts.make("alice"), accounts.make("bob")
    planted = subscribe(client, bearer(app, alice), USER_EVENTS).get_json()["id"]
    bobs = subscribe(client, bearer(app, bob), USER_EVENTS).get_json()["id"]
    with app.extensions["srcore"].db.transaction() as session:
        # made a while before the reset (the attacker's head start)
        session.get(Subscription, planted).created = utcnow() - timedelta(days=1)
        session.get(Subscription, planted).confirmed_at = None
    with app.app_context(), app.extensions["srcore"].db.transaction() as session:
        user = session.get(User, alice.id)
        logic.set_password(session, user, app.extensions["meta"].passwords.hash("n3w-Secret!x"))
    with app.extensions["srcore"].db.transaction() as session:
        sub = session.get(Subscription, planted)
        assert not sub.enabled and "password" in (sub.disabled_reason or "")
        assert session.get(Subscription, bobs).enabled
    told = smtp_sink.to("alice@example.org")
    assert any("webhook" in m["Subject"].lower() for m in told), [m["Subject"] for m in told]
    _hook("on_profile_change")(app, alice)
    assert planted not in deliver_pending(app)
