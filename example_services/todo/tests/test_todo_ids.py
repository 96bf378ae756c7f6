"""A deleted tracker's id never goes to a new tracker, on SQLite too: webhook
subscriptions that follow ``tracker:<id>`` must not start following someone else's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete
from todo.events import resource_of
from todo.models import Tracker

from srcore.webhooks.fanout import matches
from srcore.webhooks.models import OutboxRow, Subscription


def test_a_deleted_trackers_id_is_never_given_again(app: Any, make: Any, user: Any) -> None:
    first = make.tracker(user, "first")
    second = make.tracker(user, "second")
    with make.db.transaction() as session:
        session.execute(delete(Tracker).where(Tracker.id == second.id))
    third = make.tracker(user, "third")
    assert third.id not in (first.id, second.id) and third.id > second.id
    # A subscription that followed the deleted tracker does not follow the new one.
    follower = Subscription(
        url="https://hooks.invalid/x",
        events="ticket:created",
        resource=resource_of(second.id),
        scopes="todo/tickets:RO",
        secret="x",
        owner_id=user.id,
        enabled=True,
    )
    followed = OutboxRow(event="ticket:created", resource=resource_of(second), owner_id=user.id)
    assert matches(follower, followed, "todo/tickets:RO")
    event = OutboxRow(event="ticket:created", resource=resource_of(third), owner_id=user.id)
    assert not matches(follower, event, "todo/tickets:RO")
