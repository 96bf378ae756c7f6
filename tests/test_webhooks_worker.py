"""The local worker: claims, fans out and delivers from the database, on both backends."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

import srcore.db
from srcore.outbound.policy import AddressPolicy
from srcore.outbound.sender import PooledSender
from srcore.signatures import generate_secret
from srcore.testing import serving
from srcore.webhooks import emit
from srcore.webhooks.delivery import claim_deliveries, claim_outbox
from srcore.webhooks.models import Delivery, OutboxRow, Subscription
from srcore.webhooks.worker import Worker

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LOOPBACK = AddressPolicy.from_networks(["127.0.0.0/8"])


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def receiver() -> Iterator[Any]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            self.server.bodies.append(body)  # type: ignore[attr-defined]
            script = self.server.script  # type: ignore[attr-defined]
            self.send_response(script.pop(0) if script else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.bodies = []  # type: ignore[attr-defined]
    server.script = []  # type: ignore[attr-defined]
    server.url = f"http://127.0.0.1:{server.server_port}/hook"  # type: ignore[attr-defined]
    with serving(server):
        yield server


pytestmark = pytest.mark.usefixtures("clean_webhooks")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def worker(app: Any, clock: Clock) -> Iterator[Worker]:
    w = Worker(app, http=PooledSender(LOOPBACK), policy=LOOPBACK, clock=clock, poll_interval=0.01)
    try:
        yield w
    finally:
        w.close()


def subscribe(db: Any, url: str) -> Subscription:
    sub = Subscription(
        url=url, events="thing:created", scopes="sample/things:RW", secret=generate_secret()
    )
    db.add(sub)
    db.commit()
    return sub


def emit_committed(app: Any, data: dict[str, Any]) -> None:
    with app.app_context():
        emit("thing:created", data)
        srcore.db.session.commit()


def test_emit_then_one_cycle_delivers(
    app: Any, db: Any, receiver: Any, worker: Worker, caplog: pytest.LogCaptureFixture
) -> None:
    subscribe(db, receiver.url)
    emit_committed(app, {"id": 1})
    assert app.extensions["srcore.webhooks"].dispatcher.wakeup.is_set()
    with caplog.at_level(logging.INFO, logger="srcore.webhooks"):
        assert worker.drain() == 2  # one outbox row fanned out, one delivery recorded
    [body] = receiver.bodies
    assert json.loads(body)["data"] == {"id": 1}
    delivery = db.scalars(select(Delivery)).one()
    assert delivery.status == "delivered"
    assert f"delivered thing:created {delivery.message_id} to {receiver.url} in " in caplog.text
    assert worker.drain() == 0


def test_retry_waits_for_its_time(
    app: Any, db: Any, receiver: Any, worker: Worker, clock: Clock,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    subscribe(db, receiver.url)
    receiver.script = [503]
    emit_committed(app, {"id": 2})
    with caplog.at_level(logging.INFO, logger="srcore.webhooks"):
        worker.drain()
    delivery = db.scalars(select(Delivery)).one()
    assert f"retrying {delivery.message_id} in 5 s: 503" in caplog.text
    assert worker.drain() == 0  # not due yet
    clock.now = T0 + timedelta(seconds=10)
    assert worker.drain() == 1  # recorded
    db.refresh(delivery)
    assert (delivery.status, delivery.attempts) == ("delivered", 2)
    assert len(receiver.bodies) == 2


def test_claims_are_leased(app: Any, db: Any, receiver: Any) -> None:
    subscribe(db, receiver.url)
    for i in range(3):
        emit_committed(app, {"id": i})
    lease = timedelta(minutes=5)
    first = claim_outbox(db, now=T0, lease=lease, limit=2)
    assert len(first) == 2
    second = claim_outbox(db, now=T0, lease=lease, limit=10)
    assert len(second) == 1 and not set(first) & set(second)
    assert claim_outbox(db, now=T0, lease=lease, limit=10) == []
    # A crashed worker's rows come back when the lease ends.
    assert len(claim_outbox(db, now=T0 + lease + timedelta(seconds=1), lease=lease, limit=10)) == 3


def test_deliveries_claimed_once(app: Any, db: Any, receiver: Any, worker: Worker) -> None:
    subscribe(db, receiver.url)
    subscribe(db, receiver.url)
    emit_committed(app, {"id": 1})
    [outbox_id] = claim_outbox(db, now=T0, lease=timedelta(minutes=5), limit=10)
    from srcore.webhooks.fanout import fan_out

    ids = fan_out(db, [outbox_id], manifest=app.extensions["srcore"].manifest, now=T0)
    assert len(ids) == 2
    lease = timedelta(minutes=5)
    assert claim_deliveries(db, now=T0, lease=lease, limit=10) == sorted(ids)
    assert claim_deliveries(db, now=T0, lease=lease, limit=10) == []


# SKIP LOCKED is PostgreSQL's; on SQLite one worker runs and claims alone.
@pytest.mark.parametrize("srcore_backend", ["postgresql"], indirect=True)
def test_skip_locked_on_postgresql(app: Any, db: Any, srcore_backend: str) -> None:
    for i in range(3):
        emit_committed(app, {"id": i})
    other = app.extensions["srcore"].db.session()
    try:
        locked = other.scalars(
            select(OutboxRow.id).order_by(OutboxRow.id).limit(1).with_for_update()
        ).one()
        claimed = claim_outbox(db, now=T0, lease=timedelta(minutes=5), limit=10)
        assert len(claimed) == 2 and locked not in claimed  # no waiting on the locked row
    finally:
        other.rollback()
        other.close()


def test_run_stops_when_told(app: Any, db: Any, receiver: Any, worker: Worker) -> None:
    subscribe(db, receiver.url)
    emit_committed(app, {"id": 1})
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 10
    while not receiver.bodies and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    app.extensions["srcore.webhooks"].dispatcher.wakeup.set()
    thread.join(timeout=10)
    assert not thread.is_alive()
    assert len(receiver.bodies) == 1
    assert db.scalars(select(Delivery.status)).one() == "delivered"
    worker.run(stop)  # returns at once


def test_a_step_failing_every_poll_logs_its_traceback_once(
    worker: Worker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk (or a database away) fails every poll: the log gets the traceback once,
    a line when the reason changes, and a line when steps work again, not a traceback per
    poll that buries the rest of the log."""
    import sqlite3

    reasons = iter(["database or disk is full"] * 20 + ["disk I/O error"] * 5)

    def step(session: Any) -> tuple[int, int]:
        reason = next(reasons, None)
        if reason is None:
            return 0, 0
        raise sqlite3.OperationalError(reason)

    monkeypatch.setattr(worker, "_step", step)
    steps = iter(range(30))
    caplog.set_level(logging.WARNING, logger="srcore.webhooks")
    worker._loop(lambda: next(steps, None) is not None)
    records = [r for r in caplog.records if r.name.startswith("srcore.webhooks")]
    assert len([r for r in records if r.exc_info]) == 1
    lines = [r.getMessage() for r in records if not r.exc_info]
    assert lines == [
        "webhook worker steps still fail: OperationalError: disk I/O error",
        "webhook worker steps work again",
    ]
