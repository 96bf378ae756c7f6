"""Sending and recording deliveries: sign and POST one, then write down what it meant.

Delivered on 2xx; final when the policy refused the target (retrying cannot help); the
subscription disabled at once on 410 Gone; otherwise a retry per the schedule, counted
from the end of the attempt, until the subscription has been failing for
``webhook-disable-after``: then it is disabled and its owner told. A manual redelivery
is an attempt of its own that neither counts towards nor moves that schedule.
The worker runs :func:`send` on its threads and :func:`record` on its own;
:func:`deliver_batch` runs them in a row, for scripts and tests.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, update
from sqlalchemy.orm import Session

from srcore.outbound import AddressPolicy, PooledSender, Sender
from srcore.signatures import sign_with_key
from srcore.webhooks.claims import DeliveryResult, Job, lazy_commit, load_jobs
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, Subscription
from srcore.webhooks.settings import WebhookSettings, format_delay, next_attempt_at

__all__ = ["deliver_batch", "prune_log", "record", "redeliver", "send", "sender_for"]

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
    trusted_http: Sender | None,
    clock: Callable[[], datetime],
    config: WebhookSettings,
) -> None:
    """Sign *job*'s body and POST it through *http* (*trusted_http* for a trusted
    subscription's), within one ``config.timeout`` deadline; the outcome is stored on
    *job*. Never raises: an unexpected error is kept as ``job.failure``."""
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
        sender = trusted_http if job.trusted and trusted_http is not None else http
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


def _text(data: bytes, cap: int) -> str:
    return data[:cap].decode("utf-8", errors="replace")


def record(
    session: Session,
    jobs: Iterable[Job],
    *,
    config: WebhookSettings,
    rng: random.Random,
    raise_errors: bool = False,
) -> dict[int, DeliveryResult]:
    """Record what happened to *jobs* in one transaction, then tell the owners of the
    subscriptions it disabled; a result per delivery id. A job never sent (stopping, or
    its lease ran short) is freed, due at once. Commits."""
    d, s = _delivery_table, _subscription_table
    results: dict[int, DeliveryResult] = {}
    states: dict[int, _SubscriptionState] = {}
    attempts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    disabled: dict[int, tuple[str, datetime]] = {}
    unsent: list[int] = []
    for job in sorted(jobs, key=lambda j: (j.outbox_id, j.delivery_id)):
        if job.failure is None and job.exchange is None:  # never sent
            unsent.append(job.delivery_id)
            results[job.delivery_id] = DeliveryResult(
                False, None, "not sent", None, False, attempted=False
            )
            continue
        if job.failure is not None or job.exchange is None or job.now is None:
            if raise_errors and job.failure is not None:
                session.rollback()
                raise job.failure
            log.error("delivery %d failed unexpectedly", job.delivery_id, exc_info=job.failure)
            results[job.delivery_id] = DeliveryResult(
                False, None, str(job.failure), None, False, attempted=False
            )
            continue
        state = states.setdefault(
            job.subscription_id, _SubscriptionState(job.failing_since, job.failing_since)
        )
        result, change = _outcome(job, state, config, rng)
        results[job.delivery_id] = result
        changes.append(change)
        attempts.append(_attempt_row(job, config))
        if state.reason is not None and job.subscription_id not in disabled:
            disabled[job.subscription_id] = (state.reason, job.now)
    lazy_commit(session)
    conn = session.connection()
    if unsent:
        conn.execute(update(d).where(d.c.id.in_(unsent)).values(claimed_until=None))
    if attempts:
        conn.execute(insert(_attempt_table), attempts)
        conn.execute(_UPDATE_DELIVERY, changes)
    failing = [
        {"_id": sid, "_failing_since": state.failing_since}
        for sid, state in states.items()
        if state.failing_since != state.original and sid not in disabled
    ]
    if failing:
        conn.execute(_UPDATE_FAILING, failing)
    for sid, (reason, now) in disabled.items():
        conn.execute(
            update(s)
            .where(s.c.id == sid)
            .values(
                enabled=False,
                disabled_reason=reason[:512],
                failing_since=states[sid].failing_since,
                updated=now,
            )
        )
        conn.execute(
            update(d)
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
    return results


def _outcome(
    job: Job, state: _SubscriptionState, config: WebhookSettings, rng: random.Random
) -> tuple[DeliveryResult, dict[str, Any]]:
    """What *job*'s exchange means for it and its subscription (*state* is updated)."""
    exchange, now = job.exchange, job.now
    assert exchange is not None and now is not None
    status = exchange.status
    # A manual redelivery is an attempt of its own: it neither counts towards nor moves
    # the automatic schedule, which resumes where it was if it fails.
    manual = job.manual_status is not None
    attempts = job.attempts if manual else job.attempts + 1
    change: dict[str, Any] = {
        "_id": job.delivery_id,
        "_status": DeliveryStatus.pending.value,
        "_step": 0 if manual else 1,
        "_last_status_code": status,
        "_delivered_at": None,
        "_next_attempt_at": job.next_attempt_at,
    }
    where = f"{job.event} {job.message_id} to {job.url}"
    if status is not None and 200 <= status < 300 and exchange.error is None:
        change["_status"] = DeliveryStatus.delivered.value
        change["_delivered_at"] = now
        state.failing_since = None
        log.info("delivered %s in %d ms", where, job.duration_ms)
        return DeliveryResult(True, status, None, None, False), change

    error = exchange.error or f"HTTP {status}"
    reason: str | None = None
    retry_at: datetime | None = None
    if state.reason is not None:
        reason = state.reason  # disabled by an earlier delivery of this batch
    elif status == 410:
        reason = f"{job.url} answered 410 Gone"
    elif exchange.refused:
        change["_status"] = DeliveryStatus.failed.value
        log.warning("not delivering %s, and not retrying: %s", where, error)
        return DeliveryResult(False, None, error, None, False), change
    else:
        failing_since = state.failing_since or now
        state.failing_since = failing_since
        if now - failing_since >= config.disable_after:
            reason = f"every delivery to {job.url} failed since {failing_since:%Y-%m-%d %H:%M} UTC (last: {error})"  # noqa: E501
    if reason is not None:
        state.reason = reason
        change["_status"] = DeliveryStatus.failed.value
    elif manual:
        change["_status"] = job.manual_status
        if job.manual_status == DeliveryStatus.pending.value and job.resume_at is not None:
            retry_at = change["_next_attempt_at"] = job.resume_at
        log.info("manual redelivery of %s failed: %s", where, error)
    else:
        ended = job.ended or now
        retry_at = next_attempt_at(attempts, ended, rng, schedule=config.schedule)
        if retry_at is None:
            change["_status"] = DeliveryStatus.failed.value
            log.warning("gave up on %s after %d attempts: %s", where, attempts, error)
        else:
            change["_next_attempt_at"] = retry_at
            log.info(
                "retrying %s in %s: %s",
                job.message_id,
                format_delay(retry_at - ended),
                status if status is not None else error,
            )
    return DeliveryResult(False, status, error, retry_at, reason is not None), change


