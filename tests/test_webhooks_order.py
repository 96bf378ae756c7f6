"""One subscription's deliveries start in event order: never a later event before an
earlier one's first attempt. SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from srcore.webhooks import delivery
from srcore.webhooks.delivery import claim_deliveries, claim_outbox
from srcore.webhooks.fanout import fan_out
from srcore.webhooks.models import Delivery, OutboxRow
from srcore.webhooks.worker import Worker
from tests.test_webhooks_worker import (
    LOOPBACK,
    T0,
    Clock,
    clock,
    emit_committed,
    subscribe,
)

__all__ = ["clock"]  # a fixture, used by name
pytestmark = pytest.mark.usefixtures("clean_webhooks")

LEASE = timedelta(minutes=5)


class SlowFirstReceiver:
    """Records when each event's request starts and ends; the first one answers slowly."""

    def __init__(self) -> None:
        self.log: list[tuple[str, int]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                number = json.loads(body)["data"]["id"]
                with receiver.lock:
                    first = not receiver.log
                    receiver.log.append(("start", number))
                if first:
                    time.sleep(0.3)
                with receiver.lock:
                    receiver.log.append(("end", number))
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))


@pytest.fixture
def slow_receiver() -> Iterator[SlowFirstReceiver]:
    r = SlowFirstReceiver()
    r.thread.start()
    try:
        yield r
    finally:
        r.server.shutdown()
        r.server.server_close()
        r.thread.join(timeout=5)


def test_one_cycle_sends_a_subscriptions_events_one_after_the_other(
    app: Any, db: Any, slow_receiver: SlowFirstReceiver, clock: Clock
) -> None:
    subscribe(db, slow_receiver.url)
    for number in range(1, 5):
        emit_committed(app, {"id": number})
    worker = Worker(app, policy=LOOPBACK, clock=clock, poll_interval=0.01)
    try:
        worker.drain()
    finally:
        worker.close()
    expected = [(step, n) for n in range(1, 5) for step in ("start", "end")]
    assert slow_receiver.log == expected


def _two_deliveries(app: Any, db: Any, url: str) -> tuple[int, int]:
    subscribe(db, url)
    emit_committed(app, {"id": 1})
    emit_committed(app, {"id": 2})
    outbox = claim_outbox(db, now=T0, lease=LEASE, limit=10)
    manifest = app.extensions["srcore"].manifest
    [earlier] = fan_out(db, [outbox[0]], manifest=manifest, now=T0)
    [later] = fan_out(db, [outbox[1]], manifest=manifest, now=T0)
    return earlier, later


def test_a_later_delivery_waits_while_the_earlier_first_attempt_is_in_flight(
    app: Any, db: Any
) -> None:
    earlier, later = _two_deliveries(app, db, "http://receiver.invalid/hook")
    # Another worker holds the earlier one: the later one is not claimed meanwhile.
    db.execute(update(Delivery).where(Delivery.id == earlier).values(claimed_until=T0 + LEASE))
    db.commit()
    assert claim_deliveries(db, now=T0, lease=LEASE, limit=10) == []
    # Its first attempt made (it failed, its retry is due later): the later one goes.
    db.execute(
        update(Delivery)
        .where(Delivery.id == earlier)
        .values(claimed_until=None, attempts=1, next_attempt_at=T0 + timedelta(minutes=1))
    )
    db.commit()
    assert claim_deliveries(db, now=T0, lease=LEASE, limit=10) == [later]


def test_both_due_are_claimed_together_in_event_order(app: Any, db: Any) -> None:
    earlier, later = _two_deliveries(app, db, "http://receiver.invalid/hook")
    assert claim_deliveries(db, now=T0, lease=LEASE, limit=10) == sorted([earlier, later])


def test_a_cut_claim_never_takes_the_later_one_alone(app: Any, db: Any) -> None:
    earlier, later = _two_deliveries(app, db, "http://receiver.invalid/hook")
    # The later event's delivery was created first (say, fanned out by a faster worker).
    db.execute(update(Delivery).where(Delivery.id == later).values(next_attempt_at=T0))
    db.execute(
        update(Delivery)
        .where(Delivery.id == earlier)
        .values(next_attempt_at=T0 + timedelta(seconds=1))
    )
    db.commit()
    assert claim_deliveries(db, now=T0, lease=LEASE, limit=10) == []
    now = T0 + timedelta(seconds=1)
    assert claim_deliveries(db, now=now, lease=LEASE, limit=1) == [earlier]


def test_fan_out_claims_nothing_and_the_claim_takes_the_earlier_first(app: Any, db: Any) -> None:
    subscribe(db, "http://receiver.invalid/hook")
    emit_committed(app, {"id": 1})
    emit_committed(app, {"id": 2})
    first, second = claim_outbox(db, now=T0, lease=LEASE, limit=10)
    manifest = app.extensions["srcore"].manifest
    [waiting] = fan_out(db, [first], manifest=manifest, now=T0)  # not claimed, not attempted
    [new] = fan_out(db, [second], manifest=manifest, now=T0)
    claimed = db.scalar(select(Delivery.claimed_until).where(Delivery.id == new))
    assert claimed is None  # left for the claim, which takes the earlier one first
    assert claim_deliveries(db, now=T0, lease=LEASE, limit=1) == [waiting]
    assert db.scalar(select(OutboxRow.fanned_out_at).where(OutboxRow.id == second)) is not None


