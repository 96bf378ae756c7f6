"""What a worker records applies only to rows still under the claim it sent them under, on
SQLite and PostgreSQL: a cancellation made or another worker's claim taken while an attempt
was in flight is not undone when that attempt is recorded, a redelivery is not taken while
one is in flight, and a delivery deleted meanwhile takes nothing else of the batch with it."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from srcore.db import utcnow
from srcore.identity.protocol import RevocationEvent
from srcore.outbound import Exchange
from srcore.webhooks.accounts import after_revocations
from srcore.webhooks.delivery import claim_deliveries, load_jobs, record
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, OutboxRow, Subscription
from srcore.webhooks.outbox import insert_event
from srcore.webhooks.settings import WebhookSettings
from srcore.webhooks.worker import Worker

pytestmark = pytest.mark.usefixtures("clean_webhooks")

HOOK = "https://hooks.example.org/claims"


class Held:
    """A receiver whose first request waits for :attr:`release` and then answers 500; every
    later one answers 204 at once. It records the ``webhook-id`` of each request."""

    def __init__(self) -> None:
        self.arrived = threading.Event()
        self.release = threading.Event()
        self.ids: list[str] = []

    def post(
        self, url: str, headers: Mapping[str, str], body: bytes, *, deadline: float
    ) -> Exchange:
        self.ids.append(headers["webhook-id"])
        if len(self.ids) > 1:
            return Exchange(status=204, headers={})
        self.arrived.set()
        assert self.release.wait(20), "the test never released the first request"
        return Exchange(status=500, headers={}, body=b"busy")

    def close(self) -> None:
        pass


def pending_delivery(app: Any, owner_id: int) -> tuple[int, int]:
    """A subscription of *owner_id* and one delivery of it, due now."""
    with app.extensions["srcore"].db.transaction() as session:
        sub = Subscription(
            owner_id=owner_id,
            client_id="srcore-test-client",  # make_token's: the API's tokens see it
            url=HOOK,
            events="thing:created",
            secret="whsec_" + "A" * 32,
        )
        session.add(sub)
        session.flush()
        outbox_id = insert_event(session, "thing:created", {"id": 1, "name": "one"})
        fanned_out = update(OutboxRow).where(OutboxRow.id == outbox_id)
        session.execute(fanned_out.values(fanned_out_at=utcnow()))  # as fan_out leaves it
        delivery = Delivery(subscription_id=sub.id, outbox_id=outbox_id, next_attempt_at=utcnow())
        session.add(delivery)
        session.flush()
        return sub.id, delivery.id


def while_in_flight(app: Any, receiver: Held, meanwhile: Any) -> None:
    """Run a worker until nothing is left to do; call *meanwhile* while its first request
    is in flight, then let that request fail."""
    worker = Worker(app, http=receiver, trusted_http=receiver, poll_interval=0.05)
    done = threading.Thread(target=worker.drain, kwargs={"until": time.monotonic() + 30})
    done.start()
    try:
        assert receiver.arrived.wait(20), "the worker never sent the delivery"
        meanwhile()
    finally:
        receiver.release.set()
        done.join(40)
        worker.close()
    assert not done.is_alive()


def delivery(app: Any, delivery_id: int) -> Delivery:
    with app.extensions["srcore"].db.transaction() as session:
        found = session.get(Delivery, delivery_id)
        assert found is not None
        session.expunge(found)
        return found


def test_a_redelivery_asked_for_while_in_flight_waits_for_its_outcome(
    app: Any, client: Any, make_token: Any, user: Any
) -> None:
    """The owner asks for a delivery again while a worker is sending it: a 409 says so, the
    attempt in flight is recorded as it ended (a redelivery taking its place would have lost
    that outcome, or been lost under it), and once it is, a redelivery is taken and sent."""
    sid, did = pending_delivery(app, user.id)
    receiver = Held()
    headers = {"Authorization": f"Bearer {make_token('sample/things:RW', user=user)}"}
    path = f"/api/webhooks/{sid}/deliveries/{did}/redeliver"
    refused: list[Any] = []
    while_in_flight(app, receiver, lambda: refused.append(client.post(path, headers=headers)))
    assert refused[0].status_code == 409, refused[0].get_data(as_text=True)
    assert "being sent right now" in refused[0].get_json()["errors"][0]["reason"]
    failed = delivery(app, did)
    assert (failed.status, failed.attempts, failed.last_status_code) == ("pending", 1, 500)
    assert failed.manual_status is None and failed.next_attempt_at > utcnow()

    response = client.post(path, headers=headers)
    assert response.status_code == 202, response.get_data(as_text=True)
    worker = Worker(app, http=receiver, trusted_http=receiver, poll_interval=0.05)
    try:
        worker.drain(until=time.monotonic() + 30)
    finally:
        worker.close()
    sent = delivery(app, did)
    assert receiver.ids == [sent.message_id, sent.message_id]
    assert (sent.status, sent.attempts, sent.claimed_until) == ("delivered", 1, None)
    with app.extensions["srcore"].db.transaction() as session:
        logged = session.scalars(select(Attempt.response_status).order_by(Attempt.id)).all()
    assert logged == [500, 204]


def test_a_suspension_while_in_flight_cancels_for_good(app: Any, user: Any) -> None:
    """meta suspends the owner while an attempt is in flight: the cancelled delivery is not
    made pending again by that attempt's failure, so nothing is retried to the account."""
    _sid, did = pending_delivery(app, user.id)
    receiver = Held()
    suspend = RevocationEvent(7, "suspend", str(user.id))
    while_in_flight(app, receiver, lambda: after_revocations(app, [suspend]))
    assert delivery(app, did).status == DeliveryStatus.cancelled
    assert len(receiver.ids) == 1


