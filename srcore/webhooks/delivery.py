"""Sending and recording deliveries: sign and POST one, then write down what it meant.

Delivered on 2xx; final when the policy refused the target; the subscription disabled at
once on 410 Gone; otherwise retried per the schedule, counted from the end of the
attempt, until the subscription has failed for ``webhook-disable-after``: then it is
disabled and its owner told. A manual redelivery neither counts towards nor moves that
schedule. The worker runs :func:`send` on its threads and :func:`record` on its own.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeEngine

from srcore.outbound import AddressPolicy, PooledSender, Sender
from srcore.signatures import sign_with_key
from srcore.webhooks.claims import Job, execute_rows, insert_rows, lazy_commit, rows_of
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, Subscription
from srcore.webhooks.settings import WebhookSettings, format_delay, next_attempt_at

__all__ = ["prune_log", "record", "redeliver", "send", "sender_for"]

log = logging.getLogger("srcore.webhooks")

_ERROR_LENGTH = 500


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
        sender = trusted_http if job.trusted else http
        started = time.perf_counter()
        exchange = sender.post(
            job.url,
            {**headers, "webhook-signature": signature},
            job.body,
            deadline=time.monotonic() + config.timeout.total_seconds(),
        )
        job.duration_ms = round((time.perf_counter() - started) * 1000)
        job.now, job.headers, job.exchange = now, headers, exchange
        job.ended = clock()
    except Exception as exc:  # recorded as not attempted; the lease brings it back
        job.failure = exc


@dataclass
class _SubscriptionState:
    failing_since: datetime | None
    original: datetime | None
    reason: str | None = None


def record(
    session: Session, jobs: Iterable[Job], *, config: WebhookSettings, rng: random.Random
) -> None:
    """Record what happened to *jobs* in one transaction of a few set-based statements,
    then tell the owners of the subscriptions it disabled. A job never sent (stopping, or
    its lease ran short) is freed, due at once. Commits."""
    d, s = _delivery_table, _subscription_table
    states: dict[int, _SubscriptionState] = {}
    attempts: list[dict[str, Any]] = []
    changes: list[tuple[Any, ...]] = []
    disabled: dict[int, tuple[str, datetime]] = {}
    unsent: list[int] = []
    for job in sorted(jobs, key=lambda j: (j.outbox_id, j.delivery_id)):
        if job.failure is None and job.exchange is None:
            unsent.append(job.delivery_id)
            continue
        if job.failure is not None or job.exchange is None or job.now is None:
            log.error("delivery %d failed unexpectedly", job.delivery_id, exc_info=job.failure)
            continue
        state = states.setdefault(
            job.subscription_id, _SubscriptionState(job.failing_since, job.failing_since)
        )
        changes.append(_outcome(job, state, config, rng))
        attempts.append(_attempt_row(job, config))
        if state.reason is not None and job.subscription_id not in disabled:
            disabled[job.subscription_id] = (state.reason, job.now)
    lazy_commit(session)
    conn = session.connection()
    if unsent:
        conn.execute(sa.update(d).where(d.c.id.in_(unsent)).values(claimed_until=None))
    insert_rows(conn, _attempt_table, attempts)
    new = rows_of(conn, _OUTCOME)
    statement = (
        sa.update(d)
        .where(d.c.id == new["o_id"])
        .values(
            status=new["o_status"],
            attempts=d.c.attempts + new["o_step"],
            manual_status=None,
            resume_at=None,
            claimed_until=None,
            last_status_code=new["o_code"],
            delivered_at=new["o_delivered_at"],
            next_attempt_at=new["o_next_attempt_at"],
        )
    )
    execute_rows(conn, statement, [dict(zip(_OUTCOME, c, strict=True)) for c in changes])
    for sid, state in states.items():
        if state.failing_since != state.original and sid not in disabled:
            failing = {"failing_since": state.failing_since}
            conn.execute(sa.update(s).where(s.c.id == sid).values(failing))
    for sid, (reason, now) in disabled.items():
        conn.execute(
            sa.update(s)
            .where(s.c.id == sid)
            .values(
                enabled=False,
                disabled_reason=reason[:512],
                failing_since=states[sid].failing_since,
                updated=now,
            )
        )
        conn.execute(
            sa.update(d)
            .where(d.c.subscription_id == sid, d.c.status == DeliveryStatus.pending.value)
            .values(status=DeliveryStatus.cancelled.value, claimed_until=None)
        )
    session.commit()
    for sid, (reason, _now) in disabled.items():
        log.warning("disabled subscription %d: %s", sid, reason)
        if config.notifier is None:
            continue
        try:
            subscription = session.get(Subscription, sid, populate_existing=True)
            if subscription is not None:
                config.notifier(session, subscription, reason)
        except Exception:  # the subscription is disabled either way
            log.exception("could not tell the owner of subscription %d", sid)


def _outcome(
    job: Job, state: _SubscriptionState, config: WebhookSettings, rng: random.Random
) -> tuple[Any, ...]:
    """What *job*'s exchange means for it and its subscription (*state* is updated): the
    delivery's new ``(id, status, step, last_status_code, delivered_at, next_attempt_at)``."""
    exchange, now = job.exchange, job.now
    assert exchange is not None and now is not None
    status = exchange.status
    # A manual redelivery is an attempt of its own: it neither counts towards nor moves
    # the automatic schedule, which resumes where it was if it fails.
    manual = job.manual_status is not None
    attempts = job.attempts if manual else job.attempts + 1
    step = 0 if manual else 1
    pending, failed = DeliveryStatus.pending.value, DeliveryStatus.failed.value
    where = f"{job.event} {job.message_id} to {job.url}"
    if status is not None and 200 <= status < 300 and exchange.error is None:
        state.failing_since = None
        log.info("delivered %s in %d ms", where, job.duration_ms)
        delivered = DeliveryStatus.delivered.value
        return job.delivery_id, delivered, step, status, now, job.next_attempt_at
    error = exchange.error or f"HTTP {status}"
    if state.reason is None and status == 410:
        state.reason = f"{job.url} answered 410 Gone"
    elif state.reason is None and exchange.refused:
        log.warning("not delivering %s, and not retrying: %s", where, error)
        return job.delivery_id, failed, step, status, None, job.next_attempt_at
    elif state.reason is None:
        failing_since = state.failing_since = state.failing_since or now
        if now - failing_since >= config.disable_after:
            since = f"{failing_since:%Y-%m-%d %H:%M} UTC"
            state.reason = f"every delivery to {job.url} failed since {since} (last: {error})"
    if state.reason is not None:  # disabled, by this attempt or an earlier one of the batch
        return job.delivery_id, failed, step, status, None, job.next_attempt_at
    if manual:
        log.info("manual redelivery of %s failed: %s", where, error)
        resume = job.manual_status == pending and job.resume_at is not None
        retry_at = job.resume_at if resume else job.next_attempt_at
        return job.delivery_id, job.manual_status, step, status, None, retry_at
    ended = job.ended or now
    retry_at = next_attempt_at(attempts, ended, rng, schedule=config.schedule)
    if retry_at is None:
        log.warning("gave up on %s after %d attempts: %s", where, attempts, error)
        return job.delivery_id, failed, step, status, None, job.next_attempt_at
    shown = status if status is not None else error
    log.info("retrying %s in %s: %s", job.message_id, format_delay(retry_at - ended), shown)
    return job.delivery_id, pending, step, status, None, retry_at