def test_no_first_attempt_goes_before_an_earlier_event_is_fanned_out(app: Any, db: Any) -> None:
    """Two workers fan out two batches; the later batch commits first. Its deliveries wait:
    the earlier event, not fanned out yet, may have one to the same subscription."""
    subscribe(db, "http://receiver.invalid/hook")
    emit_committed(app, {"id": 1})
    emit_committed(app, {"id": 2})
    first, second = claim_outbox(db, now=T0, lease=LEASE, limit=10)
    manifest = app.extensions["srcore"].manifest
    [later] = fan_out(db, [second], manifest=manifest, now=T0)
    assert claim_deliveries(db, now=T0, lease=LEASE, limit=10) == []
    db.commit()
    # A retry keeps no order: it is not held back.
    retry = dict(attempts=1, next_attempt_at=T0)
    db.execute(update(Delivery).where(Delivery.id == later).values(**retry))
    db.commit()
    assert claim_deliveries(db, now=T0, lease=LEASE, limit=10) == [later]
    db.execute(update(Delivery).where(Delivery.id == later).values(attempts=0, claimed_until=None))
    db.commit()
    [earlier] = fan_out(db, [first], manifest=manifest, now=T0)
    assert claim_deliveries(db, now=T0, lease=LEASE, limit=10) == sorted([earlier, later])


@pytest.mark.parametrize("srcore_backend", ["postgresql"], indirect=True)
def test_workers_claiming_at_once_do_not_split_a_subscription(app: Any, db: Any) -> None:
    """One worker's claim is not committed yet when another claims: the second must not take
    the later event (the earlier one looks free to it, and is skipped as locked), or both
    would be sent side by side. It waits, then sees the earlier one in flight. SQLite has
    one writer: its claims never overlap."""
    earlier, _later = _two_deliveries(app, db, "http://receiver.invalid/hook")
    db.commit()
    second: list[list[int]] = []
    with app.extensions["srcore"].db.session() as other:
        assert claim_deliveries(other, now=T0, lease=LEASE, limit=1) == [earlier]
        claiming = threading.Thread(
            target=lambda: second.append(claim_deliveries(db, now=T0, lease=LEASE, limit=10))
        )
        claiming.start()
        claiming.join(timeout=1)  # long enough for a claim that does not wait to be done
        other.commit()
    claiming.join(timeout=30)
    assert not claiming.is_alive()
    assert second == [[]]  # the earlier one is in flight: the later one waits


@pytest.mark.parametrize("srcore_backend", ["postgresql"], indirect=True)
def test_a_claim_waits_for_a_hung_one_only_so_long(
    app: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker that hangs in the middle of its claim does not stop every other one for
    good: their claims fail after the wait (the step is logged and tried again)."""
    _two_deliveries(app, db, "http://receiver.invalid/hook")
    db.commit()
    monkeypatch.setattr(delivery, "CLAIM_WAIT", 0.2)
    with app.extensions["srcore"].db.session() as hung:
        claim_deliveries(hung, now=T0, lease=LEASE, limit=1)
        with pytest.raises(OperationalError, match="lock timeout"):
            claim_deliveries(db, now=T0, lease=LEASE, limit=10)
        db.rollback()


def test_a_worker_dying_in_its_fan_out_holds_later_events_back_a_minute_at_most(
    app: Any, db: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first event's fan-out is claimed and never done (its worker dies): the second
    event's delivery waits for it, in order, until that claim lapses a minute later."""
    receiver = SlowFirstReceiver()
    receiver.thread.start()
    try:
        subscribe(db, receiver.url)
        emit_committed(app, {"id": 1})

        def dies(*args: Any, **kwargs: Any) -> None:
            raise SystemExit("killed while fanning out")

        dying = Worker(app, policy=LOOPBACK, clock=clock, poll_interval=0.01)
        monkeypatch.setattr("srcore.webhooks.worker.fan_out", dies)
        with pytest.raises(SystemExit):
            dying.drain()
        monkeypatch.undo()
        emit_committed(app, {"id": 2})
        worker = Worker(app, policy=LOOPBACK, clock=clock, poll_interval=0.01)
        try:
            worker.drain()
            assert receiver.log == []  # the second event's delivery waits for the first's
            clock.now = T0 + timedelta(minutes=1, seconds=1)
            worker.drain()
        finally:
            worker.close()
            dying.close()
        assert [n for step, n in receiver.log if step == "start"] == [1, 2]
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
        receiver.thread.join(timeout=5)
