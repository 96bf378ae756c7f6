"""When a failed delivery is tried again: counted from the attempt's end, and a manual
redelivery beside the automatic schedule, never in its place. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from srcore.webhooks.delivery import redeliver
from srcore.webhooks.models import Attempt, Delivery, Subscription
from tests.test_webhooks_delivery import (
    T0,
    Clock,
    Receiver,
    deliver,
    emit_and_fan_out,
    receiver,
    subscribe,
)

__all__ = ["receiver"]  # a fixture, used by name
pytestmark = pytest.mark.usefixtures("clean_webhooks")


def test_retry_delay_counts_from_the_end_of_the_attempt(
    app: Any, db: Any, receiver: Receiver
) -> None:
    """A 5 s retry after an attempt that took 15 s is due 5 s after the attempt ended."""
    subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db)
    clock = Clock()
    answered = receiver.server.RequestHandlerClass.do_POST  # type: ignore[attr-defined]

    def slow(handler: Any) -> None:
        clock.now = T0 + timedelta(seconds=15)  # the receiver took 15 s to answer
        receiver.script = [(500, {}, b"")]
        answered(handler)

    receiver.server.RequestHandlerClass.do_POST = slow  # type: ignore[attr-defined]
    result = deliver(db, delivery_id, clock)
    assert result.status == 500 and result.retry_at is not None
    ended = T0 + timedelta(seconds=15)
    assert timedelta(seconds=4) <= result.retry_at - ended <= timedelta(seconds=6)
    stored = db.scalar(select(Delivery.next_attempt_at).where(Delivery.id == delivery_id))
    assert stored == result.retry_at


def test_manual_redelivery_does_not_use_up_automatic_retries(
    app: Any, db: Any, receiver: Receiver
) -> None:
    subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db)
    receiver.script = [(500, {}, b"")] * 3
    clock = Clock()
    first = deliver(db, delivery_id, clock)
    assert first.retry_at is not None
    scheduled = first.retry_at

    # By hand, before the automatic retry: it fails too.
    clock.now = T0 + timedelta(seconds=1)
    redeliver(db.get(Delivery, delivery_id), now=clock.now)
    db.commit()
    manual = deliver(db, delivery_id, clock)
    assert manual.status == 500 and not manual.delivered
    delivery = db.get(Delivery, delivery_id)
    db.refresh(delivery)
    # The automatic schedule continues as if the manual attempt had not happened.
    assert delivery.status == "pending"
    assert delivery.attempts == 1
    assert delivery.next_attempt_at == scheduled
    assert manual.retry_at == scheduled
    assert len(db.scalars(select(Attempt).where(Attempt.delivery_id == delivery_id)).all()) == 2

    # The automatic retry then counts as the second attempt: its delay is the third step.
    clock.now = scheduled
    second = deliver(db, delivery_id, clock)
    db.refresh(delivery)
    assert delivery.attempts == 2 and second.retry_at is not None
    assert timedelta(minutes=4) <= second.retry_at - scheduled <= timedelta(minutes=6)


def test_failed_manual_redelivery_of_a_given_up_delivery_leaves_it_failed(
    app: Any, db: Any, receiver: Receiver
) -> None:
    subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db)
    delivery = db.get(Delivery, delivery_id)
    delivery.status, delivery.attempts = "failed", 10
    db.commit()
    clock = Clock()
    receiver.script = [(500, {}, b"")]
    redeliver(db.get(Delivery, delivery_id), now=T0)
    db.commit()
    result = deliver(db, delivery_id, clock)
    assert result.status == 500 and result.retry_at is None
    db.refresh(delivery)
    assert delivery.status == "failed" and delivery.attempts == 10

    # A manual redelivery that succeeds delivers it.
    redeliver(db.get(Delivery, delivery_id), now=T0)
    db.commit()
    assert deliver(db, delivery_id, clock).delivered
    db.refresh(delivery)
    assert delivery.status == "delivered" and delivery.attempts == 10


def test_a_second_redelivery_keeps_the_automatic_schedule(
    app: Any, db: Any, receiver: Receiver
) -> None:
    subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db)
    receiver.script = [(500, {}, b"")] * 3
    clock = Clock()
    scheduled = deliver(db, delivery_id, clock).retry_at
    assert scheduled is not None
    redeliver(db.get(Delivery, delivery_id), now=T0)
    redeliver(db.get(Delivery, delivery_id), now=T0)  # clicked twice before the worker ran
    db.commit()
    deliver(db, delivery_id, clock)
    delivery = db.get(Delivery, delivery_id)
    db.refresh(delivery)
    assert delivery.status == "pending" and delivery.attempts == 1
    assert delivery.next_attempt_at == scheduled


def test_a_redelivery_cancelled_before_it_was_sent_leaves_nothing_to_restore(
    app: Any, db: Any, receiver: Receiver
) -> None:
    """A redelivery asked for, then cancelled with the subscription's deliveries before a
    worker sent it, puts nothing aside any more: the next redelivery, failing, leaves the
    delivery cancelled, not back on the automatic schedule the first one put aside."""
    sub = subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db)
    receiver.script = [(500, {}, b"")] * 2
    clock = Clock()
    assert deliver(db, delivery_id, clock).retry_at is not None
    redeliver(db.get(Delivery, delivery_id), now=T0)
    sub.enabled = False
    db.commit()
    assert not deliver(db, delivery_id, clock).attempted  # cancelled as its job is read
    delivery = db.get(Delivery, delivery_id)
    assert delivery.status == "cancelled"

    sub = db.get(Subscription, sub.id)
    sub.enabled = True
    redeliver(delivery, now=T0)
    db.commit()
    assert deliver(db, delivery_id, clock).status == 500
    db.refresh(delivery)
    assert delivery.status == "cancelled"
    assert delivery.manual_status is None and delivery.resume_at is None
