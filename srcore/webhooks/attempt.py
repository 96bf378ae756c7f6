"""Before and during an attempt: read the deliveries to send, then sign and send each.

The worker (:mod:`.worker`) loads a batch of claimed deliveries as :class:`Job` values
with :func:`load_jobs`, sends them on its threads with :func:`send` (through the
:class:`~srcore.outbound.sender.Sender` given: the SSRF policy and the attempt's deadline
live there) and hands them to :func:`~srcore.webhooks.outcome.record`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from sqlalchemy import Table, select, update
from sqlalchemy.orm import Session

from srcore.outbound.policy import AddressPolicy
from srcore.outbound.sender import Exchange, PooledSender, Sender
from srcore.webhooks.models import Delivery, DeliveryStatus, OutboxRow, Subscription
from srcore.webhooks.settings import WebhookSettings
from srcore.webhooks.signing import decode_secret, sign_with_key

__all__ = ["DeliveryResult", "Job", "build_body", "load_jobs", "send", "sender_for"]

log = logging.getLogger("srcore.webhooks")

Keys = tuple[bytes, bytes | None, datetime | None]


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
    message_id: str | None = None
    duration_ms: int = 0


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


def build_body(outbox: OutboxRow) -> bytes:
    """The JSON body of an event: ``{"type", "timestamp", "data"}``, the same every retry."""
    return _body(outbox.event, outbox.created, outbox.payload)


def _body(event: str, created: datetime, payload: str) -> bytes:
    document = {"type": event, "timestamp": created.isoformat(), "data": json.loads(payload)}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


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


def load_jobs(
    session: Session,
    delivery_ids: Sequence[int],
    *,
    raise_errors: bool = False,
    commit: bool = True,
) -> tuple[list[Job], dict[int, DeliveryResult]]:
    """The jobs of the pending deliveries among *delivery_ids*, read in one statement, and
    a result for each id that has nothing to send. Commits, unless not *commit*: nothing
    is held open while the requests are in flight.

    Deliveries of a disabled subscription are cancelled. A delivery whose request cannot
    even be built (a malformed secret) is logged and left to its lease, or re-raised with
    *raise_errors*.
    """
    d, s, o = _delivery_table, _subscription_table, _outbox_table
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


_delivery_table = cast(Table, Delivery.__table__)
_subscription_table = cast(Table, Subscription.__table__)
_outbox_table = cast(Table, OutboxRow.__table__)
