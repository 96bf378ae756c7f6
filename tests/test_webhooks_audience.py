"""Who receives an event: its declared audience, judged from the owner and visibility the
outbox row recorded when it was emitted (the fan-out never reads today's rows for it)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

import srcore.db
from srcore.manifest import Audience, parse_manifest
from srcore.signatures import generate_secret
from srcore.webhooks import emit
from srcore.webhooks.fanout import audience_allows, fan_out
from srcore.webhooks.models import Delivery, OutboxRow, Subscription
from srcore.webhooks.outbox import insert_event

ALICE, BOB = 1, 2


def manifest(audience: Audience) -> Any:
    return parse_manifest(
        {
            "id": "sample",
            "scopes": [{"name": "things", "description": "Things"}],
            "events": [{"name": "thing:created", "scope": "things", "audience": audience}],
        },
        package="sample_service",
    )


pytestmark = pytest.mark.usefixtures("clean_webhooks")


def sub(owner_id: int | None, *, trusted: bool = False, client: str | None = None) -> Subscription:
    return Subscription(
        owner_id=owner_id,
        owner_client=client,
        url="https://hooks.example.org/",
        events="thing:created",
        scopes="sample/things:RO",
        secret="",
        enabled=True,
        trusted=trusted,
    )


@pytest.mark.parametrize(
    ("audience", "visibility", "receivers"),
    [
        ("owner", "public", {"alice", "trusted"}),
        ("owner", None, {"alice", "trusted"}),
        ("readers", "public", {"alice", "bob", "service", "trusted"}),
        ("readers", "unlisted", {"alice", "trusted"}),
        ("readers", "private", {"alice", "trusted"}),
        ("readers", None, {"alice", "trusted"}),
        ("public", None, {"alice", "bob", "service", "trusted"}),
        ("internal", "public", {"trusted"}),
    ],
)
def test_audience_allows(audience: Audience, visibility: str | None, receivers: set[str]) -> None:
    row = OutboxRow(event="thing:created", owner_id=ALICE, visibility=visibility, payload="{}")
    subscribers = {
        "alice": sub(ALICE),
        "bob": sub(BOB),
        "service": sub(None, client="builds"),
        "trusted": sub(None, client="todo", trusted=True),
    }
    allowed = {name for name, s in subscribers.items() if audience_allows(audience, s, row)}
    assert allowed == receivers


def test_an_event_recorded_without_an_owner_reaches_no_owner() -> None:
    row = OutboxRow(event="thing:created", owner_id=None, visibility=None, payload="{}")
    assert not audience_allows("owner", sub(ALICE), row)
    assert not audience_allows("readers", sub(ALICE), row)


@pytest.mark.parametrize("audience", ["owner", "readers"])
def test_emitting_an_owners_event_needs_the_owner(app: Any, audience: Audience) -> None:
    st = app.extensions["srcore"]
    original = st.manifest
    st.manifest = replace(manifest(audience), package=original.package)
    try:
        with app.app_context(), pytest.raises(ValueError, match="owner_id"):
            emit("thing:created", {"id": 1})
        with app.app_context():
            emit("thing:created", {"id": 1}, owner_id=ALICE, visibility="unlisted")
            srcore.db.session.commit()
    finally:
        st.manifest = original


def test_the_fan_out_uses_what_the_event_recorded(app: Any, db: Any) -> None:
    alices, bobs = sub(ALICE), sub(BOB)
    for s in (alices, bobs):
        s.secret = generate_secret()
        db.add(s)
    db.commit()
    unlisted = insert_event(db, "thing:created", {"id": 1}, owner_id=ALICE, visibility="unlisted")
    public = insert_event(db, "thing:created", {"id": 2}, owner_id=ALICE, visibility="public")
    db.commit()
    fan_out(db, [unlisted], manifest=manifest("readers"))
    fan_out(db, [public], manifest=manifest("readers"))
    got = sorted(tuple(r) for r in db.execute(select(Delivery.outbox_id, Delivery.subscription_id)))
    assert got == sorted([(unlisted, alices.id), (public, alices.id), (public, bobs.id)])
