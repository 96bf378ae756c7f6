"""The database is the queue: claim rows with a lease (free again when it ends, so a dying
worker loses nothing; ``SKIP LOCKED`` on PostgreSQL), read what to send, :func:`record`
what the attempts meant. Claims and records commit lazily: one lost in a crash is claimed
again, or resent with the same ``webhook-id``."""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from srcore.outbound import Exchange
from srcore.sqlrows import execute_rows, insert_rows, lazy_commit, rows_of
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, OutboxRow, Subscription
from srcore.webhooks.settings import WebhookSettings, next_attempt_at

__all__ = [
    "Job",
    "cancel_pending",
    "claim_deliveries",
    "claim_outbox",
    "load_jobs",
    "lock_subscriptions",
    "prune_log",
    "record",
    "redeliver",
]

log = logging.getLogger("srcore.webhooks")
PENDING, FAILED = DeliveryStatus.pending, DeliveryStatus.failed
#: At most this many deliveries of one subscription in one claim.
LANE = 128
#: Seconds a claim waits for another worker's claim (PostgreSQL) before it fails.
CLAIM_WAIT = 10


def _claim(
    session: Session, table: sa.Table, chosen: sa.Select[Any], now: datetime, lease: timedelta
) -> list[int]:
    """Lease those rows of *table* that *chosen* selects and are still free; their ids."""
    lazy_commit(session)
    chosen = chosen.with_for_update(skip_locked=True)
    free = table.c.id.in_(chosen.scalar_subquery()), _free(table, now)
    claim = sa.update(table).where(*free).values(claimed_until=now + lease).returning(table.c.id)
    return sorted(int(i) for i in session.connection().execute(claim).scalars())


def lock_subscriptions(session: Session, *where: sa.ColumnElement[bool]) -> None:
    """Lock the subscriptions *where* selects, in id order, before any of their deliveries:
    every change of both takes them in this order, so none deadlocks with another (SQLite's
    one writer needs none)."""
    if session.get_bind().dialect.name == "postgresql":
        chosen = sa.select(_subscription.c.id).where(*where).order_by(_subscription.c.id)
        session.execute(chosen.with_for_update(key_share=True))


def cancel_pending(session: Session | sa.Connection, *where: sa.ColumnElement[bool]) -> None:
    """Cancel the pending deliveries *where* selects, their leases dropped: an attempt in flight
    then records nothing over it (see :func:`record`). A manual redelivery waiting is cancelled
    too: what it put aside would otherwise come back when a later one fails."""
    cancel = sa.update(_delivery).where(_delivery.c.status == PENDING, *where)
    dropped = dict(claimed_until=None, manual_status=None, resume_at=None)
    session.execute(cancel.values(status=DeliveryStatus.cancelled, **dropped))


def _free(table: sa.Table, now: datetime) -> sa.ColumnElement[bool]:
    return sa.or_(table.c.claimed_until.is_(None), table.c.claimed_until < now)


def claim_outbox(session: Session, *, now: datetime, lease: timedelta, limit: int) -> list[int]:
    """Claim up to *limit* outbox rows not yet fanned out; returns their ids."""
    o = _outbox
    chosen = sa.select(o.c.id).where(o.c.fanned_out_at.is_(None), _free(o, now)).order_by(o.c.id)
    return _claim(session, o, chosen.limit(limit), now, lease)


