"""A deleted tracker's id never goes to a new tracker, on SQLite too: webhook
subscriptions that follow ``tracker:<id>`` must not start following someone else's."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select
from todo.events import resource_of
from todo.models import Tracker

from srcore.webhooks.fanout import fan_out
from srcore.webhooks.models import Delivery, Subscription
from srcore.webhooks.outbox import insert_event


def test_a_deleted_trackers_id_is_never_given_again(app: Any, make: Any, user: Any) -> None:
    first = make.tracker(user, "first")
    second = make.tracker(user, "second")
    with make.db.transaction() as session:
        session.execute(delete(Tracker).where(Tracker.id == second.id))
    third = make.tracker(user, "third")
    assert third.id not in (first.id, second.id) and third.id > second.id
    # A subscription that followed the deleted tracker does not follow the new one.
    with make.db.transaction() as session:
        follower = Subscription(
            url="https://hooks.invalid/x",
            events="ticket:created",
            resource=resource_of(second.id),
            scopes="todo/tickets:RO",
            secret="x",
            owner_id=user.id,
            enabled=True,
        )
        session.add(follower)
        followed, other = (
            insert_event(session, "ticket:created", {}, resource=resource_of(t), owner_id=user.id)
            for t in (second, third)
        )
        session.flush()
        follower_id = follower.id
    with make.db.session() as session:
        fan_out(session, [followed, other], manifest=app.extensions["srcore"].manifest)
        mine = Delivery.subscription_id == follower_id
        assert list(session.scalars(select(Delivery.outbox_id).where(mine))) == [followed]
