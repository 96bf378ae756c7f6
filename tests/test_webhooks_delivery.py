"""Fan-out, sending and recording against real receivers on 127.0.0.1, on SQLite and
PostgreSQL."""

from __future__ import annotations

import json
import logging
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import standardwebhooks
from sqlalchemy import func, select

from srcore.mail import Mailer
from srcore.outbound.policy import AddressPolicy
from srcore.outbound.sender import PooledSender, Sender
from srcore.signatures import generate_secret
from srcore.testing import create_user
from srcore.webhooks.delivery import load_jobs, prune_log, record
from srcore.webhooks.fanout import fan_out
from srcore.webhooks.models import (
    Attempt,
    Delivery,
    DeliveryStatus,
    OutboxRow,
    Subscription,
)
from srcore.webhooks.outbox import insert_event
from srcore.webhooks.settings import WebhookSettings, settings_for
from srcore.webhooks.worker import send

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
LOOPBACK = AddressPolicy.from_networks(["127.0.0.0/8"])


class Receiver:
    """A webhook receiver on 127.0.0.1 answering with scripted responses (default 204)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(min(length, 1 << 20))
                receiver.requests.append(
                    (self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                )
                status, headers, answer = (
                    receiver.script.pop(0) if receiver.script else (204, {}, b"")
                )
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,))

    def __enter__(self) -> Receiver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as r:
        yield r


pytestmark = pytest.mark.usefixtures("clean_webhooks")


class Clock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Sent:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    def send(self, message: Any) -> None:
        self.messages.append(message)


def subscribe(db: Any, url: str, **fields: Any) -> Subscription:
    values: dict[str, Any] = {
        "owner_id": None,
        "url": url,
        "events": "thing:created",
        "scopes": "sample/things:RO",
        "secret": generate_secret(),
    }
    values.update(fields)
    sub = Subscription(**values)
    db.add(sub)
    db.commit()
    return sub


def emit_and_fan_out(app: Any, db: Any, data: dict[str, Any] | None = None, **kw: Any) -> list[int]:
    outbox_id = insert_event(db, "thing:created", data or {"id": 1, "name": "x"}, now=T0, **kw)
    db.commit()
    return fan_out(db, [outbox_id], manifest=app.extensions["srcore"].manifest, now=T0)


@dataclass
class Outcome:
    """What one attempt at a delivery did, read back from the database and its log."""

    delivered: bool
    status: int | None
    error: str | None
    retry_at: datetime | None
    disabled: bool
    #: False when there was nothing to send (already done, cancelled, unknown id).
    attempted: bool


def deliver_now(
    db: Any,
    delivery_ids: Sequence[int],
    clock: Clock,
    settings: WebhookSettings | None = None,
    *,
    http: Sender,
    trusted_http: Sender | None = None,
) -> list[Outcome]:
    """One attempt at each of *delivery_ids* now, as the worker makes them: read the
    jobs, send each, record them all; an outcome per id, in order."""
    config = settings or WebhookSettings()
    logged = {i: _attempts(db, i) for i in delivery_ids}
    jobs = load_jobs(db, delivery_ids)
    for job in jobs:
        send(job, (trusted_http or http) if job.trusted else http, config, clock)
        if job.failure is not None:
            raise job.failure
    record(db, jobs, config=config, rng=random.Random(3))
    db.expire_all()
    return [_outcome(db, i, logged[i]) for i in delivery_ids]


def _attempts(db: Any, delivery_id: int) -> list[Attempt]:
    query = select(Attempt).where(Attempt.delivery_id == delivery_id).order_by(Attempt.id)
    return list(db.scalars(query))


def _outcome(db: Any, delivery_id: int, before: list[Attempt]) -> Outcome:
    delivery = db.get(Delivery, delivery_id)
    if delivery is None:
        return Outcome(False, None, None, None, False, attempted=False)
    done = delivery.status == DeliveryStatus.delivered.value
    disabled = not delivery.subscription.enabled
    attempts = _attempts(db, delivery_id)
    if len(attempts) == len(before):
        return Outcome(done, None, None, None, disabled, attempted=False)
    last = attempts[-1]
    error = None if done else last.error or f"HTTP {last.response_status}"
    pending = delivery.status == DeliveryStatus.pending.value
    retry_at = delivery.next_attempt_at if pending else None
    return Outcome(done, last.response_status, error, retry_at, disabled, attempted=True)


def deliver(
    db: Any,
    delivery_id: int,
    clock: Clock,
    settings: WebhookSettings | None = None,
    policy: AddressPolicy = LOOPBACK,
) -> Outcome:
    sender = PooledSender(policy)
    try:
        [outcome] = deliver_now(db, [delivery_id], clock, settings, http=sender)
        return outcome
    finally:
        sender.close()


# -- fan-out ----------------------------------------------------------------------------


def test_fan_out_matches_event_scope_and_resource(app: Any, db: Any) -> None:
    url = "http://127.0.0.1:9/hook"
    ok = subscribe(db, url)
    rw = subscribe(db, url, scopes="sample/things:RW")
    on_resource = subscribe(db, url, resource="thing:1")
    subscribe(db, url, resource="thing:2")
    subscribe(db, url, scopes="other/things:RW")
    subscribe(db, url, scopes="")
    subscribe(db, url, events="thing:deleted")
    subscribe(db, url, enabled=False)
    subscribe(db, url, events="thing:created_later")

    outbox_id = insert_event(db, "thing:created", {"id": 1}, resource="thing:1", now=T0)
    db.commit()
    ids = fan_out(db, [outbox_id], manifest=app.extensions["srcore"].manifest, now=T0)
    got = {d.subscription_id for d in db.scalars(select(Delivery).where(Delivery.id.in_(ids)))}
    assert got == {ok.id, rw.id, on_resource.id}
    assert db.get(OutboxRow, outbox_id).fanned_out_at == T0
    # Idempotent: a second fan-out of the same row makes nothing.
    assert fan_out(db, [outbox_id], manifest=app.extensions["srcore"].manifest) == []
    assert db.scalar(select(func.count()).select_from(Delivery)) == 3
    messages = db.scalars(select(Delivery.message_id)).all()
    assert len(set(messages)) == 3 and all(m.startswith("msg_") for m in messages)


# -- sending and recording ------------------------------------------------------------------------


def test_delivered_signed_and_logged(
    app: Any, db: Any, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    sub = subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db, {"id": 7, "name": "seven"})
    with caplog.at_level(logging.INFO, logger="srcore.webhooks"):
        result = deliver(db, delivery_id, Clock())
    assert result.delivered and result.status == 204 and result.error is None
    [(path, headers, body)] = receiver.requests
    assert path == "/hook"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("srcore-webhooks")
    assert headers["webhook-timestamp"] == str(int(T0.timestamp()))
    document = json.loads(body)
    assert document == {
        "type": "thing:created",
        "timestamp": T0.isoformat(),
        "data": {"id": 7, "name": "seven"},
    }
    # The reference library accepts the signature (its own clock: re-sign is not needed
    # because the tolerance check is separate; check the signature with the timestamp sent).
    wh = standardwebhooks.Webhook(sub.secret)
    expected = wh.sign(headers["webhook-id"], T0, body.decode())
    assert headers["webhook-signature"] == expected

    delivery = db.get(Delivery, delivery_id)
    db.refresh(delivery)
    assert (delivery.status, delivery.attempts, delivery.delivered_at) == ("delivered", 1, T0)
    [attempt] = db.scalars(select(Attempt)).all()
    logged = json.loads(attempt.request_headers)
    assert "webhook-signature" not in logged and logged["webhook-id"] == delivery.message_id
    assert attempt.response_status == 204 and attempt.error is None
    assert json.loads(attempt.request_body) == document
    assert f"delivered thing:created {delivery.message_id} to {receiver.url} in" in caplog.text
    # A delivered delivery is not sent twice.
    again = deliver(db, delivery_id, Clock())
    assert again.delivered and not again.attempted
    assert len(receiver.requests) == 1


def test_standardwebhooks_verifies_a_live_delivery(app: Any, db: Any, receiver: Receiver) -> None:
    sub = subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db)
    now = datetime.now(UTC)  # the reference library checks the timestamp with its own clock
    deliver(db, delivery_id, Clock(now))
    [(_, headers, body)] = receiver.requests
    verified = standardwebhooks.Webhook(sub.secret).verify(body, headers)
    assert verified["type"] == "thing:created"


def test_rotation_sends_both_signatures(app: Any, db: Any, receiver: Receiver) -> None:
    old = generate_secret()
    sub = subscribe(
        db, receiver.url, previous_secret=old, previous_secret_expires=T0 + timedelta(hours=1)
    )
    [first, second] = [emit_and_fan_out(app, db)[0], emit_and_fan_out(app, db)[0]]
    deliver(db, first, Clock())
    deliver(db, second, Clock(T0 + timedelta(hours=2)))  # the overlap is over
    (_, h1, b1), (_, h2, _b2) = receiver.requests
    assert len(h1["webhook-signature"].split()) == 2
    assert len(h2["webhook-signature"].split()) == 1
    for secret in (sub.secret, old):
        wh = standardwebhooks.Webhook(secret)
        assert wh.sign(h1["webhook-id"], T0, b1.decode()) in h1["webhook-signature"].split()


def test_failure_is_retried_per_schedule_then_given_up(
    app: Any, db: Any, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db)
    big = b"x" * 100_000
    receiver.script = [(503, {"retry-after": "1"}, big)] * 3
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="srcore.webhooks"):
        result = deliver(db, delivery_id, clock)
    assert not result.delivered and result.status == 503 and result.error == "HTTP 503"
    assert result.retry_at is not None
    assert timedelta(seconds=4) <= result.retry_at - T0 <= timedelta(seconds=6)
    delivery = db.get(Delivery, delivery_id)
    db.refresh(delivery)
    assert delivery.status == "pending" and delivery.next_attempt_at == result.retry_at
    assert f"retrying {delivery.message_id} in 5 s: 503" in caplog.text
    attempt = db.scalars(select(Attempt)).one()
    assert len(attempt.response_body) == 16 * 1024  # capped
    assert json.loads(attempt.response_headers)["retry-after"] == "1"

    # The last scheduled attempt gives up (the subscription has not failed long enough).
    delivery.attempts = 9
    db.commit()
    settings = WebhookSettings(disable_after=timedelta(days=30))
    result = deliver(db, delivery_id, clock, settings)
    db.refresh(delivery)
    assert result.retry_at is None and not result.disabled
    assert delivery.status == "failed" and delivery.attempts == 10


def test_the_settings_schedule_is_used(app: Any, db: Any, receiver: Receiver) -> None:
    subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db)
    receiver.script = [(500, {}, b"")] * 3
    steps = (timedelta(0), timedelta(seconds=1), timedelta(seconds=2))
    settings = WebhookSettings(schedule=steps)
    clock = Clock()
    first = deliver(db, delivery_id, clock, settings)
    assert first.retry_at is not None
    assert timedelta(seconds=0.8) <= first.retry_at - T0 <= timedelta(seconds=1.2)
    clock.now = T0 + timedelta(seconds=5)
    second = deliver(db, delivery_id, clock, settings)
    assert second.retry_at is not None
    assert timedelta(seconds=1.7) <= second.retry_at - clock.now <= timedelta(seconds=2.3)
    third = deliver(db, delivery_id, clock, settings)  # the last of three: given up
    assert third.retry_at is None and not third.disabled
    assert db.scalar(select(Delivery.status).where(Delivery.id == delivery_id)) == "failed"


def test_a_batch_is_sent_and_recorded_each(app: Any, db: Any, receiver: Receiver) -> None:

    sub = subscribe(db, receiver.url)
    gone = subscribe(db, receiver.url + "/gone", events="thing:deleted")
    ids = [emit_and_fan_out(app, db, {"id": i, "name": "x"})[0] for i in range(6)]
    # Two deliveries per subscription of one event, in one batch.
    ids = sorted(ids)
    done = deliver(db, ids[0], Clock())
    assert done.delivered
    db.execute(
        Delivery.__table__.update().where(Delivery.id.in_(ids[4:])).values(subscription_id=gone.id)
    )
    db.commit()
    receiver.script = [(500, {}, b"")]  # one of the four first requests fails
    sessions = PooledSender(LOOPBACK)
    results = deliver_now(db, [*ids, 999_999], Clock(), http=sessions)
    sessions.close()
    assert len(results) == len(ids) + 1
    assert results[0].delivered and not results[0].attempted  # delivered before
    assert not results[-1].attempted and not results[-1].delivered  # no such delivery
    sent = results[1:-1]
    assert all(r.attempted for r in sent)
    assert sum(1 for r in sent if r.delivered) == 4
    [failed] = [r for r in sent if not r.delivered]
    assert failed.status == 500 and failed.retry_at is not None
    assert len(receiver.requests) == 6
    attempts = db.scalar(select(func.count()).select_from(Attempt))
    assert attempts == 6
    statuses = list(db.scalars(select(Delivery.status)))
    assert statuses.count("delivered") == 5 and statuses.count("pending") == 1
    db.refresh(sub)
    assert sub.enabled  # failing_since: as if recorded one by one, in id order
    db.refresh(gone)
    assert gone.failing_since is None


def test_a_receivers_bytes_are_logged_as_text_any_database_takes(
    app: Any, db: Any, receiver: Receiver
) -> None:
    """NUL, invalid UTF-8 and binary header values in an answer are logged (PostgreSQL refuses
    NUL in text: the batch's record failed, and every delivery in it was sent again)."""
    subscribe(db, receiver.url)
    hostile, healthy = (emit_and_fan_out(app, db)[0] for _ in range(2))
    evil = {"X-Evil": "a\x00b", "X-Bin": "\xff\xfe"}
    receiver.script = [(500, evil, b"oops\x00\xff\xfe"), (204, {}, b"")]
    sessions = PooledSender(LOOPBACK)
    first, second = deliver_now(db, [hostile, healthy], Clock(), http=sessions)
    sessions.close()
    assert first.status == 500 and first.retry_at is not None and second.delivered
    [attempt] = _attempts(db, hostile)
    assert attempt.response_body == "oops\ufffd\ufffd\ufffd"
    headers = {k.lower(): v for k, v in json.loads(attempt.response_headers).items()}
    assert headers["x-evil"] == "a\x00b"  # escaped in the logged JSON


def test_a_receivers_headers_are_logged_up_to_the_body_cap(
    app: Any, db: Any, receiver: Receiver
) -> None:
    """A receiver chooses how many headers it answers and how long: up to 6 MiB an attempt,
    each logged, and shown in every page of the log. Those past the cap are left out."""
    subscribe(db, receiver.url)
    [delivery_id] = emit_and_fan_out(app, db)
    many = {f"X-Filler-{n:02}": "x" * 4000 for n in range(60)}
    receiver.script = [(500, many, b"")]
    assert deliver(db, delivery_id, Clock()).status == 500
    [attempt] = _attempts(db, delivery_id)
    logged = json.loads(attempt.response_headers)
    assert 0 < len(logged) < 10 and "X-Filler-00" in logged
    assert len(attempt.response_headers) < WebhookSettings().body_cap + 1024


def test_connection_refused_is_recorded(app: Any, db: Any) -> None:
    from srcore.testing import free_port

    subscribe(db, f"http://127.0.0.1:{free_port()}/")
    [delivery_id] = emit_and_fan_out(app, db)
    result = deliver(db, delivery_id, Clock())
    assert result.status is None and result.error is not None
    assert result.error.startswith("connection failed")
    assert db.scalars(select(Attempt.error)).one() == result.error


def test_410_disables_at_once(app: Any, db: Any, receiver: Receiver) -> None:
    sub = subscribe(db, receiver.url)
    [first] = emit_and_fan_out(app, db)
    [second] = emit_and_fan_out(app, db)
    receiver.script = [(410, {}, b"gone")]
    result = deliver(db, first, Clock())
    assert result.disabled and result.status == 410
    db.refresh(sub)
    assert not sub.enabled and "410" in (sub.disabled_reason or "")
    assert db.get(Delivery, second).status == DeliveryStatus.cancelled.value
    assert not deliver(db, second, Clock()).attempted
    assert len(receiver.requests) == 1


def test_failing_for_disable_after_disables_and_mails_the_owner(
    app: Any, db: Any, receiver: Receiver
) -> None:
    owner = create_user(app, "carol")
    sub = subscribe(db, receiver.url, owner_id=owner.id)
    service_sub = subscribe(db, receiver.url, owner_client="other-service")
    ids = emit_and_fan_out(app, db)
    sent = Sent()
    app.extensions["srcore_mail"] = Mailer(sent, sender="noreply@example.org")
    settings = settings_for(app)
    assert settings.disable_after == timedelta(days=3)
    receiver.script = [(500, {}, b"")] * 4
    clock = Clock()
    for delivery_id in ids:
        assert not deliver(db, delivery_id, clock, settings).disabled
    clock.now = T0 + timedelta(days=3, minutes=1)
    for delivery_id in ids:
        db.get(Delivery, delivery_id).next_attempt_at = clock.now
    db.commit()
    results = [deliver(db, delivery_id, clock, settings) for delivery_id in ids]
    assert all(r.disabled for r in results)
    db.refresh(sub)
    db.refresh(service_sub)
    assert not sub.enabled and not service_sub.enabled
    assert "failed since" in (sub.disabled_reason or "")
    # The user owner is mailed at the address in the service's user table; a service is not.
    [message] = sent.messages
    assert message["To"] == "carol@example.org"
    assert receiver.url in message.get_content()


def test_success_clears_failing_since(app: Any, db: Any, receiver: Receiver) -> None:
    sub = subscribe(db, receiver.url)
    [a] = emit_and_fan_out(app, db)
    [b] = emit_and_fan_out(app, db)
    receiver.script = [(500, {}, b"")]
    deliver(db, a, Clock())
    db.refresh(sub)
    assert sub.failing_since == T0
    deliver(db, b, Clock(T0 + timedelta(minutes=1)))
    db.refresh(sub)
    assert sub.failing_since is None


def test_prune_log(app: Any, db: Any, receiver: Receiver) -> None:
    subscribe(db, receiver.url)
    [a] = emit_and_fan_out(app, db)
    [b] = emit_and_fan_out(app, db)
    deliver(db, a, Clock(T0 - timedelta(days=20)))
    deliver(db, b, Clock(T0 - timedelta(days=1)))
    assert prune_log(db, now=T0, retention=timedelta(days=14)) == 1
    assert db.scalars(select(Attempt.delivery_id)).all() == [b]


# -- trusted (first-party) subscriptions --------------------------------------------------


def test_trusted_subscription_reaches_a_private_address_others_are_refused(
    app: Any, db: Any, receiver: Receiver
) -> None:
    strict = AddressPolicy()  # loopback refused
    plain = subscribe(db, receiver.url)
    first_party = subscribe(db, receiver.url, trusted=True)
    assert plain.trusted is False  # the default: nothing but code sets it
    ids = emit_and_fan_out(app, db)
    assert len(ids) == 2
    results = {}
    http, trusted_http = PooledSender(strict), PooledSender(None)
    try:
        for delivery_id in ids:
            [outcome] = deliver_now(
                db, [delivery_id], Clock(), http=http, trusted_http=trusted_http
            )
            results[db.get(Delivery, delivery_id).subscription_id] = outcome
    finally:
        http.close()
        trusted_http.close()
    assert results[first_party.id].delivered
    assert not results[plain.id].delivered
    assert "loopback" in (results[plain.id].error or "")
    assert len(receiver.requests) == 1


def test_a_batch_sends_trusted_subscriptions_through_the_trusted_sessions(
    app: Any, db: Any, receiver: Receiver
) -> None:
    from srcore.webhooks.worker import sender_for

    strict = AddressPolicy()  # loopback refused
    plain = subscribe(db, receiver.url)
    first_party = subscribe(db, receiver.url, trusted=True)
    ids = sorted(emit_and_fan_out(app, db) + emit_and_fan_out(app, db))
    assert len(ids) == 4
    subscription_of = {i: db.get(Delivery, i).subscription_id for i in ids}
    settings = WebhookSettings()
    sessions, trusted = sender_for(strict, settings), sender_for(None, settings)
    results = deliver_now(db, ids, Clock(), http=sessions, trusted_http=trusted)
    sessions.close()
    trusted.close()
    for delivery_id, result in zip(ids, results, strict=True):
        if subscription_of[delivery_id] == first_party.id:
            assert result.delivered
        else:
            assert subscription_of[delivery_id] == plain.id
            assert not result.delivered and "loopback" in (result.error or "")
    assert len(receiver.requests) == 2