def claim_deliveries(
    session: Session,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    exclude: Collection[int] = (),
    owners: Collection[tuple[int | None, str | None]] = (),
) -> list[int]:
    """Claim up to *limit* due pending deliveries, oldest event first, at most :data:`LANE`
    of a subscription, none of *exclude*'s nor of the subscriptions of *owners* (``owner_id,
    owner_client``). First attempts go in event order: one waits while an earlier first
    attempt of its subscription is in flight or not yet due, or an earlier event is not yet
    fanned out. On PostgreSQL, workers claim one at a time, so each claim sees those before
    it: two claiming side by side would split a subscription. A claim takes milliseconds;
    one waited for longer than :data:`CLAIM_WAIT` (its worker hangs) fails this one."""
    if session.get_bind().dialect.name == "postgresql":  # wait for another worker's claim
        session.connection().exec_driver_sql(f"SET LOCAL lock_timeout = '{CLAIM_WAIT}s'")
        session.execute(_claim_lock)
    d, o = _delivery, _outbox
    in_flight_or_later = sa.or_(d.c.claimed_until >= now, d.c.next_attempt_at > now)
    held_up = (
        sa.select(d.c.subscription_id, sa.func.min(d.c.outbox_id).label("first"))
        .where(d.c.status == PENDING, d.c.attempts == 0, in_flight_or_later)
        .group_by(d.c.subscription_id)
        .subquery("held_up")
    )
    due = [d.c.status == PENDING, d.c.next_attempt_at <= now, _free(d, now)]
    due.append(sa.or_(held_up.c.first.is_(None), held_up.c.first > d.c.outbox_id))
    # Nor before every earlier event is fanned out: it may have a delivery to come here too.
    unmade = sa.select(sa.func.min(o.c.id)).where(o.c.fanned_out_at.is_(None)).scalar_subquery()
    due.append(sa.or_(d.c.attempts > 0, unmade.is_(None), d.c.outbox_id < unmade))
    if exclude:
        due.append(d.c.subscription_id.not_in(sorted(exclude)))
    if owners:
        s = _subscription
        theirs = [
            s.c.owner_id.is_not_distinct_from(user) & s.c.owner_client.is_not_distinct_from(client)
            for user, client in owners
        ]
        due.append(d.c.subscription_id.not_in(sa.select(s.c.id).where(sa.or_(*theirs))))
    # PostgreSQL locks no rows of a windowed SELECT: rank them in a subquery.
    order = (d.c.outbox_id, d.c.id)
    rank = sa.func.row_number().over(partition_by=d.c.subscription_id, order_by=order)
    ranked = (
        sa.select(d.c.id, d.c.outbox_id, rank.label("rank"))
        .select_from(d.outerjoin(held_up, held_up.c.subscription_id == d.c.subscription_id))
        .where(*due)
        .subquery("ranked")
    )
    first = sa.select(ranked.c.id).where(ranked.c.rank <= LANE)
    first = first.order_by(ranked.c.outbox_id, ranked.c.id).limit(limit)
    return _claim(session, d, sa.select(d.c.id).where(d.c.id.in_(first)), now, lease)


@dataclass
class Job:
    """One delivery to attempt (its fields from ``id`` to ``previous_secret_expires`` are
    the columns that :func:`load_jobs` reads), then what :func:`.worker.send` made of it."""

    body: bytes
    id: int
    message_id: str
    attempts: int
    next_attempt_at: datetime
    #: Set for a manual redelivery: the status and automatic retry to go back to if it fails.
    manual_status: str | None
    resume_at: datetime | None
    #: The claim's lease: what it records applies only while the row is still under it.
    claimed_until: datetime | None
    subscription_id: int
    outbox_id: int
    event: str
    url: str
    trusted: bool
    #: Who subscribed: a user, or (with no user) a service's client id.
    owner_id: int | None
    owner_client: str | None
    secret: str
    #: Signed with too, until it expires.
    previous_secret: str | None
    previous_secret_expires: datetime | None
    now: datetime | None = None
    #: When the attempt ended: retries count from here, not from its start.
    ended: datetime | None = None
    headers: dict[str, str] | None = None
    exchange: Exchange | None = None
    duration_ms: int = 0
    failure: BaseException | None = None