def _attempt_row(job: Job, config: WebhookSettings) -> dict[str, Any]:
    exchange = job.exchange
    assert exchange is not None
    return {
        "delivery_id": job.delivery_id,
        "created": job.now,
        "request_headers": json.dumps(job.headers),  # the signature is not logged
        "request_body": job.body[: config.body_cap].decode("utf-8", errors="replace"),
        "response_status": exchange.status,
        "response_headers": json.dumps(dict(exchange.headers or {})),
        "response_body": exchange.body[: config.body_cap].decode("utf-8", errors="replace"),
        "duration_ms": job.duration_ms,
        "error": exchange.error[:_ERROR_LENGTH] if exchange.error else None,
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
        pending = delivery.status == DeliveryStatus.pending.value
        delivery.resume_at = delivery.next_attempt_at if pending else None
    delivery.status = DeliveryStatus.pending.value
    delivery.next_attempt_at = now
    delivery.claimed_until = None
    return True


def prune_log(session: Session, *, now: datetime, retention: timedelta) -> int:
    """Delete delivery-log attempts older than *retention*; returns how many. Commits."""
    result = session.execute(sa.delete(Attempt).where(Attempt.created < now - retention))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


_delivery_table = cast(sa.Table, Delivery.__table__)
_subscription_table = cast(sa.Table, Subscription.__table__)
_attempt_table = cast(sa.Table, Attempt.__table__)

#: The columns of a delivery's outcome (:func:`_outcome`) and their types.
_OUTCOME: dict[str, TypeEngine[Any]] = {
    "o_id": sa.BigInteger(),
    "o_status": sa.String(),
    "o_step": sa.Integer(),
    "o_code": sa.Integer(),
    "o_delivered_at": sa.DateTime(timezone=True),
    "o_next_attempt_at": sa.DateTime(timezone=True),
}
