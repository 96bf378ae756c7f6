"""``deliver_one``: the one delivery function both dispatchers call.

It sends one delivery's event to its subscription's URL, signed per Standard Webhooks,
through the :class:`~srcore.webhooks.sender.Sender` it is given (the SSRF policy and the
attempt's deadline live there), writes what happened to the delivery log and decides what
comes next: delivered on 2xx; final when the policy refused the target (retrying cannot
help); the subscription disabled at once on 410 Gone; otherwise a retry per
:mod:`.schedule`, until the subscription has been failing for ``webhook-disable-after``,
when it is disabled and its owner told by mail.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, OutboxRow, Subscription
from srcore.webhooks.schedule import SCHEDULE, next_attempt_at
from srcore.webhooks.sender import BODY_CAP, Exchange, PooledSender, Sender
from srcore.webhooks.signing import decode_secret, sign_with_key
from srcore.webhooks.ssrf import AddressPolicy

if TYPE_CHECKING:
    import threading

    from flask import Flask

__all__ = [
    "BODY_CAP",
    "DeliveryResult",
    "DisabledNotifier",
    "WebhookSettings",
    "build_body",
    "deliver_batch",
    "deliver_one",
    "format_delay",
    "prune_log",
    "redeliver",
    "sender_for",
    "settings_for",
]

log = logging.getLogger("srcore.webhooks")

_ERROR_LENGTH = 500


class DisabledNotifier(Protocol):
    """Tells a subscription's owner that it was disabled (called after the commit)."""

    def __call__(self, session: Session, subscription: Subscription, reason: str) -> None: ...


@dataclass(frozen=True)
class WebhookSettings:
    """The ``[global]`` webhook settings and what deliveries need from the service."""

    timeout: timedelta = timedelta(seconds=15)
    connect_timeout: timedelta = timedelta(seconds=5)
    log_retention: timedelta = timedelta(days=14)
    disable_after: timedelta = timedelta(days=3)
    body_cap: int = BODY_CAP
    user_agent: str = "srcore-webhooks"
    notifier: DisabledNotifier | None = None
    #: Delay before attempt n+1 at index n; its length is the attempts made at most.
    schedule: tuple[timedelta, ...] = SCHEDULE
    #: Requests of a batch in flight at once (threads of the dispatcher's pool).
    concurrency: int = 8


@dataclass(frozen=True)
class DeliveryResult:
    """What one call of :func:`deliver_one` did."""

    delivered: bool
    status: int | None
    error: str | None
    retry_at: datetime | None
    disabled: bool
    #: False when there was nothing to send (already done, cancelled, unknown id).
    attempted: bool = True
    message_id: str | None = None
    duration_ms: int = 0


def build_body(outbox: OutboxRow) -> bytes:
    """The JSON body of an event: ``{"type", "timestamp", "data"}``, the same every retry."""
    return _body(outbox.event, outbox.created, outbox.payload)


def _body(event: str, created: datetime, payload: str) -> bytes:
    document = {"type": event, "timestamp": created.isoformat(), "data": json.loads(payload)}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


def format_delay(delay: timedelta) -> str:
    """A short human form of a delay: ``5 s``, ``5 min``, ``2 h``."""
    seconds = round(delay.total_seconds())
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"


def _text(data: bytes, cap: int) -> str:
    return data[:cap].decode("utf-8", errors="replace")


def deliver_one(
    session: Session,
    delivery_id: int,
    *,
    http: Sender,
    clock: Callable[[], datetime],
    policy: AddressPolicy,
    config: WebhookSettings,
    rng: random.Random | None = None,
    trusted_http: Sender | None = None,
) -> DeliveryResult:
    """Make one attempt at delivery *delivery_id* and record it; commits *session*.

    *http* is the :class:`~srcore.webhooks.sender.Sender` that enforces *policy*
    (:func:`sender_for`). *clock* gives the current aware UTC time; *rng* the jitter of
    retries. *trusted_http* (``sender_for(policy, config, trusted=True)``) sends the
    deliveries of trusted subscriptions only, the first-party ones the operator's config
    made, whose internal targets the policy would refuse; without it they go through
    *http* like any other. :func:`deliver_batch` of one delivery.
    """
    [result] = deliver_batch(
        session,
        [delivery_id],
        http=http,
        trusted_http=trusted_http,
        clock=clock,
        policy=policy,
        config=config,
        rng=rng,
        raise_errors=True,
    )
    return result


def sender_for(
    policy: AddressPolicy, settings: WebhookSettings, *, trusted: bool = False
) -> PooledSender:
    """The sender of deliveries under *policy* and *settings*; with *trusted*, one without
    the address and port checks, for trusted (first-party) subscriptions only."""
    return PooledSender(
        None if trusted else policy,
        connect_timeout=settings.connect_timeout.total_seconds(),
        body_cap=settings.body_cap,
        maxsize=max(settings.concurrency, 1),
    )