def load_jobs(session: Session, delivery_ids: Sequence[int]) -> list[Job]:
    """The jobs of the pending deliveries among *delivery_ids*, in event order. Those of a
    disabled subscription are cancelled; one whose event cannot be read is left to its lease."""
    d, s, o = _delivery, _subscription, _outbox
    rows = session.connection().execute(
        sa.select(s.c.enabled, o.c.created, o.c.payload, d.c.id, d.c.message_id, d.c.attempts)
        .add_columns(d.c.next_attempt_at, d.c.manual_status, d.c.resume_at, d.c.claimed_until)
        .add_columns(d.c.subscription_id)
        .add_columns(d.c.outbox_id, o.c.event, s.c.url, s.c.trusted, s.c.owner_id)
        .add_columns(s.c.owner_client)
        .add_columns(s.c.secret, s.c.previous_secret, s.c.previous_secret_expires)
        .select_from(d.join(s, s.c.id == d.c.subscription_id).join(o, o.c.id == d.c.outbox_id))
        .where(d.c.id.in_(sorted(set(delivery_ids))), d.c.status == PENDING)
        .order_by(d.c.outbox_id, d.c.id)
    )
    cancelled: list[int] = []
    jobs: list[Job] = []
    bodies: dict[int, bytes] = {}
    for row in rows:
        if not row.enabled:
            cancelled.append(row.id)
            continue
        if row.outbox_id not in bodies:
            try:
                data = {"type": row.event, "timestamp": row.created.isoformat()}
                data["data"] = json.loads(row.payload)
                bodies[row.outbox_id] = json.dumps(data, separators=(",", ":")).encode()
            except ValueError as exc:
                log.exception("delivery %d cannot be sent: %s", row.id, exc)
                continue
        jobs.append(Job(bodies[row.outbox_id], *row[3:]))
    if cancelled:
        cancel_pending(session, d.c.id.in_(cancelled))
    return jobs


