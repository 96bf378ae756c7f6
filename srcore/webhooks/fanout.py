"""Fan-out: one outbox row becomes one delivery row per matching subscription.

A subscription matches an event when it is enabled, lists the event, is not limited to
another resource, held the scope the event is declared with when it subscribed, and the
service's own ``can_receive`` hook (``create_app(webhook_filter=...)``) agrees, e.g. todo
checking that the owner can still see the tracker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import literal, or_, select
from sqlalchemy.orm import Session

from srcore.auth.scopes import ScopeError, parse_scope, parse_scopes, satisfies
from srcore.db import utcnow
from srcore.webhooks.models import Delivery, OutboxRow, Subscription, new_message_id

if TYPE_CHECKING:
    from srcore.manifest import Manifest

__all__ = ["CanReceive", "fan_out", "matches", "required_scope"]

#: ``can_receive(subscription, outbox_row)``: the service's last word on a match.
CanReceive = Callable[[Subscription, OutboxRow], bool]


def required_scope(manifest: Manifest, event: str) -> str:
    """The scope a subscriber needs for *event*: ``SERVICE/SCOPE:RO``; ValueError if undeclared."""
    declared = manifest.event(event)
    if declared is None:
        raise ValueError(f"event {event!r} is not declared by {manifest.id}")
    return f"{manifest.id}/{declared.scope}:RO"


def matches(subscription: Subscription, outbox: OutboxRow, scope: str) -> bool:
    """Whether *subscription* should receive *outbox*, apart from the service's hook."""
    if not subscription.enabled or outbox.event not in subscription.event_names:
        return False
    if subscription.resource is not None and subscription.resource != outbox.resource:
        return False
    try:
        held = parse_scopes(subscription.scopes)
    except ScopeError:
        return False
    return satisfies(held, parse_scope(scope))


def _candidates(session: Session, outbox: OutboxRow) -> Iterable[Subscription]:
    padded = literal(" ") + Subscription.events + literal(" ")  # || on every backend
    return session.scalars(
        select(Subscription)
        .where(
            Subscription.enabled.is_(True),
            padded.contains(f" {outbox.event} ", autoescape=True),
            or_(Subscription.resource.is_(None), Subscription.resource == outbox.resource),
        )
        .order_by(Subscription.id)
    )


def fan_out(
    session: Session,
    outbox_id: int,
    *,
    can_receive: CanReceive | None = None,
    manifest: Manifest | None = None,
    now: datetime | None = None,
) -> list[int]:
    """Create the deliveries of outbox row *outbox_id*; returns the new delivery ids.

    Idempotent: a subscription that already has a delivery of this row gets no second one,
    and a row already fanned out gets nothing new. Marks the row fanned out and commits.
    *manifest* defaults to the current app's.
    """
    if manifest is None:
        from srcore.app import state

        manifest = state().manifest
    moment = now or utcnow()
    outbox = session.get(OutboxRow, outbox_id)
    if outbox is None or outbox.fanned_out_at is not None:
        session.rollback()
        return []
    try:
        scope = required_scope(manifest, outbox.event)
    except ValueError:
        scope = None  # no longer declared: nobody receives it
    existing = set(
        session.scalars(select(Delivery.subscription_id).where(Delivery.outbox_id == outbox_id))
    )
    new: list[Delivery] = []
    if scope is not None:
        for subscription in _candidates(session, outbox):
            if subscription.id in existing or not matches(subscription, outbox, scope):
                continue
            if can_receive is not None and not can_receive(subscription, outbox):
                continue
            new.append(
                Delivery(
                    subscription_id=subscription.id,
                    outbox_id=outbox.id,
                    message_id=new_message_id(),
                    next_attempt_at=moment,
                    created=moment,
                )
            )
    session.add_all(new)
    outbox.fanned_out_at = moment
    outbox.claimed_until = None
    session.flush()
    ids = [d.id for d in new]
    session.commit()
    return ids
