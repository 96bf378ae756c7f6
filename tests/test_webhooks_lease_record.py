"""A worker records an attempt at its loop's next step, after the request ended; that step may
first wait for another worker's claim (up to ``CLAIM_WAIT``) and fan out. An attempt recorded
after its lease has ended may meanwhile have been claimed and sent again by another worker,
so a lane starts a request only while it can end that long before the lease, on SQLite and
PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import update

import srcore.webhooks.worker as worker_module
from srcore.db import utcnow
from srcore.outbound import Exchange
from srcore.webhooks.delivery import CLAIM_WAIT
from srcore.webhooks.models import Delivery, OutboxRow, Subscription
from srcore.webhooks.outbox import insert_event
from srcore.webhooks.settings import settings_for
from srcore.webhooks.worker import DEFAULT_LEASE, RECORD_WITHIN, Worker

pytestmark = pytest.mark.usefixtures("clean_webhooks")

#: Bounds the waits for a lane's thread.
PATIENCE = 20


class Receiver:
    """Answers 204 at once; records each request's ``webhook-id``."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, deadline: float
    ) -> Exchange:
        self.ids.append(headers["webhook-id"])
        return Exchange(status=204, headers={})

    def close(self) -> None:
        pass


def one_delivery(app: Any, owner_id: int) -> int:
    """A subscription of *owner_id*, one event fanned out to it; the delivery's id."""
    with app.extensions["srcore"].db.transaction() as session:
        sub = Subscription(
            owner_id=owner_id,
            url="https://hooks.example.org/lease",
            events="thing:created",
            secret="whsec_" + "A" * 32,
        )
        session.add(sub)
        session.flush()
        outbox_id = insert_event(session, "thing:created", {"id": 1, "name": "one"})
        fanned_out = update(OutboxRow).where(OutboxRow.id == outbox_id)
        session.execute(fanned_out.values(fanned_out_at=utcnow()))
        row = Delivery(subscription_id=sub.id, outbox_id=outbox_id, next_attempt_at=utcnow())
        session.add(row)
        session.flush()
        return row.id


def step(worker: Worker, app: Any) -> None:
    with app.extensions["srcore"].db.session() as session:
        worker._step(session)


def finished(worker: Worker, count: int) -> None:
    deadline = time.monotonic() + PATIENCE
    while worker._finished.qsize() < count:
        assert time.monotonic() < deadline, "the lane never finished"
        time.sleep(0.01)


def record(worker: Worker, app: Any) -> None:
    with app.extensions["srcore"].db.session() as session:
        worker._record(session, worker._finished.qsize())


def test_a_request_that_could_be_recorded_only_after_its_lease_is_not_started(
    app: Any, user: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lane waited for a sending slot until a full claim wait before its last moment: its
    request would end with too little of the lease left for the loop to record it if the
    loop's next step waits for a claim. Here it does, and another worker claims the row once
    the lease has ended: the request must not have started, or the receiver gets it twice.
    Before, a lane sent while its request could end a second before the lease."""
    assert timedelta(seconds=CLAIM_WAIT) < RECORD_WITHIN
    did = one_delivery(app, user.id)
    receiver = Receiver()
    skew = [0.0]  # the lane's time runs ahead: it waited this long for its slot
    fake = SimpleNamespace(
        monotonic=lambda: time.monotonic() + skew[0], perf_counter=time.perf_counter
    )
    monkeypatch.setattr(worker_module, "time", fake)
    held = Worker(app, http=receiver, trusted_http=receiver, poll_interval=0.05)
    later = Worker(
        app,
        http=receiver,
        trusted_http=receiver,
        poll_interval=0.05,
        clock=lambda: utcnow() + DEFAULT_LEASE + timedelta(seconds=1),
    )
    try:
        held._slots = threading.Semaphore(0)  # every sending slot busy
        step(held, app)
        timeout = held.settings.timeout
        skew[0] = (DEFAULT_LEASE - timeout - timedelta(seconds=CLAIM_WAIT)).total_seconds()
        held._slots.release()
        finished(held, 1)
        # Its loop waits for a claim; the lease ends; the other worker claims the row.
        step(later, app)
        finished(later, 1)
        record(held, app)
        record(later, app)
    finally:
        held.close()
        later.close()
    with app.extensions["srcore"].db.transaction() as session:
        sent = session.get(Delivery, did)
        assert sent is not None
        assert (sent.status, sent.attempts, sent.claimed_until) == ("delivered", 1, None)
        assert receiver.ids == [sent.message_id]


def test_a_lease_must_leave_room_for_the_record(app: Any) -> None:
    """A lease no longer than webhook-timeout and the record's margin would let no request
    start at all: the worker refuses it when built."""
    timeout = settings_for(app).timeout
    with pytest.raises(ValueError, match="must outlast webhook-timeout"):
        Worker(app, lease=timeout + RECORD_WITHIN)
    Worker(app, lease=timeout + RECORD_WITHIN + timedelta(seconds=1)).close()