def record(
    session: Session, jobs: Iterable[Job], *, config: WebhookSettings, rng: random.Random
) -> None:
    """Record what happened to *jobs* in a few set-based statements, commit, then tell the owners of
    the subscriptions it disabled. Delivered on 2xx; final when the policy refused the target; the
    subscription (but a trusted one) disabled on 410 Gone or once failing (refused included)
    for ``webhook-disable-after``; else retried per the schedule. A job never sent (stopping, or its
    lease ran short) is freed, due at once."""
    d, s = _delivery, _subscription
    jobs = sorted(jobs, key=lambda j: (j.outbox_id, j.id))
    lazy_commit(session)
    # Its subscriptions, locked before any delivery (as every change of several of them does)
    # and read as they are now: their owners may have changed them since the claim.
    ids = sorted({job.subscription_id for job in jobs})
    if session.get_bind().dialect.name == "sqlite":  # the write lock before the read
        hold = sa.update(s).where(s.c.id.in_(ids)).values(updated=s.c.updated)
        session.execute(hold)
    chosen = sa.select(s.c.id, s.c.enabled, s.c.failing_since).where(s.c.id.in_(ids))
    current = session.execute(chosen.order_by(s.c.id).with_for_update(key_share=True)).all()
    loaded = {row.id: row.failing_since for row in current}
    off = set(ids) - {row.id for row in current if row.enabled}  # disabled or deleted meanwhile
    failing = dict(loaded)  # failing_since per subscription, as read and after this batch
    disabled: dict[int, tuple[str, datetime]] = {}  # why and when
    attempts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    unsent: list[dict[str, Any]] = []

    def outcome(job: Job, exchange: Exchange, now: datetime) -> dict[str, Any]:
        """*job*'s row of :data:`_OUTCOME`; updates its subscription's *failing* and *disabled*."""
        sid, status = job.subscription_id, exchange.status
        # A manual redelivery neither counts towards nor moves the automatic schedule.
        manual = job.manual_status is not None
        row: dict[str, Any] = dict(o_id=job.id, o_claimed_until=job.claimed_until)
        row.update(o_status=FAILED, o_last_status_code=status)
        row.update(o_attempts=0 if manual else 1, o_delivered_at=None)
        row["o_next_attempt_at"] = job.next_attempt_at
        where = f"{job.event} {job.message_id} to {job.url}"
        if status is not None and 200 <= status < 300 and exchange.error is None:
            failing[sid] = None
            log.info("delivered %s in %d ms", where, job.duration_ms)
            return {**row, "o_status": DeliveryStatus.delivered, "o_delivered_at": now}
        error = exchange.error or f"HTTP {status}"
        # One disabled or deleted since the claim is not judged again; its delivery is retried
        # as usual (cancelled at its next load if it is still disabled then). A trusted one
        # (meta's revocations to a service) is never disabled: nobody would be told.
        judged = not job.trusted and sid not in off and sid not in disabled
        if judged and status == 410:
            disabled[sid] = (f"{job.url} answered 410 Gone", now)
        elif judged:  # a refused target too: its owner is told once it has lasted
            since = failing[sid] = failing[sid] or now
            if now - since >= config.disable_after:
                why = f"every delivery to {job.url} failed since {since:%Y-%m-%d %H:%M} UTC"
                disabled[sid] = (f"{why} (last: {error})", now)
        if sid in disabled:  # by this attempt or an earlier one of the batch
            return row
        if exchange.refused:
            log.warning("not delivering %s, and not retrying: %s", where, error)
            return row
        if manual:
            log.info("manual redelivery of %s failed: %s", where, error)
            retry_at = job.resume_at or job.next_attempt_at  # resume_at: it was pending
            return {**row, "o_status": job.manual_status, "o_next_attempt_at": retry_at}
        ended = job.ended or now
        retry = next_attempt_at(job.attempts + 1, ended, rng, schedule=config.schedule)
        if retry is None:
            log.warning("gave up on %s after %d attempts: %s", where, job.attempts + 1, error)
            return row
        delay = round((retry - ended).total_seconds())
        log.info("retrying %s in %d s: %s", job.message_id, delay, status or error)
        return {**row, "o_status": PENDING, "o_next_attempt_at": retry}

    for job in jobs:
        if job.failure is not None:
            log.error("delivery %d failed unexpectedly", job.id, exc_info=job.failure)
        elif job.exchange is None or job.now is None:
            unsent.append(dict(o_id=job.id, o_claimed_until=job.claimed_until))
        else:
            changes.append(outcome(job, job.exchange, job.now))
            attempts.append(_attempt_row(job, job.exchange, config.body_cap))
    conn = session.connection()
    # Only rows still under this claim: one redelivered, cancelled or claimed again since keeps
    # what was done to it meanwhile (the attempt is logged all the same).
    fence = rows_of(conn, _FENCE)
    execute_rows(conn, sa.update(d).where(*_ours(fence)).values(claimed_until=None), unsent)
    # Not of a delivery deleted meanwhile (with its subscription): the batch would fail with it.
    insert_rows(
        conn, _attempt, attempts, where=lambda r: sa.exists().where(d.c.id == r["delivery_id"])
    )
    new = rows_of(conn, _OUTCOME)
    values = {name: new[f"o_{name}"] for name in _SET}
    values.update(attempts=d.c.attempts + new["o_attempts"], claimed_until=None)
    values.update(manual_status=None, resume_at=None)  # a manual redelivery is over
    execute_rows(conn, sa.update(d).where(*_ours(new)).values(values), changes)
    for sid, since in failing.items():
        if sid in disabled:
            reason, now = disabled[sid]
            change = {"enabled": False, "disabled_reason": reason[:512], "updated": now}
            conn.execute(sa.update(s).where(s.c.id == sid).values(failing_since=since, **change))
            cancel_pending(conn, d.c.subscription_id == sid)
        elif since != loaded.get(sid):
            conn.execute(sa.update(s).where(s.c.id == sid).values(failing_since=since))
    session.commit()
    for sid, (reason, _now) in disabled.items():
        log.warning("disabled subscription %d: %s", sid, reason)
        try:
            subscription = session.get(Subscription, sid, populate_existing=True)
            if subscription is not None and config.notifier is not None:
                config.notifier(session, subscription, reason)
        except Exception:  # the subscription is disabled either way
            log.exception("could not tell the owner of subscription %d", sid)


def _ours(rows: Any) -> tuple[sa.ColumnElement[bool], ...]:
    """The delivery of each of *rows* (:func:`.sqlrows.rows_of`), if still under its claim."""
    d = _delivery
    return d.c.id == rows["o_id"], d.c.claimed_until.is_not_distinct_from(rows["o_claimed_until"])


