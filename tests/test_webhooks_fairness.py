"""Fairness: a receiver that trickles its answers holds up its own deliveries only.

One receiver answers a byte at a time (it would take far longer than ``webhook-timeout``),
another answers at once; every event goes to both. The healthy receiver must get every
event, in order, before the trickling receiver's first attempt has even ended, including
events emitted while that attempt is in flight. Nothing here reads a clock: both
receivers write what happens to one shared log, and the test compares positions in it.
"""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import func
from sqlalchemy import select as sql_select

import srcore.db
from srcore.outbound import Exchange
from srcore.outbound.policy import AddressPolicy
from srcore.signatures import generate_secret
from srcore.testing import serving
from srcore.webhooks import emit
from srcore.webhooks.models import Attempt, Delivery, Subscription
from srcore.webhooks.outbox import insert_event
from srcore.webhooks.settings import WebhookSettings
from srcore.webhooks.worker import Worker

LOOPBACK = AddressPolicy.from_networks(["127.0.0.0/8"])
#: webhook-timeout here; the trickling receiver sends a byte every TRICKLE_EVERY seconds
#: of a body it declares far longer than that allows.
DEADLINE = 4.0
TRICKLE_EVERY = 1.0
#: Events emitted before the worker starts, and while the first trickling attempt runs.
BEFORE, DURING = 10, 10
#: How long the test waits for something that should happen within a few seconds.
PATIENCE = 60.0
SECRET = generate_secret()


pytestmark = pytest.mark.usefixtures("clean_webhooks")


class Log:
    """What the receivers saw, in the order they saw it (the only clock here)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.entries: list[tuple[str, Any]] = []
        self.changed = threading.Condition(self.lock)

    def add(self, what: str, detail: Any = None) -> None:
        with self.changed:
            self.entries.append((what, detail))
            self.changed.notify_all()

    def wait_for(self, what: str, count: int = 1) -> None:
        with self.changed:
            found = self.changed.wait_for(
                lambda: sum(1 for w, _ in self.entries if w == what) >= count, PATIENCE
            )
        assert found, f"no {count} x {what!r} in {self.entries}"

    def first(self, what: str) -> int:
        with self.lock:
            return next(i for i, (w, _) in enumerate(self.entries) if w == what)

    def positions(self, what: str) -> list[tuple[int, Any]]:
        with self.lock:
            return [(i, d) for i, (w, d) in enumerate(self.entries) if w == what]


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def healthy(log: Log) -> Iterator[str]:
    """A receiver that answers 200 at once and logs each event's number."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            log.add("healthy", json.loads(body)["data"]["n"])
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    with serving(server):
        yield f"http://127.0.0.1:{server.server_port}/hook"


