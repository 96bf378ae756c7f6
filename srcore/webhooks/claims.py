"""The database as the queue: claim rows with a lease, then read what to send.

A claim sets ``claimed_until``: the row is the claimer's until then and comes back to
everyone when the lease ends, so a worker that dies loses nothing. PostgreSQL chooses
rows ``FOR UPDATE SKIP LOCKED``; the claiming UPDATE only takes rows still free, so two
workers never hold one row on SQLite either. The caller commits.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from srcore.outbound import Exchange
from srcore.signatures import decode_secret
from srcore.sqlrows import lazy_commit
from srcore.webhooks.models import Delivery, DeliveryStatus, OutboxRow, Subscription

__all__ = ["LANE", "Job", "claim_deliveries", "claim_outbox", "load_jobs"]

log = logging.getLogger("srcore.webhooks")

#: At most this many deliveries of one subscription in one claim.
LANE = 128
PENDING = DeliveryStatus.pending


def _claim(
    session: Session, table: sa.Table, chosen: sa.Select[Any], now: datetime, lease: timedelta
) -> list[int]:
    """Lease those rows of *table* that *chosen* selects and are still free; their ids.
    A claim lost in a crash is made again: it may commit lazily."""
    lazy_commit(session)
    statement = (
        sa.update(table)
        .where(table.c.id.in_(chosen.scalar_subquery()), _free(table, now))
        .values(claimed_until=now + lease)
        .returning(table.c.id)
    )
    return sorted(int(i) for i in session.connection().execute(statement).scalars())


def _free(table: sa.Table, now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(table.c.claimed_until.is_(None), table.c.claimed_until < now)


def claim_outbox(session: Session, *, now: datetime, lease: timedelta, limit: int) -> list[int]:
    """Claim up to *limit* outbox rows not yet fanned out; returns their ids."""
    o = _outbox
    chosen = sa.select(o.c.id).where(o.c.fanned_out_at.is_(None), _free(o, now)).order_by(o.c.id)
    return _claim(session, o, chosen.limit(limit).with_for_update(skip_locked=True), now, lease)


def claim_deliveries(
    session: Session,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    exclude: Collection[int] = (),
    per_subscription: int = LANE,
) -> list[int]:
    """Claim up to *limit* due pending deliveries, oldest event first, at most
    *per_subscription* of any one subscription and none of those in *exclude*.

    A receiver gets a subscription's events in order as far as first attempts go: a
    delivery waits while an earlier one of its subscription awaits its first attempt and
    is in flight or not yet due. Retries hold nothing up.
    """
    d = _delivery
    held_up = (
        sa.select(d.c.subscription_id, sa.func.min(d.c.outbox_id).label("first"))
        .where(
            d.c.status == PENDING,
            d.c.attempts == 0,
            sa.or_(d.c.claimed_until >= now, d.c.next_attempt_at > now),
        )
        .group_by(d.c.subscription_id)
        .subquery("held_up")
    )
    due = [
        d.c.status == PENDING,
        d.c.next_attempt_at <= now,
        _free(d, now),
        sa.or_(held_up.c.first.is_(None), held_up.c.first > d.c.outbox_id),
    ]
    if exclude:
        due.append(d.c.subscription_id.not_in(sorted(exclude)))
    # PostgreSQL locks no rows of a windowed SELECT: rank them in a subquery.
    order = (d.c.outbox_id, d.c.id)
    rank = sa.func.row_number().over(partition_by=d.c.subscription_id, order_by=order)
    ranked = (
        sa.select(d.c.id, d.c.outbox_id, rank.label("rank"))
        .select_from(d.outerjoin(held_up, held_up.c.subscription_id == d.c.subscription_id))
        .where(*due)
        .subquery("ranked")
    )
    first = (
        sa.select(ranked.c.id)
        .where(ranked.c.rank <= per_subscription)
        .order_by(ranked.c.outbox_id, ranked.c.id)
        .limit(limit)
    )
    chosen = sa.select(d.c.id).where(d.c.id.in_(first)).with_for_update(skip_locked=True)
    return _claim(session, d, chosen, now, lease)


@dataclass
class Job:
    """One delivery to attempt (its fields from ``id`` to ``event`` are the columns that
    :func:`load_jobs` reads), then what :func:`.delivery.send` made of it."""

    body: bytes
    #: The subscription's secret, and its previous one until it expires.
    keys: tuple[bytes, bytes | None, datetime | None]
    id: int
    message_id: str
    attempts: int
    next_attempt_at: datetime
    #: Set for a manual redelivery: the status to go back to if it fails, and the
    #: automatic retry it put aside (resumed if it fails).
    manual_status: str | None
    resume_at: datetime | None
    subscription_id: int
    outbox_id: int
    url: str
    trusted: bool
    failing_since: datetime | None
    event: str
    now: datetime | None = None
    #: When the attempt ended: retries count from here, not from its start.
    ended: datetime | None = None
    headers: dict[str, str] | None = None
    exchange: Exchange | None = None
    duration_ms: int = 0
    failure: BaseException | None = None


def load_jobs(session: Session, delivery_ids: Sequence[int]) -> list[Job]:
    """The jobs of the pending deliveries among *delivery_ids*, in event order (one
    statement). Deliveries of a disabled subscription are cancelled; one that cannot be
    built (a malformed secret) is logged and left to its lease."""
    d, s, o = _delivery, _subscription, _outbox
    rows = session.connection().execute(
        sa.select(*(d.c[n] for n in ("id", "message_id", "attempts", "next_attempt_at")))
        .add_columns(d.c.manual_status, d.c.resume_at, d.c.subscription_id, d.c.outbox_id)
        .add_columns(s.c.url, s.c.trusted, s.c.failing_since, o.c.event)
        .add_columns(s.c.enabled, s.c.secret, s.c.previous_secret, s.c.previous_secret_expires)
        .add_columns(o.c.created, o.c.payload)
        .select_from(d.join(s, s.c.id == d.c.subscription_id).join(o, o.c.id == d.c.outbox_id))
        .where(d.c.id.in_(sorted(set(delivery_ids))), d.c.status == PENDING)
        .order_by(d.c.outbox_id, d.c.id)
    )
    cancelled: list[int] = []
    jobs: list[Job] = []
    bodies: dict[int, bytes] = {}
    keys: dict[int, Any] = {}
    for row in rows:
        if not row.enabled:
            cancelled.append(row.id)
            continue
        try:
            if row.outbox_id not in bodies:
                data = {"type": row.event, "timestamp": row.created.isoformat()}
                data["data"] = json.loads(row.payload)
                bodies[row.outbox_id] = json.dumps(data, separators=(",", ":")).encode()
            if row.subscription_id not in keys:
                old = decode_secret(row.previous_secret) if row.previous_secret else None
                secret = decode_secret(row.secret)
                keys[row.subscription_id] = (secret, old, row.previous_secret_expires)
        except Exception as exc:
            log.exception("delivery %d cannot be sent: %s", row.id, exc)
            continue
        jobs.append(Job(bodies[row.outbox_id], keys[row.subscription_id], *row[:12]))
    if cancelled:
        session.execute(
            sa.update(d)
            .where(d.c.id.in_(cancelled), d.c.status == PENDING)
            .values(status=DeliveryStatus.cancelled, claimed_until=None)
        )
    return jobs


_outbox = cast(sa.Table, OutboxRow.__table__)
_delivery = cast(sa.Table, Delivery.__table__)
_subscription = cast(sa.Table, Subscription.__table__)