def _attempt_row(job: Job, config: WebhookSettings) -> dict[str, Any]:
    exchange = job.exchange
    assert exchange is not None
    return {
        "delivery_id": job.delivery_id,
        "created": job.now,
        "request_headers": json.dumps(job.headers),  # the signature is not logged
        "request_body": _text(job.body, config.body_cap),
        "response_status": exchange.status,
        "response_headers": json.dumps(dict(exchange.headers or {})),
        "response_body": _text(exchange.body, config.body_cap),
        "duration_ms": job.duration_ms,
        "error": exchange.error[:_ERROR_LENGTH] if exchange.error else None,
    }


def deliver_batch(
    session: Session,
    delivery_ids: Sequence[int],
    *,
    http: Sender,
    clock: Callable[[], datetime],
    config: WebhookSettings,
    rng: random.Random | None = None,
    trusted_http: Sender | None = None,
    raise_errors: bool = False,
) -> list[DeliveryResult]:
    """One attempt at each of *delivery_ids* now, in event order, recorded; a result per
    id, in order. Commits. The worker's steps in a row, for scripts and tests."""
    wanted = list(dict.fromkeys(int(i) for i in delivery_ids))
    jobs, results = load_jobs(session, wanted, raise_errors=raise_errors)
    for job in sorted(jobs, key=lambda j: (j.outbox_id, j.delivery_id)):
        send(job, http, trusted_http, clock, config)
    if jobs:
        rng = rng or random.Random()
        results.update(record(session, jobs, config=config, rng=rng, raise_errors=raise_errors))
    return [results[i] for i in wanted]


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
    result = session.execute(delete(Attempt).where(Attempt.created < now - retention))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)


_delivery_table = cast(Table, Delivery.__table__)
_subscription_table = cast(Table, Subscription.__table__)
_attempt_table = cast(Table, Attempt.__table__)

#: One executemany for every delivery of a batch: its attempt counted, its next step.
_UPDATE_DELIVERY = (
    update(_delivery_table)
    .where(_delivery_table.c.id == bindparam("_id"))
    .values(
        status=bindparam("_status"),
        attempts=_delivery_table.c.attempts + bindparam("_step"),
        manual_status=None,
        resume_at=None,
        claimed_until=None,
        last_status_code=bindparam("_last_status_code"),
        delivered_at=bindparam("_delivered_at"),
        next_attempt_at=bindparam("_next_attempt_at"),
    )
)
_UPDATE_FAILING = (
    update(_subscription_table)
    .where(_subscription_table.c.id == bindparam("_id"))
    .values(failing_since=bindparam("_failing_since"))
)
