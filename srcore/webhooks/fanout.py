"""Fan-out: an outbox row becomes a delivery per subscription that is enabled, lists the
event, is not limited to another resource, held the event's scope when it subscribed, is
in the event's audience, and whose owner is not suspended at meta (:mod:`.accounts`)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Table, literal, or_, select, update
from sqlalchemy.orm import Session

from srcore.auth.scopes import Access, Scope, ScopeError, parse_scopes, satisfies
from srcore.db import utcnow
from srcore.sqlrows import insert_rows
from srcore.webhooks.models import Account, Delivery, OutboxRow, Subscription, new_message_id

if TYPE_CHECKING:
    from srcore.manifest import Audience, Event, Manifest

__all__ = ["audience_allows", "event_scope", "fan_out"]


def event_scope(manifest: Manifest, event: Event, access: Access = "RO") -> Scope:
    """The scope receiving *event* needs (``RO``), or managing subscriptions to it (``RW``)."""
    return Scope(manifest.id, event.scope, access)


def _to_all(audience: Audience, outbox: Any) -> bool:
    """Whether the event *outbox* recorded goes to every subscriber holding its scope."""
    return audience == "public" or (audience == "readers" and outbox.visibility == "public")


def audience_allows(audience: Audience, subscription: Subscription, outbox: Any) -> bool:
    """Whether *subscription* is in the *audience* of the event *outbox* recorded: trusted
    (operator) subscriptions get every event they list, and they alone ``internal`` ones;
    any gets those reaching all (:func:`_to_all`), the recorded owner's subscriptions the
    rest (a service subscriber owns nothing)."""
    owner = subscription.owner_id
    mine = audience != "internal" and owner is not None and owner == outbox.owner_id
    return subscription.trusted or _to_all(audience, outbox) or mine


def _candidates(session: Session, rows: list[Any], events: dict[str, Event]) -> list[Subscription]:
    """Enabled subscriptions that may want an event of *rows*, their owners not suspended:
    unless one reaches all, only trusted ones and those of the rows' owners, found by index."""
    padded = literal(" ") + Subscription.events + literal(" ")  # || on every backend
    named = sorted({row.resource for row in rows if row.resource is not None})
    owner = Account.user_id == Subscription.owner_id
    query = select(Subscription).where(
        Subscription.enabled.is_(True),
        or_(*(padded.contains(f" {e} ", autoescape=True) for e in sorted(events))),
        or_(Subscription.resource.is_(None), Subscription.resource.in_(named)),
        ~select(Account.user_id).where(owner, Account.suspended.is_(True)).exists(),
    )
    if not any(_to_all(events[row.event].audience, row) for row in rows):
        owners = {row.owner_id for row in rows} - {None}
        query = query.where(Subscription.trusted.is_(True) | Subscription.owner_id.in_(owners))
    query = query.order_by(Subscription.id).execution_options(populate_existing=True)
    return list(session.scalars(query))


def _holds(subscription: Subscription, scope: Scope) -> bool:
    """Whether *subscription* held *scope* when it subscribed."""
    try:
        return satisfies(parse_scopes(subscription.scopes), scope)
    except ScopeError:
        return False


def fan_out(
    session: Session, outbox_ids: Sequence[int], *, manifest: Manifest, now: datetime | None = None
) -> list[int]:
    """Create the deliveries of outbox rows *outbox_ids* not yet fanned out, in a few statements;
    returns their ids. Idempotent; commits (durably: a delivery never has two message ids)."""
    moment = now or utcnow()
    o, d = cast(Table, OutboxRow.__table__), cast(Table, Delivery.__table__)
    conn = session.connection()
    chosen = o.c.id.in_(sorted(set(outbox_ids))), o.c.fanned_out_at.is_(None)
    rows = conn.execute(select(o).where(*chosen).order_by(o.c.id)).all()
    if not rows:
        session.rollback()
        return []
    ids = [row.id for row in rows]
    # An event no longer declared reaches nobody.
    found = (manifest.event(name) for name in {row.event for row in rows})
    declared = {event.name: event for event in found if event is not None}
    wanted = [row for row in rows if row.event in declared]
    new: list[dict[str, Any]] = []  # pending (the columns' defaults), due at once
    fresh = dict(next_attempt_at=moment, created=moment)
    if wanted:
        done = select(d.c.outbox_id, d.c.subscription_id).where(d.c.outbox_id.in_(ids))
        existing = {(int(a), int(b)) for a, b in conn.execute(done)}
        subscriptions = _candidates(session, wanted, declared)
        # What depends on the subscription and the event only is judged once per batch.
        fits = {
            (sub.id, event.name)
            for event in declared.values()
            for sub in subscriptions
            if event.name in sub.event_names and _holds(sub, event_scope(manifest, event))
        }
        for row in wanted:
            audience = declared[row.event].audience
            for sub in subscriptions:
                wants = (sub.id, row.event) in fits and sub.resource in (None, row.resource)
                again = (row.id, sub.id) in existing
                if wants and not again and audience_allows(audience, sub, row):
                    pair = {"subscription_id": sub.id, "outbox_id": row.id}
                    new.append({**fresh, **pair, "message_id": new_message_id()})
    created: list[int] = []
    if new:
        insert_rows(conn, d, new)  # then the new ids read back by message id
        ours = d.c.outbox_id.in_(sorted(r.id for r in wanted))
        made = {m: i for m, i in conn.execute(select(d.c.message_id, d.c.id).where(ours))}
        created = [int(made[n["message_id"]]) for n in new]
    conn.execute(update(o).where(o.c.id.in_(ids)).values(fanned_out_at=moment, claimed_until=None))
    session.commit()
    return created