@dataclass
class _Job:
    """One delivery of a batch: what to send, then what happened."""

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
    keys: tuple[bytes, bytes | None, datetime | None]
    now: datetime | None = None
    #: When the attempt ended: retries count from here, not from its start.
    ended: datetime | None = None
    #: Set for a manual redelivery: the status to go back to if it fails.
    manual_status: str | None = None
    #: The automatic retry a manual redelivery put aside (resumed if it fails).
    resume_at: datetime | None = None
    headers: dict[str, str] | None = None
    exchange: Exchange | None = None
    duration_ms: int = 0
    failure: BaseException | None = None


@dataclass
class _SubscriptionState:
    failing_since: datetime | None
    original: datetime | None
    reason: str | None = None


def _keys(
    cache: dict[int, tuple[bytes, bytes | None, datetime | None]], row: Any
) -> tuple[bytes, bytes | None, datetime | None]:
    found = cache.get(row.subscription_id)
    if found is None:
        previous = decode_secret(row.previous_secret) if row.previous_secret else None
        found = (decode_secret(row.secret), previous, row.previous_secret_expires)
        cache[row.subscription_id] = found
    return found


def _send(
    job: _Job,
    http: Sender,
    trusted_http: Sender | None,
    clock: Callable[[], datetime],
    config: WebhookSettings,
) -> None:
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


def deliver_batch(
    session: Session,
    delivery_ids: Sequence[int],
    *,
    http: Sender,
    clock: Callable[[], datetime],
    policy: AddressPolicy,
    config: WebhookSettings,
    rng: random.Random | None = None,
    executor: Executor | None = None,
    trusted_http: Sender | None = None,
    raise_errors: bool = False,
    stop: threading.Event | None = None,
) -> list[DeliveryResult]:
    """Make one attempt at each of the deliveries *delivery_ids* and record them; commits.

    The delivery function of both dispatchers (:func:`deliver_one` is a batch of one).
    Reads the deliveries with their subscriptions and events in one statement, sends the
    requests (concurrently on *executor* when given), then records every attempt and
    what comes next in one transaction: delivered on 2xx; the subscription disabled at
    once on 410 Gone; otherwise a retry per ``config.schedule``, until the subscription
    has been failing for ``config.disable_after``, when it is disabled and its owner told.

    *http* is the thread-safe :class:`~srcore.webhooks.sender.Sender` that enforces
    *policy* (:func:`sender_for`); *trusted_http* (``sender_for(..., trusted=True)``)
    sends the deliveries of trusted subscriptions; without it they go through *http*
    like any other. A target the policy refuses is recorded as failed, not retried. Returns
    one result per id, in order. A delivery whose request could not even be built
    (say, a malformed secret) is logged and left to its lease, or re-raised with
    *raise_errors*.

    One subscription's deliveries are sent one after the other, in event order. Once
    *stop* is set no further request starts: those not sent are released, due at once.
    """
    del policy  # enforced by the sender, on the address it actually connects to
    rng = rng or random.Random()
    d, s, o = _delivery_table, _subscription_table, _outbox_table
    conn = session.connection()
    wanted = list(dict.fromkeys(int(i) for i in delivery_ids))
    rows = conn.execute(
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
    ).all()
    found = {row.id: row for row in rows}
    results: dict[int, DeliveryResult] = {}
    cancelled: list[int] = []
    jobs: list[_Job] = []
    bodies: dict[int, bytes] = {}
    keys: dict[int, tuple[bytes, bytes | None, datetime | None]] = {}
    states: dict[int, _SubscriptionState] = {}
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
            job_keys = _keys(keys, row)
        except Exception as exc:
            if raise_errors:
                session.rollback()
                raise
            log.exception("delivery %d cannot be sent: %s", delivery_id, exc)
            results[delivery_id] = DeliveryResult(False, None, str(exc), None, False, False)
            continue
        states.setdefault(
            row.subscription_id, _SubscriptionState(row.failing_since, row.failing_since)
        )
        jobs.append(
            _Job(
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
            )
        )
    if cancelled:
        conn.execute(
            update(d)
            .where(d.c.id.in_(cancelled), d.c.status == DeliveryStatus.pending.value)
            .values(status=DeliveryStatus.cancelled.value, claimed_until=None)
        )
    if not jobs:
        if cancelled:
            session.commit()
        else:
            session.rollback()
        return [results[i] for i in wanted]
    # Nothing is held open while the requests are in flight.
    session.commit()

    # One subscription's deliveries go out one after the other, in event order, so its
    # receiver never gets an event before an earlier one's first attempt; different
    # subscriptions' go out side by side. Once *stop* is set, no further request starts.
    lanes: dict[int, list[_Job]] = {}
    for job in sorted(jobs, key=lambda j: (j.outbox_id, j.delivery_id)):
        lanes.setdefault(job.subscription_id, []).append(job)

    def send_lane(lane: list[_Job]) -> None:
        for job in lane:
            if stop is not None and stop.is_set():
                return
            _send(job, http, trusted_http, clock, config)

    if executor is not None and len(lanes) > 1:
        for _ in executor.map(send_lane, lanes.values()):
            pass
    else:
        for lane in lanes.values():
            send_lane(lane)

    attempts: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    disabled: dict[int, tuple[str, datetime]] = {}
    unsent: list[int] = []
    for job in jobs:
        if job.failure is None and job.exchange is None:  # stopped before it was sent
            unsent.append(job.delivery_id)
            results[job.delivery_id] = DeliveryResult(
                False, None, "not sent: stopping", None, False, attempted=False
            )
            continue
        if job.failure is not None or job.exchange is None or job.now is None:
            if raise_errors and job.failure is not None:
                raise job.failure
            log.error("delivery %d failed unexpectedly", job.delivery_id, exc_info=job.failure)
            results[job.delivery_id] = DeliveryResult(
                False, None, str(job.failure), None, False, attempted=False
            )
            continue
        result, change = _outcome(job, states[job.subscription_id], config, rng)
        results[job.delivery_id] = result
        changes.append(change)
        attempts.append(_attempt_row(job, config))
        state = states[job.subscription_id]
        if state.reason is not None and job.subscription_id not in disabled:
            disabled[job.subscription_id] = (state.reason, job.now)
    conn = session.connection()
    if unsent:  # due again at once, for the next worker
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
    return [results[i] for i in wanted]