@pytest.fixture
def trickling(log: Log) -> Iterator[str]:
    """A receiver that answers 200 with a 1,000-byte body sent a byte per TRICKLE_EVERY.

    It logs ``trickle-start`` when a request has arrived and ``trickle-cut`` when the
    sender closed the connection on it (the end of that attempt, as the sender sees it),
    or ``trickle-gave-up`` if it stopped trickling first.
    """
    stop = threading.Event()
    listener = socket.create_server(("127.0.0.1", 0), backlog=16)
    listener.settimeout(0.1)

    def answer(conn: socket.socket) -> None:
        with conn:
            try:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                head, _, body = request.partition(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                while len(body) < length:
                    body += conn.recv(65536)
                log.add("trickle-start", json.loads(body)["data"]["n"])
                conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n")
                for _ in range(1000):
                    readable, _, _ = select.select([conn], [], [], TRICKLE_EVERY)
                    if readable and not conn.recv(1):
                        log.add("trickle-cut")
                        return
                    if stop.is_set():
                        break
                    conn.sendall(b"x")
            except OSError:
                log.add("trickle-cut")
                return
            log.add("trickle-gave-up")

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=answer, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/hook"
    finally:
        stop.set()
        thread.join(timeout=5)
        listener.close()


def subscribe(db: Any, url: str) -> int:
    sub = Subscription(
        url=url, events="thing:created", scopes="sample/things:RO", secret=generate_secret()
    )
    db.add(sub)
    db.commit()
    return int(sub.id)


def emit_events(app: Any, numbers: range) -> None:
    with app.app_context():
        for n in numbers:
            emit("thing:created", {"n": n})
            srcore.db.session.commit()


def attempts_of(db: Any, subscription_id: int) -> list[tuple[str, int, str | None]]:
    """(status, attempts, error) of each attempt made to *subscription_id*."""
    db.expire_all()
    rows = db.execute(
        sql_select(Delivery.status, Delivery.attempts, Attempt.error)
        .join(Attempt, Attempt.delivery_id == Delivery.id)
        .where(Delivery.subscription_id == subscription_id)
        .order_by(Attempt.id)
    ).all()
    db.rollback()
    return [tuple(row) for row in rows]


def test_a_trickling_receiver_delays_nobody_else(
    app: Any, db: Any, log: Log, healthy: str, trickling: str
) -> None:
    slow = subscribe(db, trickling)
    subscribe(db, healthy)
    emit_events(app, range(BEFORE))
    settings = WebhookSettings(
        timeout=timedelta(seconds=DEADLINE), connect_timeout=timedelta(seconds=1)
    )
    worker = Worker(app, policy=LOOPBACK, settings=settings, poll_interval=0.05)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        log.wait_for("trickle-start")
        emit_events(app, range(BEFORE, BEFORE + DURING))  # while the receiver trickles
        log.wait_for("trickle-cut")
        deadline = time.monotonic() + PATIENCE
        while not attempts_of(db, slow) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.wake.set()
        thread.join(timeout=PATIENCE)
        worker.close()
    assert not thread.is_alive()

    received = log.positions("healthy")
    assert [n for _, n in received] == list(range(BEFORE + DURING))  # all, in event order
    first_cut = log.first("trickle-cut")
    assert received[-1][0] < first_cut, log.entries
    assert log.positions("trickle-start")[0][1] == 0  # the trickled one was the first event
    assert not log.positions("trickle-gave-up")

    # The trickled attempt was cut at the deadline and is to be retried.
    status, attempts, error = attempts_of(db, slow)[0]
    assert (status, attempts) == ("pending", 1)
    assert error is not None and "timeout" in error
    db.expire_all()
    statuses = set(db.scalars(sql_select(Delivery.status).where(Delivery.subscription_id == slow)))
    assert statuses == {"pending"}


def test_a_claim_takes_a_bounded_share_of_one_subscription(
    app: Any, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A subscription with a backlog gets at most its share of a claim, so one backlog
    does not fill a worker while other subscriptions wait."""
    from datetime import UTC, datetime

    from srcore.webhooks import delivery
    from srcore.webhooks.delivery import claim_deliveries, claim_outbox
    from srcore.webhooks.fanout import fan_out

    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    lease = timedelta(minutes=5)
    backlog = subscribe(db, "http://127.0.0.1:9/backlog")
    other = subscribe(db, "http://127.0.0.1:9/other")
    emit_events(app, range(8))
    manifest = app.extensions["srcore"].manifest
    fan_out(db, claim_outbox(db, now=now, lease=lease, limit=100), manifest=manifest, now=now)
    owners = {d.id: d.subscription_id for d in db.scalars(sql_select(Delivery))}
    db.rollback()
    monkeypatch.setattr(delivery, "LANE", 2)
    claimed = claim_deliveries(db, now=now, lease=lease, limit=100)
    assert sorted(owners[i] for i in claimed) == [backlog, backlog, other, other]
    later = now + lease + timedelta(seconds=1)  # those claims have lapsed
    monkeypatch.setattr(delivery, "LANE", 3)
    again = claim_deliveries(db, now=later, lease=lease, limit=100)
    assert sorted(owners[i] for i in again) == [backlog] * 3 + [other] * 3
    for sid in (backlog, other):  # each one's oldest events first
        assert [i for i in again if owners[i] == sid] == sorted(
            i for i in owners if owners[i] == sid
        )[:3]


class Gated:
    """A sender whose requests to ``slow*`` hosts wait for :attr:`release` (bounded); every
    other request is answered 204 at once and noted in :attr:`fast`."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.fast = threading.Event()
        self.slow = threading.Semaphore(0)

    def post(self, url: str, headers: Any, body: bytes, *, deadline: float) -> Exchange:
        if "//slow" not in url:
            self.fast.set()
        else:
            self.slow.release()
            assert self.release.wait(2 * PATIENCE), "the test never released the slow receivers"
        return Exchange(status=204, headers={})

    def close(self) -> None:
        pass


def pending_to(db: Any, owner_id: int, url: str, count: int = 1) -> None:
    """A subscription of user *owner_id* to *url*, with *count* deliveries due now."""
    sub = Subscription(owner_id=owner_id, url=url, events="thing:created", secret=SECRET)
    db.add(sub)
    db.flush()
    for _ in range(count):
        outbox_id = insert_event(db, "thing:created", {"n": sub.id})
        due = srcore.db.utcnow()
        db.add(Delivery(subscription_id=sub.id, outbox_id=outbox_id, next_attempt_at=due))
    db.commit()


def another_subscriber_is_served(app: Any, db: Any, gate: Gated, worker: Worker) -> None:
    """Run *worker* until four requests to slow receivers hang, make another subscriber's
    delivery due, and see it sent before any of them ends; then let them end."""
    drain = threading.Thread(target=worker.drain, kwargs={"until": time.monotonic() + PATIENCE})
    drain.start()
    try:
        for _ in range(4):
            assert gate.slow.acquire(timeout=PATIENCE), "the slow requests were not sent"
        pending_to(db, 1002, "https://fast.example.org/hook")
        worker.wake.set()
        assert gate.fast.wait(PATIENCE), "the other subscriber waited for the slow receivers"
    finally:
        gate.release.set()
        drain.join(PATIENCE)
        worker.close()
    db.expire_all()


def small_worker(app: Any, gate: Gated) -> Worker:
    """Eight sending slots, two per receiver: one subscriber may hold four."""
    settings = WebhookSettings(concurrency=8, per_host=2, timeout=timedelta(seconds=60))
    return Worker(app, http=gate, trusted_http=gate, settings=settings, poll_interval=0.05)


def test_one_subscribers_many_slow_receivers_hold_half_the_worker_at_most(
    app: Any, db: Any
) -> None:
    """A subscriber whose webhooks point at many slow hosts (or one host under many names or
    ports) holds at most half of a worker's sending slots: another subscriber's delivery,
    made due while all of those requests hang, is sent before any of them ends."""
    gate = Gated()
    for n in range(8):
        pending_to(db, 1001, f"https://slow{n}.example.org/hook")
    another_subscriber_is_served(app, db, gate, small_worker(app, gate))
    statuses = db.scalars(sql_select(Delivery.status)).all()
    assert statuses == ["delivered"] * 9


def test_one_subscribers_backlog_leaves_room_to_claim_for_everyone_else(app: Any, db: Any) -> None:
    """The same subscriber with a backlog on more slow webhooks than the worker may hold
    claimed: it stops being claimed for once it holds half of that, so another subscriber's
    delivery, made due while its requests hang, is still claimed and sent."""
    gate = Gated()
    worker = small_worker(app, gate)
    worker.batch = 16  # it holds 8 x 16 claimed at most: half is 64
    for n in range(9):
        pending_to(db, 1001, f"https://slow{n}.example.org/hook", count=16)
    another_subscriber_is_served(app, db, gate, worker)
    assert db.scalar(sql_select(func.count()).where(Delivery.status == "delivered")) == 145
