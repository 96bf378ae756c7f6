"""The database as the queue: claim rows with a lease, then read what to send.

A claim sets ``claimed_until``: the row is the claimer's until then and comes back to
everyone when the lease ends, so a worker that dies loses nothing. On PostgreSQL rows are
chosen ``FOR UPDATE SKIP LOCKED``, so workers share the work without waiting on each
other; the claiming UPDATE only takes rows still free, so two workers never hold one row
on SQLite either. :func:`load_jobs` reads the claimed deliveries as :class:`Job` values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import ColumnElement, Select, Subquery, Table, func, or_, select, update
from sqlalchemy.orm import Session

from srcore.outbound import Exchange
from srcore.signatures import decode_secret
from srcore.webhooks.models import Delivery, DeliveryStatus, OutboxRow, Subscription

__all__ = [
    "DeliveryResult",
    "Job",
    "claim_deliveries",
    "claim_outbox",
    "held_up",
    "lazy_commit",
    "load_jobs",
]

log = logging.getLogger("srcore.webhooks")

Keys = tuple[bytes, bytes | None, datetime | None]


def lazy_commit(session: Session) -> None:
    """Let this transaction's commit return before its WAL reaches the disk (PostgreSQL).

    For claims and records only: a commit lost in a crash means a claim made again or a
    delivery resent with the same ``webhook-id``, which at-least-once delivery allows.
    Fan-out keeps durable commits: a delivery is never sent under two message ids.
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
    """Lease those rows of *table* that *chosen* selects and are still free; their ids.
    One statement, then a (lazy) commit unless not *commit*."""
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
    """Per subscription (``subscription_id``), the earliest event (``first``) whose first
    attempt holds later ones up: a receiver gets a subscription's events in order as far
    as first attempts go. A delivery waits while an earlier one of its subscription awaits
    its first attempt and is in flight or not yet due; free earlier ones are claimed
    first, and a lane sends them in order. Retries hold nothing up.
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


@dataclass(frozen=True)
class DeliveryResult:
    """What one attempt at a delivery did."""

    delivered: bool
    status: int | None
    error: str | None
    retry_at: datetime | None
    disabled: bool
    #: False when there was nothing to send (already done, cancelled, unknown id).
    attempted: bool = True


@dataclass
class Job:
    """One delivery to attempt: what to send, then what happened."""

    delivery_id: int
    message_id: str
    attempts: int
    next_attempt_at: datetime
    subscription_id: int
    outbox_id: int
    url: str
    trusted: bool
    event: str
    body: bytes
    keys: Keys
    failing_since: datetime | None
    #: Set for a manual redelivery: the status to go back to if it fails.
    manual_status: str | None = None
    #: The automatic retry a manual redelivery put aside (resumed if it fails).
    resume_at: datetime | None = None
    now: datetime | None = None
    #: When the attempt ended: retries count from here, not from its start.
    ended: datetime | None = None
    headers: dict[str, str] | None = None
    exchange: Exchange | None = None
    duration_ms: int = 0
    failure: BaseException | None = None


def _body(event: str, created: datetime, payload: str) -> bytes:
    document = {"type": event, "timestamp": created.isoformat(), "data": json.loads(payload)}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def load_jobs(
    session: Session,
    delivery_ids: Sequence[int],
    *,
    raise_errors: bool = False,
    commit: bool = True,
) -> tuple[list[Job], dict[int, DeliveryResult]]:
    """The jobs of the pending deliveries among *delivery_ids* (one statement), and a
    result for each id with nothing to send; commits unless not *commit*. Deliveries of a
    disabled subscription are cancelled; one that cannot be built (a malformed secret) is
    logged and left to its lease, or re-raised with *raise_errors*.
    """
    d, s, o = _delivery, _subscription, _outbox
    wanted = list(dict.fromkeys(int(i) for i in delivery_ids))
    rows = (
        session.connection()
        .execute(
            select(
                d.c.id,
                d.c.status,
                d.c.message_id,
                d.c.attempts,
                d.c.next_attempt_at,
                d.c.manual_status,
                d.c.resume_at,
                d.c.subscription_id,
                s.c.url,
                s.c.trusted,
                s.c.secret,
                s.c.previous_secret,
                s.c.previous_secret_expires,
                s.c.enabled,
                s.c.failing_since,
                o.c.id.label("outbox_id"),
                o.c.event,
                o.c.created,
                o.c.payload,
            )
            .select_from(d.join(s, s.c.id == d.c.subscription_id).join(o, o.c.id == d.c.outbox_id))
            .where(d.c.id.in_(wanted))
        )
        .all()
    )
    found = {row.id: row for row in rows}
    results: dict[int, DeliveryResult] = {}
    cancelled: list[int] = []
    jobs: list[Job] = []
    bodies: dict[int, bytes] = {}
    keys: dict[int, Keys] = {}
    for delivery_id in wanted:
        row = found.get(delivery_id)
        if row is None or row.status != DeliveryStatus.pending.value:
            done = row is not None and row.status == DeliveryStatus.delivered.value
            results[delivery_id] = DeliveryResult(done, None, None, None, False, attempted=False)
            continue
        if not row.enabled:
            cancelled.append(delivery_id)
            results[delivery_id] = DeliveryResult(
                False, None, "subscription disabled", None, True, attempted=False
            )
            continue
        try:
            body = bodies.get(row.outbox_id)
            if body is None:
                body = bodies[row.outbox_id] = _body(row.event, row.created, row.payload)
            job_keys = keys.get(row.subscription_id)
            if job_keys is None:
                previous = decode_secret(row.previous_secret) if row.previous_secret else None
                job_keys = (decode_secret(row.secret), previous, row.previous_secret_expires)
                keys[row.subscription_id] = job_keys
        except Exception as exc:
            if raise_errors:
                session.rollback()
                raise
            log.exception("delivery %d cannot be sent: %s", delivery_id, exc)
            results[delivery_id] = DeliveryResult(False, None, str(exc), None, False, False)
            continue
        jobs.append(
            Job(
                delivery_id=delivery_id,
                message_id=row.message_id,
                attempts=row.attempts,
                next_attempt_at=row.next_attempt_at,
                manual_status=row.manual_status,
                resume_at=row.resume_at,
                subscription_id=row.subscription_id,
                outbox_id=row.outbox_id,
                url=row.url,
                trusted=bool(row.trusted),
                event=row.event,
                body=body,
                keys=job_keys,
                failing_since=row.failing_since,
            )
        )
    if cancelled:
        session.execute(
            update(d)
            .where(d.c.id.in_(cancelled), d.c.status == DeliveryStatus.pending.value)
            .values(status=DeliveryStatus.cancelled.value, claimed_until=None)
        )
    if commit:
        session.commit()
    return jobs, results


_LAZY = "srcore.webhooks.lazy_commit"
_outbox = cast(Table, OutboxRow.__table__)
_delivery = cast(Table, Delivery.__table__)
_subscription = cast(Table, Subscription.__table__)