def test_a_claim_taken_over_after_its_lease_is_not_overwritten(app: Any, user: Any) -> None:
    """A worker whose lease ran out before it recorded leaves the row to the worker that
    claimed it since; a row still under its claim is recorded."""
    _sid, did = pending_delivery(app, user.id)
    db = app.extensions["srcore"].db
    now, lease = utcnow(), timedelta(minutes=5)
    with db.session() as session:
        assert claim_deliveries(session, now=now, lease=lease, limit=10) == [did]
        (job,) = load_jobs(session, [did])
        session.commit()
    job.exchange, job.now, job.headers = Exchange(status=503, headers={}), now, {}
    later = now + lease + timedelta(seconds=1)  # the next worker's claim, after the lease
    with db.transaction() as session:
        session.execute(update(Delivery).where(Delivery.id == did).values(claimed_until=later))
    with db.session() as session:
        record(session, [job], config=WebhookSettings(), rng=random.Random(1))
    taken = delivery(app, did)
    assert (taken.status, taken.attempts, taken.claimed_until) == ("pending", 0, later)
    assert taken.last_status_code is None

    job.claimed_until = later  # as the next worker loaded it
    with db.session() as session:
        record(session, [job], config=WebhookSettings(), rng=random.Random(1))
    retried = delivery(app, did)
    assert (retried.status, retried.attempts, retried.claimed_until) == ("pending", 1, None)
    assert retried.last_status_code == 503


def test_a_subscription_deleted_while_in_flight_leaves_the_rest_of_the_batch_recorded(
    app: Any, user: Any
) -> None:
    """Its owner deletes a webhook while its delivery is in flight: the batch that delivery
    is recorded with still records every other delivery (once), logging no attempt for the
    deleted one; before, the attempt's foreign key failed the whole batch, and the others
    were sent again when their leases ended."""
    gone, _ = pending_delivery(app, user.id)
    _kept, kept = pending_delivery(app, user.id)
    db = app.extensions["srcore"].db
    with db.session() as session:
        claimed = claim_deliveries(session, now=utcnow(), lease=timedelta(minutes=5), limit=10)
        jobs = load_jobs(session, claimed)
        session.commit()
    assert len(jobs) == 2
    with db.transaction() as session:
        session.delete(session.get(Subscription, gone))
    for job in jobs:
        job.exchange, job.now, job.headers = Exchange(status=204, headers={}), utcnow(), {}
    with db.session() as session:
        record(session, jobs, config=WebhookSettings(), rng=random.Random(1))
    recorded = delivery(app, kept)
    assert (recorded.status, recorded.attempts, recorded.claimed_until) == ("delivered", 1, None)
    with db.transaction() as session:
        logged = session.scalars(select(Attempt.delivery_id)).all()
    assert logged == [kept]


def test_an_owners_change_while_in_flight_is_what_the_record_judges(app: Any, user: Any) -> None:
    """A webhook failing for days is about to be disabled; while an attempt is in flight its
    owner fixes the receiver and enables it afresh (its failures forgotten). The attempt then
    fails: that is the first failure of the webhook as it is now, not the last straw of the
    old run, so it stays enabled and its owner is not mailed."""
    sid, did = pending_delivery(app, user.id)
    db = app.extensions["srcore"].db
    now = utcnow()
    with db.transaction() as session:
        old = update(Subscription).where(Subscription.id == sid)
        session.execute(old.values(failing_since=now - timedelta(days=3)))
    with db.session() as session:
        claim_deliveries(session, now=now, lease=timedelta(minutes=5), limit=10)
        (job,) = load_jobs(session, [did])
        session.commit()
    with db.transaction() as session:  # as the owner's "enable" leaves it
        session.execute(old.values(enabled=True, failing_since=None, disabled_reason=None))
    job.exchange, job.now, job.headers = Exchange(status=500, headers={}), now, {}
    told: list[int] = []
    settings = WebhookSettings(notifier=lambda _s, sub, _why: told.append(sub.id))
    with db.session() as session:
        record(session, [job], config=settings, rng=random.Random(1))
    with db.transaction() as session:
        sub = session.get(Subscription, sid)
        assert sub is not None
        assert (sub.enabled, sub.failing_since, told) == (True, now, [])


def test_a_webhook_disabled_while_in_flight_keeps_its_delivery_for_when_it_is_enabled(
    app: Any, client: Any, make_token: Any, user: Any
) -> None:
    """Its owner disables a webhook while an attempt is in flight, and the attempt fails: the
    delivery is not given up for good (only a failure judged against the webhook could do
    that); enabled again, the webhook receives it."""
    sid, did = pending_delivery(app, user.id)
    receiver = Held()
    headers = {"Authorization": f"Bearer {make_token('sample/things:RW', user=user)}"}

    def switch(enabled: bool) -> None:
        response = client.patch(f"/api/webhooks/{sid}", json={"enabled": enabled}, headers=headers)
        assert response.status_code == 200, response.get_data(as_text=True)

    while_in_flight(app, receiver, lambda: switch(False))
    assert delivery(app, did).status == "pending"
    switch(True)
    with app.extensions["srcore"].db.transaction() as session:  # its retry is due now
        session.execute(update(Delivery).values(next_attempt_at=utcnow()))
    worker = Worker(app, http=receiver, trusted_http=receiver, poll_interval=0.05)
    try:
        worker.drain(until=time.monotonic() + 30)
    finally:
        worker.close()
    assert delivery(app, did).status == "delivered"
    assert len(receiver.ids) == 2
