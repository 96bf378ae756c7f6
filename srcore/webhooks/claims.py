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
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Subquery, Table, func, or_, select, update
from sqlalchemy.orm import Session

from srcore.webhooks.models import Delivery, DeliveryStatus, OutboxRow

__all__ = ["claim_deliveries", "claim_outbox", "held_up", "lazy_commit"]


def lazy_commit(session: Session) -> None:
    """Let this transaction's commit return before its WAL reaches the disk (PostgreSQL).

    For claims and records only: if the database server crashed and lost such a commit,
    a claim would be made again, or a delivery sent again with the same ``webhook-id``
    when its lease ends, which at-least-once delivery allows; waiting for the disk at
    every step would cost more than the sending. Fan-out keeps a durable commit: message
    ids are made there, and a delivery is never sent under two ids.
    """
    transaction = session.get_transaction()
    if transaction is not None and session.info.get(_LAZY) is transaction:
        return  # set already in this transaction
    if session.get_bind().dialect.name == "postgresql":
        session.connection().exec_driver_sql("SET LOCAL synchronous_commit TO OFF")
        session.info[_LAZY] = session.get_transaction()


def _claim(
    session: Session,
    table: Table,
    chosen: Select[Any],
    *,
    now: datetime,
    until: datetime,
    commit: bool,
) -> list[int]:
    """Lease the rows of *table* whose ids *chosen* selects, of those still free; their
    ids. One statement, then a (lazy) commit unless not *commit*.

    *chosen* is ``FOR UPDATE SKIP LOCKED``: on PostgreSQL it passes over rows another
    worker is claiming, and the UPDATE only takes rows that are still free, so two
    workers never hold one row on SQLite either.
    """
    lazy_commit(session)
    ids = (
        session.connection()
        .execute(
            update(table)
            .where(table.c.id.in_(chosen.scalar_subquery()), _free(table, now))
            .values(claimed_until=until)
            .returning(table.c.id)
        )
        .scalars()
    )
    found = sorted(int(i) for i in ids)
    if commit:
        session.commit()
    return found


def _free(table: Table, now: datetime) -> ColumnElement[bool]:
    return or_(table.c.claimed_until.is_(None), table.c.claimed_until < now)


def claim_outbox(
    session: Session, *, now: datetime, lease: timedelta, limit: int, commit: bool = True
) -> list[int]:
    """Claim up to *limit* outbox rows not yet fanned out; returns their ids. Commits,
    unless not *commit* (the caller commits)."""
    o = _outbox
    chosen = (
        select(o.c.id)
        .where(o.c.fanned_out_at.is_(None), _free(o, now))
        .order_by(o.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return _claim(session, o, chosen, now=now, until=now + lease, commit=commit)


def held_up(now: datetime) -> Subquery:
    """Per subscription, the earliest event whose first attempt holds later ones up.

    A receiver gets a subscription's events in order as far as first attempts go: a
    delivery waits while a delivery of an earlier event to the same subscription has not
    had its first attempt and is in flight (claimed until after *now*) or not yet due.
    Earlier ones that are free are claimed first in the same statement (oldest event
    first), and a lane sends them in event order. Retries do not hold later events up.
    Columns ``subscription_id`` and ``first`` (an outbox id); found once per claim, not
    once per candidate row.
    """
    d = _delivery
    return (
        select(d.c.subscription_id, func.min(d.c.outbox_id).label("first"))
        .where(
            d.c.status == DeliveryStatus.pending.value,
            d.c.attempts == 0,
            or_(d.c.claimed_until >= now, d.c.next_attempt_at > now),
        )
        .group_by(d.c.subscription_id)
        .subquery("held_up")
    )


def claim_deliveries(
    session: Session,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    exclude: Collection[int] = (),
    per_subscription: int | None = None,
    commit: bool = True,
) -> list[int]:
    """Claim up to *limit* pending deliveries that are due, oldest event first, except
    those of the subscriptions *exclude* and at most *per_subscription* of any one
    subscription; returns their ids. Commits, unless not *commit*."""
    d = _delivery
    waiting = held_up(now)
    due = [
        d.c.status == DeliveryStatus.pending.value,
        d.c.next_attempt_at <= now,
        _free(d, now),
        or_(waiting.c.first.is_(None), waiting.c.first > d.c.outbox_id),
    ]
    if exclude:
        due.append(d.c.subscription_id.not_in(sorted(exclude)))
    joined = d.outerjoin(waiting, waiting.c.subscription_id == d.c.subscription_id)
    order = (d.c.outbox_id, d.c.id)
    if per_subscription is None:
        chosen = (
            select(d.c.id)
            .select_from(joined)
            .where(*due)
            .order_by(*order)
            .limit(limit)
            .with_for_update(of=d, skip_locked=True)
        )
    else:
        # PostgreSQL locks no rows of a windowed SELECT: rank them in a subquery.
        rank = func.row_number().over(partition_by=d.c.subscription_id, order_by=order)
        ranked = (
            select(d.c.id, d.c.outbox_id, rank.label("rank"))
            .select_from(joined)
            .where(*due)
            .subquery("ranked")
        )
        first = (
            select(ranked.c.id)
            .where(ranked.c.rank <= per_subscription)
            .order_by(ranked.c.outbox_id, ranked.c.id)
            .limit(limit)
        )
        chosen = select(d.c.id).where(d.c.id.in_(first)).with_for_update(skip_locked=True)
    return _claim(session, d, chosen, now=now, until=now + lease, commit=commit)


_LAZY = "srcore.webhooks.lazy_commit"
_outbox = cast(Table, OutboxRow.__table__)
_delivery = cast(Table, Delivery.__table__)
