"""The database as the queue: claiming rows with a lease.

A claim sets ``claimed_until``: the row is the claimer's until then, and comes back to
everyone when the lease ends, so a worker that dies loses nothing. On PostgreSQL rows are
chosen with ``FOR UPDATE SKIP LOCKED``, so any number of workers share the work without
waiting on each other; the claiming UPDATE only takes rows that are still free, so two
workers never hold one row on SQLite either.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from srcore.webhooks.models import Delivery, DeliveryStatus, OutboxRow

__all__ = ["claim_deliveries", "claim_outbox", "first_attempts_in_order"]


def _claim(
    session: Session,
    model: type[OutboxRow] | type[Delivery],
    *conditions: Any,
    order_by: tuple[Any, ...],
    limit: int,
    now: datetime,
    until: datetime,
) -> list[int]:
    """Lease up to *limit* free rows of *model* matching *conditions*; their ids. Commits.

    The locked SELECT, then an UPDATE of exactly those rows that are still free (a row
    another worker took meanwhile is not returned), in one transaction.
    """
    free = or_(model.claimed_until.is_(None), model.claimed_until < now)
    due = (
        select(model.id)
        .where(*conditions, free)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list(session.scalars(due))
    if ids:
        ids = list(
            session.scalars(
                update(model)
                .where(model.id.in_(ids), free)
                .values(claimed_until=until)
                .returning(model.id)
                .execution_options(synchronize_session=False)
            )
        )
    session.commit()
    return sorted(ids)


def claim_outbox(session: Session, *, now: datetime, lease: timedelta, limit: int) -> list[int]:
    """Claim up to *limit* outbox rows not yet fanned out; returns their ids. Commits."""
    return _claim(
        session,
        OutboxRow,
        OutboxRow.fanned_out_at.is_(None),
        order_by=(OutboxRow.id,),
        limit=limit,
        now=now,
        until=now + lease,
    )


def first_attempts_in_order(now: datetime) -> ColumnElement[bool]:
    """True for a delivery no earlier event's first attempt to its subscription holds up.

    A receiver gets a subscription's events in order as far as first attempts go: a
    delivery waits while a delivery of an earlier event to the same subscription has not
    had its first attempt and is in flight (claimed until after *now*) or not yet due.
    Earlier ones that are free are claimed first in the same statement (oldest event
    first), and a lane sends them in event order. Retries do not hold later events up.
    """
    earlier = aliased(Delivery)
    return ~exists().where(
        earlier.subscription_id == Delivery.subscription_id,
        earlier.outbox_id < Delivery.outbox_id,
        earlier.status == DeliveryStatus.pending.value,
        earlier.attempts == 0,
        or_(earlier.claimed_until >= now, earlier.next_attempt_at > now),
    )


def claim_deliveries(
    session: Session,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    exclude: Collection[int] = (),
) -> list[int]:
    """Claim up to *limit* pending deliveries that are due, except those of the
    subscriptions *exclude*; returns their ids. Commits."""
    skip = (Delivery.subscription_id.not_in(sorted(exclude)),) if exclude else ()
    return _claim(
        session,
        Delivery,
        Delivery.status == DeliveryStatus.pending.value,
        Delivery.next_attempt_at <= now,
        first_attempts_in_order(now),
        *skip,
        order_by=(Delivery.outbox_id, Delivery.id),
        limit=limit,
        now=now,
        until=now + lease,
    )