def _outcome(
    job: _Job, state: _SubscriptionState, config: WebhookSettings, rng: random.Random
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
        result = DeliveryResult(
            True, status, None, None, False, message_id=job.message_id, duration_ms=job.duration_ms
        )
        return result, change

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
        result = DeliveryResult(
            False, None, error, None, False, message_id=job.message_id, duration_ms=0
        )
        return result, change
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
    result = DeliveryResult(
        False,
        status,
        error,
        retry_at,
        reason is not None,
        message_id=job.message_id,
        duration_ms=job.duration_ms,
    )
    return result, change


def _attempt_row(job: _Job, config: WebhookSettings) -> dict[str, Any]:
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


_delivery_table = cast(Table, Delivery.__table__)
_subscription_table = cast(Table, Subscription.__table__)
_outbox_table = cast(Table, OutboxRow.__table__)
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


def redeliver(session: Session, delivery_id: int, *, now: datetime) -> bool:
    """Queue a delivery again (manual redelivery): same message id, due at *now*.

    The manual attempt is one of its own: it does not count towards the automatic
    schedule, and if it fails the delivery goes back to where it was (the same status, the
    same next automatic attempt). Returns False when the delivery does not exist or its
    subscription is disabled. Does not commit.
    """
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


class MailNotifier:
    """Mails a user subscriber that their subscription was disabled; services are skipped."""

    def __init__(self, app: Flask) -> None:
        self.app = app

    def __call__(self, session: Session, subscription: Subscription, reason: str) -> None:
        st = self.app.extensions["srcore"]
        model = st.user_model
        if subscription.owner_id is None or model is None:
            return
        email = session.scalar(select(model.email).where(model.id == subscription.owner_id))
        session.rollback()
        if not email:
            log.warning("subscription %d: its owner has no email here", subscription.id)
            return
        from srcore.mail import mailer

        site = str(st.config.global_["site-name"])
        origin = str(st.section["origin"]).rstrip("/")
        mailer(self.app).send(
            str(email),
            f"[{site}] webhook disabled: {subscription.url}"[:200],
            f"Your webhook subscription to {st.manifest.name} was disabled.\n\n"
            f"URL: {subscription.url}\nEvents: {subscription.events}\nReason: {reason}\n\n"
            f"Fix the endpoint, then enable the subscription again at {origin}/webhooks\n",
        )


def _duration(section: Mapping[str, Any], key: str, default: timedelta) -> timedelta:
    try:
        value = section[key]
    except KeyError:
        return default
    return value if isinstance(value, timedelta) else default


def settings_for(app: Flask) -> WebhookSettings:
    """The webhook settings of *app*, from ``[global]``, mailing owners through srcore.mail."""
    from importlib import metadata

    g = app.extensions["srcore"].config.global_
    defaults = WebhookSettings()
    try:
        version = metadata.version("srcore")
    except metadata.PackageNotFoundError:
        version = "0"
    return WebhookSettings(
        timeout=_duration(g, "webhook-timeout", defaults.timeout),
        connect_timeout=_duration(g, "webhook-connect-timeout", defaults.connect_timeout),
        log_retention=_duration(g, "webhook-log-retention", defaults.log_retention),
        disable_after=_duration(g, "webhook-disable-after", defaults.disable_after),
        user_agent=f"srcore-webhooks/{version}",
        notifier=MailNotifier(app),
    )


def policy_for(app: Flask) -> AddressPolicy:
    """The address policy of *app*, from ``[global] allow-private-webhook-targets`` and
    ``webhook-allowed-ports``."""
    g = app.extensions["srcore"].config.global_
    try:
        networks = g["allow-private-webhook-targets"] or ()
    except KeyError:
        networks = ()
    try:
        ports = g["webhook-allowed-ports"]
    except KeyError:
        ports = None
    return AddressPolicy.from_networks(
        (str(n) for n in networks), ports=None if ports is None else [str(p) for p in ports]
    )


# ``OutboxRow`` is re-exported for the dispatchers' type hints.
_ = OutboxRow
