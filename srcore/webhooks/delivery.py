"""Deliveries by hand: one batch attempted now, a manual redelivery, the log's pruning.

:func:`deliver_batch` runs the worker's three steps (:func:`~.attempt.load_jobs`,
:func:`~.attempt.send`, :func:`~.outcome.record`) in a row, for scripts, tests and a
caller that wants a batch done before it goes on.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.orm import Session

from srcore.outbound.sender import Sender
from srcore.webhooks.attempt import DeliveryResult, load_jobs, send
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus
from srcore.webhooks.outcome import record
from srcore.webhooks.settings import WebhookSettings

__all__ = ["deliver_batch", "deliver_one", "prune_log", "redeliver"]


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
    """Make one attempt at each of *delivery_ids* now, one after the other in event order,
    and record them; returns one result per id, in order. Commits.

    The three steps the worker runs concurrently (:func:`load_jobs`, :func:`send`,
    :func:`record`), in a row: for scripts, tests and one-off redeliveries.
    """
    wanted = list(dict.fromkeys(int(i) for i in delivery_ids))
    jobs, results = load_jobs(session, wanted, raise_errors=raise_errors)
    for job in sorted(jobs, key=lambda j: (j.outbox_id, j.delivery_id)):
        send(job, http, trusted_http, clock, config)
    if jobs:
        rng = rng or random.Random()
        results.update(record(session, jobs, config=config, rng=rng, raise_errors=raise_errors))
    return [results[i] for i in wanted]


def deliver_one(
    session: Session,
    delivery_id: int,
    *,
    http: Sender,
    clock: Callable[[], datetime],
    config: WebhookSettings,
    rng: random.Random | None = None,
    trusted_http: Sender | None = None,
) -> DeliveryResult:
    """:func:`deliver_batch` of one delivery; an unexpected error is raised."""
    [result] = deliver_batch(
        session,
        [delivery_id],
        http=http,
        trusted_http=trusted_http,
        clock=clock,
        config=config,
        rng=rng,
        raise_errors=True,
    )
    return result


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
