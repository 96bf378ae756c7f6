"""Fan-out: one outbox row becomes one delivery row per matching subscription.

A subscription matches an event when it is enabled, lists the event, is not limited to
another resource, held the event's scope when it subscribed, is in the event's audience
(judged from the owner and visibility recorded at emit time, never from today's rows), and
its owner is not suspended at meta (:mod:`.accounts`). A caller may add a veto,
*can_receive*.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import ColumnElement, Table, insert, literal, or_, select, update
from sqlalchemy.orm import Session

from srcore.auth.scopes import Scope, ScopeError, parse_scope, parse_scopes, satisfies
from srcore.db import utcnow
from srcore.webhooks.models import (
    Account,
    Delivery,
    DeliveryStatus,
    OutboxRow,
    Subscription,
    new_message_id,
)

if TYPE_CHECKING:
    from srcore.manifest import Audience, Manifest

__all__ = [
    "CanReceive",
    "audience_allows",
    "fan_out",
    "fan_out_batch",
    "matches",
    "required_scope",
]

#: ``can_receive(subscription, outbox_row)``: the service's last word on a match.
CanReceive = Callable[[Subscription, OutboxRow], bool]


def required_scope(manifest: Manifest, event: str) -> str:
    """The scope a subscriber needs for *event*: ``SERVICE/SCOPE:RO``; ValueError if undeclared."""
    declared = manifest.event(event)
    if declared is None:
        raise ValueError(f"event {event!r} is not declared by {manifest.id}")
    return f"{manifest.id}/{declared.scope}:RO"


class Emitted(Protocol):
    """What the audience rule reads of an event as emitted (an :class:`OutboxRow`)."""

    @property
    def owner_id(self) -> int | None: ...

    @property
    def visibility(self) -> str | None: ...


def audience_allows(audience: Audience, subscription: Subscription, outbox: Emitted) -> bool:
    """Whether *subscription* is in the *audience* of the event *outbox* recorded.

    Trusted (operator) subscriptions get every event they list, and they alone ``internal``
    ones; ``owner`` events reach the recorded owner's subscriptions, ``readers`` events
    also everyone when recorded ``public``, ``public`` events everyone. A service
    subscriber owns nothing: least data by default.
    """
    if subscription.trusted:
        return True
    if audience == "internal":
        return False
    if audience == "public" or (audience == "readers" and outbox.visibility == "public"):
        return True
    return subscription.owner_id is not None and subscription.owner_id == outbox.owner_id


def matches(
    subscription: Subscription, outbox: OutboxRow, scope: str, audience: Audience = "owner"
) -> bool:
    """Whether *subscription* should receive *outbox* (its owner's suspension apart)."""
    if subscription.resource is not None and subscription.resource != outbox.resource:
        return False
    fits = _fits(subscription, outbox.event, scope, {})
    return fits and audience_allows(audience, subscription, outbox)


def _candidates(
    session: Session, events: Iterable[str], resources: Iterable[str | None]
) -> list[Subscription]:
    """Enabled subscriptions that may want any of *events* about any of *resources*."""
    padded = literal(" ") + Subscription.events + literal(" ")  # || on every backend
    named = sorted({r for r in resources if r is not None})
    resource: ColumnElement[bool] = Subscription.resource.is_(None)
    if named:
        resource = or_(resource, Subscription.resource.in_(named))
    return list(
        session.scalars(
            select(Subscription)
            .where(
                Subscription.enabled.is_(True),
                or_(*(padded.contains(f" {e} ", autoescape=True) for e in sorted(set(events)))),
                resource,
            )
            .order_by(Subscription.id)
            .execution_options(populate_existing=True)
        )
    )


def fan_out(
    session: Session,
    outbox_id: int,
    *,
    can_receive: CanReceive | None = None,
    manifest: Manifest | None = None,
    now: datetime | None = None,
) -> list[int]:
    """:func:`fan_out_batch` of one row: its new delivery ids (idempotent; commits)."""
    return fan_out_batch(session, [outbox_id], can_receive=can_receive, manifest=manifest, now=now)


def fan_out_batch(
    session: Session,
    outbox_ids: Sequence[int],
    *,
    can_receive: CanReceive | None = None,
    manifest: Manifest | None = None,
    now: datetime | None = None,
    claim_first: int = 0,
    claimed_until: datetime | None = None,
    claimed_ids: list[int] | None = None,
    busy: Collection[int] = (),
    claim_per_subscription: int | None = None,
) -> list[int]:
    """Create the deliveries of the outbox rows *outbox_ids* not yet fanned out, in a
    handful of statements and one commit; returns the new delivery ids. *manifest*
    defaults to the current app's.

    Up to *claim_first* new deliveries (at most *claim_per_subscription* of one
    subscription's) are inserted claimed until *claimed_until*, their ids added to
    *claimed_ids*, for the caller to send at once; none of a subscription of *busy* or
    with a delivery still waiting for its first attempt (event order: see
    :func:`srcore.webhooks.claims.held_up`).
    """
    if manifest is None:
        from srcore.service import state

        manifest = state().manifest
    moment = now or utcnow()
    o = _outbox_table
    d = _delivery_table
    conn = session.connection()
    rows = conn.execute(
        select(
            o.c.id,
            o.c.event,
            o.c.resource,
            o.c.owner_id,
            o.c.visibility,
            o.c.payload,
            o.c.created,
        )
        .where(o.c.id.in_(sorted(set(outbox_ids))), o.c.fanned_out_at.is_(None))
        .order_by(o.c.id)
    ).all()
    if not rows:
        session.rollback()
        return []
    ids = [row.id for row in rows]
    scopes: dict[str, str | None] = {}
    audiences: dict[str, Audience] = {}
    for row in rows:
        if row.event not in scopes:
            declared = manifest.event(row.event)
            # No longer declared: nobody receives it.
            scopes[row.event] = required_scope(manifest, row.event) if declared else None
            audiences[row.event] = declared.audience if declared else "internal"
    wanted = [row for row in rows if scopes[row.event] is not None]
    new: list[dict[str, Any]] = []
    if wanted:
        existing = {
            (int(a), int(b))
            for a, b in conn.execute(
                select(d.c.outbox_id, d.c.subscription_id).where(d.c.outbox_id.in_(ids))
            )
        }
        subscriptions = _candidates(
            session, (row.event for row in wanted), (row.resource for row in wanted)
        )
        suspended = _suspended(session, subscriptions)
        waiting = _waiting(session, subscriptions) | set(busy) if claim_first else frozenset()
        # What depends on the subscription and the event only is judged once per batch.
        fits: dict[tuple[int, str], bool] = {}
        held: dict[int, frozenset[Scope] | None] = {}
        plain = [(s, s.id, s.owner_id, s.resource) for s in subscriptions]
        for row in wanted:
            event, scope, audience = row.event, scopes[row.event], audiences[row.event]
            assert scope is not None
            outbox = _outbox_of(row) if can_receive is not None else None
            for subscription, sid, owner_id, resource in plain:
                if (row.id, sid) in existing or owner_id in suspended:
                    continue
                if resource is not None and resource != row.resource:
                    continue
                fit = fits.get((sid, event))
                if fit is None:
                    fit = fits[sid, event] = _fits(subscription, event, scope, held)
                if not fit or not audience_allows(audience, subscription, row):
                    continue
                if can_receive and outbox and not can_receive(subscription, outbox):
                    continue
                new.append(
                    {
                        "subscription_id": subscription.id,
                        "outbox_id": row.id,
                        "message_id": new_message_id(),
                        "status": DeliveryStatus.pending.value,
                        "attempts": 0,
                        "next_attempt_at": moment,
                        "claimed_until": None,
                        "created": moment,
                    }
                )
    created: list[int] = []
    chosen: set[int] = set()
    if new:
        if claim_first:
            per: Counter[int] = Counter()
            claimed: list[dict[str, Any]] = []
            for entry in new:
                sid = entry["subscription_id"]
                if len(claimed) >= claim_first:
                    break
                if sid in waiting or per[sid] >= (claim_per_subscription or claim_first):
                    continue
                per[sid] += 1
                claimed.append(entry)
            chosen = {id(n) for n in claimed}
            for entry in claimed:
                entry["claimed_until"] = claimed_until
        # A plain executemany (pipelined, one prepared statement), then the new ids read
        # back by message id: cheaper than a multi-row INSERT .. RETURNING of them all.
        conn.execute(insert(d), new)
        made = {
            message_id: delivery_id
            for message_id, delivery_id in conn.execute(
                select(d.c.message_id, d.c.id).where(
                    d.c.outbox_id.in_(sorted({n["outbox_id"] for n in new}))
                )
            )
        }
        created = [int(made[n["message_id"]]) for n in new]
        if claimed_ids is not None:
            claimed_ids.extend(i for i, n in zip(created, new, strict=True) if id(n) in chosen)
    conn.execute(update(o).where(o.c.id.in_(ids)).values(fanned_out_at=moment, claimed_until=None))
    session.commit()
    return created


def _waiting(session: Session, subscriptions: Sequence[Subscription]) -> frozenset[int]:
    """Those of *subscriptions* with a delivery still waiting for its first attempt."""
    ids = sorted({s.id for s in subscriptions})
    if not ids:
        return frozenset()
    d = _delivery_table
    found = (
        session.connection()
        .execute(
            select(d.c.subscription_id)
            .where(
                d.c.subscription_id.in_(ids),
                d.c.status == DeliveryStatus.pending.value,
                d.c.attempts == 0,
            )
            .distinct()
        )
        .scalars()
    )
    return frozenset(int(i) for i in found)


def _suspended(session: Session, subscriptions: Sequence[Subscription]) -> frozenset[int]:
    """The owners of *subscriptions* whom meta has suspended (or deleted)."""
    owners = sorted({s.owner_id for s in subscriptions if s.owner_id is not None})
    if not owners:
        return frozenset()
    found = session.scalars(
        select(Account.user_id).where(Account.user_id.in_(owners), Account.suspended.is_(True))
    )
    return frozenset(found)


def _fits(
    subscription: Subscription, event: str, scope: str, held: dict[int, frozenset[Scope] | None]
) -> bool:
    """Whether *subscription* is enabled, lists *event* and held *scope* (its scopes
    parsed once per batch, in *held*)."""
    if not subscription.enabled or event not in subscription.events.split():
        return False
    if subscription.id not in held:
        try:
            held[subscription.id] = parse_scopes(subscription.scopes)
        except ScopeError:
            held[subscription.id] = None
    scopes = held[subscription.id]
    return scopes is not None and satisfies(scopes, parse_scope(scope))


def _outbox_of(row: Any) -> OutboxRow:
    """A transient :class:`OutboxRow` of a row read by :func:`fan_out_batch`."""
    return OutboxRow(
        id=row.id,
        event=row.event,
        resource=row.resource,
        owner_id=row.owner_id,
        visibility=row.visibility,
        payload=row.payload,
        created=row.created,
    )


_outbox_table = cast(Table, OutboxRow.__table__)
_delivery_table = cast(Table, Delivery.__table__)
