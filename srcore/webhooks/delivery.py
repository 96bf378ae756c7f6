"""Sending and recording deliveries: sign and POST one, then write down what it meant.

Delivered on 2xx; final when the policy refused the target; the subscription disabled at
once on 410 Gone; otherwise retried per the schedule, counted from the end of the
attempt, until the subscription has failed for ``webhook-disable-after``: then it is
disabled and its owner told. The worker runs :func:`send` on its threads.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session

from srcore.outbound import AddressPolicy, Exchange, PooledSender, Sender
from srcore.signatures import sign_with_key
from srcore.sqlrows import execute_rows, insert_rows, lazy_commit, rows_of
from srcore.webhooks.claims import Job
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, Subscription
from srcore.webhooks.settings import WebhookSettings, next_attempt_at

__all__ = ["prune_log", "record", "redeliver", "send", "sender_for"]

log = logging.getLogger("srcore.webhooks")
PENDING, FAILED = DeliveryStatus.pending, DeliveryStatus.failed


def sender_for(
    policy: AddressPolicy, settings: WebhookSettings, *, trusted: bool = False
) -> PooledSender:
    """The sender of deliveries under *policy* and *settings*; with *trusted*, one without
    the address and port checks, for trusted (first-party) subscriptions only."""
    return PooledSender(
        None if trusted else policy,
        connect_timeout=settings.connect_timeout.total_seconds(),
        body_cap=settings.body_cap,
        maxsize=max(settings.per_host, 1),
    )


def send(
    job: Job,
    http: Sender,
    trusted_http: Sender,
    clock: Callable[[], datetime],
    config: WebhookSettings,
) -> None:
    """Sign *job*'s body and POST it (through *trusted_http* for a trusted subscription)
    within one ``config.timeout`` deadline; the outcome is stored on *job*. Never raises:
    an unexpected error is kept as ``job.failure``."""
    try:
        now = clock()
        timestamp = int(now.timestamp())
        headers = {
            "content-type": "application/json",
            "user-agent": config.user_agent,
            "webhook-id": job.message_id,
            "webhook-timestamp": str(timestamp),
        }
        key, previous, expires = job.keys
        keys = [key]
        if previous is not None and (expires is None or expires > now):
            keys.append(previous)  # the rotation overlap lasts
        signature = " ".join(sign_with_key(k, job.message_id, timestamp, job.body) for k in keys)
        started = time.perf_counter()
        job.exchange = (trusted_http if job.trusted else http).post(
            job.url,
            {**headers, "webhook-signature": signature},
            job.body,
            deadline=time.monotonic() + config.timeout.total_seconds(),
        )
        job.duration_ms = round((time.perf_counter() - started) * 1000)
        job.now, job.headers, job.ended = now, headers, clock()
    except Exception as exc:  # recorded as not attempted; the lease brings it back
        job.failure = exc


def record(
    session: Session, jobs: Iterable[Job], *, config: WebhookSettings, rng: random.Random
) -> None:
    """Record what happened to *jobs* in one transaction of a few set-based statements,
    then tell the owners of the subscriptions it disabled. A job never sent (stopping, or
    its lease ran short) is freed, due at once. Commits."""
    d, s = _delivery, _subscription
    loaded: dict[int, datetime | None] = {}  # failing_since per subscription, as read
    failing: dict[int, datetime | None] = {}  # and after this batch
    disabled: dict[int, tuple[str, datetime]] = {}  # why and when
    attempts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    unsent: list[int] = []
    for job in sorted(jobs, key=lambda j: (j.outbox_id, j.id)):
        if job.failure is not None or job.exchange is None or job.now is None:
            if job.failure is None:
                unsent.append(job.id)
            else:
                log.error("delivery %d failed unexpectedly", job.id, exc_info=job.failure)
            continue
        loaded.setdefault(job.subscription_id, job.failing_since)
        failing.setdefault(job.subscription_id, job.failing_since)
        changes.append(_outcome(job, job.exchange, job.now, failing, disabled, config, rng))
        attempts.append(_attempt_row(job, job.exchange, config.body_cap))
    lazy_commit(session)  # a record lost in a crash: the delivery is resent, same webhook-id
    conn = session.connection()
    if unsent:
        conn.execute(sa.update(d).where(d.c.id.in_(unsent)).values(claimed_until=None))
    insert_rows(conn, _attempt, attempts)
    new = rows_of(conn, _OUTCOME)
    statement = (
        sa.update(d)
        .where(d.c.id == new["o_id"])
        .values(
            status=new["o_status"],
            attempts=d.c.attempts + new["o_attempts"],
            manual_status=None,
            resume_at=None,
            claimed_until=None,
            last_status_code=new["o_last_status_code"],
            delivered_at=new["o_delivered_at"],
            next_attempt_at=new["o_next_attempt_at"],
        )
    )
    execute_rows(conn, statement, changes)
    for sid, since in failing.items():
        if sid in disabled:
            reason, now = disabled[sid]
            change = {"enabled": False, "disabled_reason": reason[:512], "updated": now}
            conn.execute(sa.update(s).where(s.c.id == sid).values(failing_since=since, **change))
            cancel = d.c.subscription_id == sid, d.c.status == PENDING
            conn.execute(sa.update(d).where(*cancel).values(status="cancelled", claimed_until=None))
        elif since != loaded[sid]:
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


def _outcome(
    job: Job,
    exchange: Exchange,
    now: datetime,
    failing: dict[int, datetime | None],
    disabled: dict[int, tuple[str, datetime]],
    config: WebhookSettings,
    rng: random.Random,
) -> dict[str, Any]:
    """What *exchange* means for *job* (a row of :data:`_OUTCOME`) and for its subscription
    (*failing* and *disabled* are updated)."""
    sid, status = job.subscription_id, exchange.status
    # A manual redelivery is an attempt of its own: it neither counts towards nor moves
    # the automatic schedule, which resumes where it was if it fails.
    manual = job.manual_status is not None
    outcome: dict[str, Any] = dict(o_id=job.id, o_status=FAILED, o_last_status_code=status)
    outcome.update(o_attempts=0 if manual else 1, o_delivered_at=None)
    outcome["o_next_attempt_at"] = job.next_attempt_at
    where = f"{job.event} {job.message_id} to {job.url}"
    if status is not None and 200 <= status < 300 and exchange.error is None:
        failing[sid] = None
        log.info("delivered %s in %d ms", where, job.duration_ms)
        return {**outcome, "o_status": DeliveryStatus.delivered, "o_delivered_at": now}
    error = exchange.error or f"HTTP {status}"
    if sid not in disabled and status == 410:
        disabled[sid] = (f"{job.url} answered 410 Gone", now)
    elif sid not in disabled and exchange.refused:
        log.warning("not delivering %s, and not retrying: %s", where, error)
        return outcome
    elif sid not in disabled:
        since = failing[sid] = failing[sid] or now
        if now - since >= config.disable_after:
            why = f"every delivery to {job.url} failed since {since:%Y-%m-%d %H:%M} UTC"
            disabled[sid] = (f"{why} (last: {error})", now)
    if sid in disabled:  # by this attempt or an earlier one of the batch
        return outcome
    if manual:
        log.info("manual redelivery of %s failed: %s", where, error)
        resume = job.manual_status == PENDING and job.resume_at is not None
        retry_at = job.resume_at if resume else job.next_attempt_at
        return {**outcome, "o_status": job.manual_status, "o_next_attempt_at": retry_at}
    ended = job.ended or now
    retry = next_attempt_at(job.attempts + 1, ended, rng, schedule=config.schedule)
    if retry is None:
        log.warning("gave up on %s after %d attempts: %s", where, job.attempts + 1, error)
        return outcome
    delay = round((retry - ended).total_seconds())
    log.info("retrying %s in %d s: %s", job.message_id, delay, status or error)
    return {**outcome, "o_status": PENDING, "o_next_attempt_at": retry}


def _attempt_row(job: Job, exchange: Exchange, cap: int) -> dict[str, Any]:
    return {
        "delivery_id": job.id,
        "created": job.now,
        "request_headers": json.dumps(job.headers),  # the signature is not logged
        "request_body": job.body[:cap].decode("utf-8", errors="replace"),
        "response_status": exchange.status,
        "response_headers": json.dumps(dict(exchange.headers or {})),
        "response_body": exchange.body[:cap].decode("utf-8", errors="replace"),
        "duration_ms": job.duration_ms,
        "error": exchange.error[:500] if exchange.error else None,
    }


def redeliver(session: Session, delivery_id: int, *, now: datetime) -> bool:
    """Queue a delivery again, same message id, due at *now*; False when it does not
    exist or its subscription is disabled. Does not commit. If the manual attempt fails
    the delivery goes back to its status and next automatic attempt."""
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or not delivery.subscription.enabled:
        return False
    if delivery.manual_status is None:  # not already waiting for a manual redelivery
        delivery.manual_status = delivery.status
        pending = delivery.status == PENDING
        delivery.resume_at = delivery.next_attempt_at if pending else None
    delivery.status, delivery.next_attempt_at, delivery.claimed_until = PENDING, now, None
    return True


def prune_log(session: Session, *, now: datetime, retention: timedelta) -> int:
    """Delete delivery-log attempts older than *retention*; returns how many. Commits."""
    result = session.execute(sa.delete(Attempt).where(Attempt.created < now - retention))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


_delivery = cast(sa.Table, Delivery.__table__)
_subscription = cast(sa.Table, Subscription.__table__)
_attempt = cast(sa.Table, Attempt.__table__)
#: A delivery's outcome (:func:`_outcome`): ``o_`` and the columns it sets.
_OUTCOME = {
    f"o_{c}": _delivery.c[c].type
    for c in ("id", "status", "attempts", "last_status_code", "delivered_at", "next_attempt_at")
}