def _attempt_row(job: Job, exchange: Exchange, cap: int) -> dict[str, Any]:
    return {
        "delivery_id": job.id,
        "created": job.now,
        "request_headers": json.dumps(job.headers),  # the signature is not logged
        "request_body": _text(job.body[:cap]),
        "response_status": exchange.status,
        "response_headers": json.dumps(dict(exchange.headers or {})),  # NUL escaped
        "response_body": _text(exchange.body[:cap]),
        "duration_ms": job.duration_ms,
        "error": _text(exchange.error[:500].encode()) if exchange.error else None,
    }


def _text(data: bytes) -> str:
    """A receiver's bytes as text a database takes: PostgreSQL refuses NUL in text, and the
    whole batch's record with it."""
    return data.decode("utf-8", errors="replace").replace("\x00", "\ufffd")


def redeliver(delivery: Delivery, *, now: datetime) -> bool:
    """Make *delivery* due at *now* again, same message id, without committing. False, and
    nothing changed, while a worker holds it: its attempt's outcome is recorded first."""
    if delivery.status == PENDING and delivery.claimed_until and delivery.claimed_until >= now:
        return False
    if delivery.manual_status is None:  # not already waiting for a manual redelivery
        delivery.manual_status = delivery.status
        delivery.resume_at = delivery.next_attempt_at if delivery.status == PENDING else None
    delivery.status, delivery.next_attempt_at, delivery.claimed_until = PENDING, now, None
    return True


def prune_log(session: Session, *, now: datetime, retention: timedelta) -> int:
    """Delete what the delivery log keeps past *retention*; returns how many rows went.
    Commits.

    The attempts older than *retention* first; then each delivery that is over (delivered,
    failed or cancelled: a pending one still has attempts to make), made before then and
    left without attempts; then each event fanned out before then that is left without
    deliveries (an event nobody subscribed to has none from the start). Without the last
    two, every event and each of its deliveries stayed for good, however old the log.
    Ids are not reused (the tables count with ``AUTOINCREMENT`` on SQLite too).
    """
    cutoff = now - retention
    removed = 0
    attempts = session.execute(sa.delete(Attempt).where(Attempt.created < cutoff))
    removed += int(getattr(attempts, "rowcount", 0) or 0)
    tried = sa.select(Attempt.id).where(Attempt.delivery_id == Delivery.id).exists()
    over = Delivery.status != PENDING.value
    deliveries = session.execute(sa.delete(Delivery).where(over, Delivery.created < cutoff, ~tried))
    removed += int(getattr(deliveries, "rowcount", 0) or 0)
    sent = sa.select(Delivery.id).where(Delivery.outbox_id == OutboxRow.id).exists()
    fanned_out = OutboxRow.fanned_out_at.is_not(None) & (OutboxRow.fanned_out_at < cutoff)
    events = session.execute(sa.delete(OutboxRow).where(fanned_out, ~sent))
    removed += int(getattr(events, "rowcount", 0) or 0)
    session.commit()
    return removed


#: Held by the transaction claiming deliveries; the key is arbitrary, the same for every worker.
_claim_lock = sa.select(sa.func.pg_advisory_xact_lock(0x5C0E_DE11))
_outbox = cast(sa.Table, OutboxRow.__table__)
_delivery = cast(sa.Table, Delivery.__table__)
_subscription = cast(sa.Table, Subscription.__table__)
_attempt = cast(sa.Table, Attempt.__table__)
#: A delivery's outcome (in :func:`record`): ``o_`` and its id and lease (:data:`_FENCE`), the
#: attempts it adds and the columns it sets.
_SET = ("status", "last_status_code", "delivered_at", "next_attempt_at")
_FENCE = {f"o_{c}": _delivery.c[c].type for c in ("id", "claimed_until")}
_OUTCOME = {**_FENCE, **{f"o_{c}": _delivery.c[c].type for c in ("attempts", *_SET)}}
