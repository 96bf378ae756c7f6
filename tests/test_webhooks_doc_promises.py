"""What the docs promise about webhook delivery and the other webhook tests did not hold
the code to: a refused target counting towards ``webhook-disable-after`` like any failure,
one subscriber's share of ``webhook-concurrency`` (half, four at least), the deliveries a
worker holds claimed (eight batches), a dead worker's claim lasting five minutes at most,
and an idle worker finding an event no commit in its process told it of.

Real parts only: the sample service on SQLite and PostgreSQL, its worker, receivers and the
SMTP sink on 127.0.0.1. Clocks the test moves stand in for hours; what is counted is
requests, mails and rows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, cast

import pytest
from sqlalchemy import func, select

import srcore.db
from srcore.db import utcnow
from srcore.outbound import Exchange
from srcore.signatures import generate_secret
from srcore.testing import SMTPSink, create_user, serving
from srcore.webhooks import emit
from srcore.webhooks.fanout import fan_out
from srcore.webhooks.models import Attempt, Delivery, Subscription
from srcore.webhooks.outbox import insert_event
from srcore.webhooks.worker import Worker

#: How long a test waits for what should happen at once (never reached when all is well).
PATIENCE = 10.0
#: How long a test watches for a request that should not come.
QUIET = 0.3


# -- receivers, the configured app, helpers ------------------------------------------------


class Held:
    """Receivers on 127.0.0.1 sharing one record; each request is held until :meth:`let_go`
    (or :data:`PATIENCE`), then answered 204."""

    def __init__(self) -> None:
        self.arrived = 0
        #: The ``webhook-id`` of each request, in the order they arrived.
        self.ids: list[str] = []
        self.changed = threading.Condition()
        self.released = threading.Event()
        self._servers: list[Any] = []

    def start(self) -> str:
        """One more receiver, on a port of its own (a receiver of its own for the per-host
        cap); its URL."""
        record = self

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                with record.changed:
                    record.ids.append(self.headers["webhook-id"])
                    record.arrived += 1
                    record.changed.notify_all()
                record.released.wait(PATIENCE)
                self.send_response(204)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        server.daemon_threads = True
        context = serving(server)
        context.__enter__()
        self._servers.append(context)
        return f"http://127.0.0.1:{server.server_address[1]}/hook"

    def wait_for(self, count: int) -> None:
        with self.changed:
            assert self.changed.wait_for(lambda: self.arrived >= count, PATIENCE), (
                f"{self.arrived} requests arrived, not {count}"
            )

    def no_more_than(self, count: int) -> None:
        """Nothing beyond *count* arrives for a while (a broken cap lets it in at once)."""
        with self.changed:
            self.changed.wait_for(lambda: self.arrived > count, QUIET)
            assert self.arrived == count

    def let_go(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.released.set()
        for context in self._servers:
            context.__exit__(None, None, None)


@pytest.fixture
def held() -> Iterator[Held]:
    receivers = Held()
    yield receivers
    receivers.close()


@pytest.fixture
def configure(
    app: Any, srcore_database: Any, tmp_path: Path, clean_webhooks: None
) -> Iterator[Callable[..., Any]]:
    """Builds the sample service on the test's database with these ``[global]`` keys (the
    ``app`` fixture is asked for so that its clean-up empties the tables after); private
    targets on 127.0.0.0/8 are allowed unless the test says otherwise."""
    import sample_service

    built: list[Any] = []

    def build(**keys: object) -> Any:
        keys.setdefault("allow_private_webhook_targets", "127.0.0.0/8")
        text = srcore_database.config_path.read_text(encoding="utf-8")
        lines = "".join(f"{name.replace('_', '-')} = {value}\n" for name, value in keys.items())
        path = tmp_path / f"config-{len(built)}.ini"
        path.write_text(text.replace("[global]\n", "[global]\n" + lines, 1), encoding="utf-8")
        built.append(sample_service.create_app(config=path))
        return built[-1]

    yield build
    for made in built:
        made.extensions["srcore"].db.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now


def subscribe(app: Any, url: str, owner_id: int | None = None) -> int:
    with app.extensions["srcore"].db.transaction() as s:
        sub = Subscription(
            url=url,
            owner_id=owner_id,
            events="thing:created",
            scopes="sample/things:RO",
            secret=generate_secret(),
        )
        s.add(sub)
        s.flush()
        return int(sub.id)


def emit_things(app: Any, count: int = 1) -> None:
    with app.app_context():
        for n in range(count):
            emit("thing:created", {"id": n, "name": f"thing {n}"})
        srcore.db.session.commit()


def drain(app: Any, clock: Callable[[], datetime] = utcnow, **options: Any) -> None:
    """One worker of *app* (its config's settings and policy) until nothing is due."""
    worker = Worker(app, clock=clock, poll_interval=0.02, **options)
    try:
        worker.drain()
    finally:
        worker.close()


def rows(app: Any, query: Any) -> list[Any]:
    with app.extensions["srcore"].db.session() as s:
        return list(s.execute(query))


def statuses(app: Any) -> list[str]:
    return [r.status for r in rows(app, select(Delivery.status).order_by(Delivery.id))]


def draining(worker: Worker) -> threading.Thread:
    """*worker* draining on a thread of its own (for :data:`PATIENCE` at most)."""
    thread = threading.Thread(target=worker.drain, kwargs={"until": time.monotonic() + PATIENCE})
    thread.start()
    return thread


# -- disabled after webhook-disable-after, whatever the failure ------------------------------


def test_a_refused_target_counts_towards_disable_after_and_the_owner_is_mailed(
    configure: Callable[..., Any], held: Held, smtp_sink: SMTPSink
) -> None:
    """config-reference: "A subscription whose deliveries have all failed for this long is
    disabled and its owner, if a user, told by mail". A target the policy refuses (its name
    now resolving to a private address, or the operator narrowing the allowed ranges) fails
    every delivery, each for good at once: the subscription is still disabled once that has
    lasted ``webhook-disable-after``, and its owner told, instead of failing silently for ever."""
    keys = {k.replace("-", "_"): v for k, v in smtp_sink.config_keys().items()}
    app = configure(allow_private_webhook_targets="", webhook_disable_after="1h", **keys)
    owner = create_user(app, "fay")
    url = held.start()  # on 127.0.0.1, which this config refuses
    subscribe(app, url, owner.id)
    clock = Clock()
    start = clock.now
    emit_things(app)
    drain(app, clock)
    assert statuses(app) == ["failed"]  # refused: final, not retried
    [(failing_since,)] = rows(app, select(Subscription.failing_since))
    assert failing_since is not None and smtp_sink.messages == []

    clock.now = start + timedelta(minutes=59)
    emit_things(app)
    drain(app, clock)
    [(enabled,)] = rows(app, select(Subscription.enabled))
    assert enabled and smtp_sink.messages == []

    clock.now = start + timedelta(hours=1, minutes=1)
    emit_things(app)
    drain(app, clock)
    [(enabled, reason)] = rows(app, select(Subscription.enabled, Subscription.disabled_reason))
    assert not enabled and "failed since" in reason
    [message] = smtp_sink.wait(1)
    assert message.recipients == ["fay@example.org"] and url in message["Subject"]
    assert statuses(app) == ["failed"] * 3
    assert held.arrived == 0  # the refused target never saw a request


# -- requests in flight --------------------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "share"), [(16, 8), (6, 4)])
def test_one_subscriber_holds_half_of_webhook_concurrency_but_four_at_least(
    configure: Callable[..., Any], held: Held, concurrency: int, share: int
) -> None:
    """operators.md: at most half of ``webhook-concurrency``'s requests (8 of 16) are one
    subscriber's; config-reference: "(but 4 at least)". One user's webhooks on more slow
    receivers than that: exactly *share* requests are in flight until they end."""
    app = configure(webhook_concurrency=concurrency)
    owner = create_user(app, "gus")
    for _ in range(share + 2):
        subscribe(app, held.start(), owner.id)
    emit_things(app)
    thread = draining(Worker(app, poll_interval=0.02))
    try:
        held.wait_for(share)
        held.no_more_than(share)
    finally:
        held.let_go()
        thread.join(PATIENCE)
    assert not thread.is_alive()
    assert statuses(app) == ["delivered"] * (share + 2)


def test_a_worker_holds_at_most_eight_batches_claimed(
    configure: Callable[..., Any], held: Held
) -> None:
    """architecture.md: "a worker holds at most eight batches of deliveries claimed and not yet
    recorded". With a batch of 2, subscribers each with a due delivery to one slow receiver:
    16 are claimed (4 of them sending), the rest wait unclaimed for another worker."""
    app = configure()
    url = held.start()
    for owner_id in range(1001, 1021):  # a subscriber each: no subscriber's share is reached
        subscribe(app, url, owner_id)
    st = app.extensions["srcore"]
    with st.db.transaction() as s:
        outbox_id = insert_event(s, "thing:created", {"id": 1, "name": "x"})
    with st.db.session() as s:
        assert len(fan_out(s, [outbox_id], manifest=st.manifest)) == 20
    worker = Worker(app, poll_interval=0.02)
    worker.batch = 2

    def claimed() -> int:
        query = select(func.count()).where(Delivery.claimed_until.is_not(None))
        return cast(int, rows(app, query)[0][0])

    thread = draining(worker)
    try:
        held.wait_for(4)  # the per-receiver cap: four sending
        end = time.monotonic() + PATIENCE
        while claimed() < 16 and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(QUIET)  # a worker holding more would claim the rest at once
        assert claimed() == 16
    finally:
        held.let_go()
        thread.join(PATIENCE)
    assert not thread.is_alive()
    assert statuses(app) == ["delivered"] * 20


# -- a dead worker's claim ------------------------------------------------------------------


class Dying:
    """A sender that fails inside the request, as a worker killed while sending would: the
    attempt is never recorded and the delivery stays claimed. It keeps the ``webhook-id``."""

    def __init__(self) -> None:
        self.ids: list[str] = []

    def post(self, url: str, headers: Any, body: bytes, *, deadline: float) -> Exchange:
        self.ids.append(headers["webhook-id"])
        raise RuntimeError("the worker died while sending")

    def close(self) -> None:
        pass


def test_a_dead_workers_delivery_comes_back_within_five_minutes(
    configure: Callable[..., Any], held: Held
) -> None:
    """operators.md: "a worker killed while sending holds it until its lease ends, five minutes
    at most": another worker sends it once that is over, not before, and (delivery.py) with the
    same ``webhook-id``, so a receiver that got the first request too sees a duplicate."""
    app = configure()
    held.let_go()
    subscribe(app, held.start())
    clock = Clock()
    start = clock.now
    emit_things(app)
    dying = Dying()
    drain(app, clock, http=dying, trusted_http=dying)
    [(status, claimed_until)] = rows(app, select(Delivery.status, Delivery.claimed_until))
    assert status == "pending" and claimed_until is not None
    assert rows(app, select(Attempt.id)) == []

    clock.now = start + timedelta(minutes=4, seconds=50)
    drain(app, clock)
    assert held.arrived == 0 and statuses(app) == ["pending"]
    clock.now = start + timedelta(minutes=5, seconds=5)
    drain(app, clock)
    assert held.arrived == 1 and statuses(app) == ["delivered"]
    assert held.ids == dying.ids


# -- the poll interval ---------------------------------------------------------------------


def test_an_idle_worker_finds_an_event_committed_elsewhere_by_its_poll_interval(
    configure: Callable[..., Any], held: Held
) -> None:
    """config-reference: ``webhook-poll-interval`` is how often an idle local worker looks for
    new events in its database. An event committed by another process (no wake-up reaches
    this worker) is delivered all the same, at the next look."""
    app = configure(webhook_poll_interval="100ms")
    held.let_go()
    subscribe(app, held.start())
    emit_things(app)
    worker = Worker(app)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    try:
        held.wait_for(1)
        end = time.monotonic() + PATIENCE
        while statuses(app) != ["delivered"] and time.monotonic() < end:
            time.sleep(0.02)
        assert statuses(app) == ["delivered"]  # recorded: the worker is idle now
        with app.extensions["srcore"].db.transaction() as s:  # as another process would
            insert_event(s, "thing:created", {"id": 2, "name": "elsewhere"})
        held.wait_for(2)
    finally:
        stop.set()
        worker.stop()
        thread.join(PATIENCE)
        worker.close()
    assert not thread.is_alive()


# -- the operator's own subscriptions ------------------------------------------------------


@pytest.mark.usefixtures("clean_webhooks")
def test_the_operators_trusted_subscriptions_are_never_shown(
    app: Any, client: Any, make_token: Any, user: Any
) -> None:
    """security.md: meta's own subscription to a service is made by code only, and "the API and
    pages never show it", not even to the client (or user) it is recorded as owned by: nobody
    can read its secret, point it elsewhere, or delete it."""
    from srcore.testing import log_in_client

    st = app.extensions["srcore"]
    made: dict[str, tuple[int, int]] = {}
    with st.db.transaction() as s:
        outbox_id = insert_event(s, "thing:created", {"id": 1, "name": "x"})
        for who, owner_id, owner_client in (("client", None, "builds"), ("user", user.id, None)):
            sub = Subscription(
                url=f"https://{who}.example.org/_srcore/events",
                owner_id=owner_id,
                owner_client=owner_client,
                events="thing:created",
                scopes="sample/things:RW",
                secret=generate_secret(),
                trusted=True,
            )
            s.add(sub)
            s.flush()
            delivery = Delivery(subscription_id=sub.id, outbox_id=outbox_id, status="failed")
            s.add(delivery)
            s.flush()
            made[who] = (sub.id, delivery.id)
    before = rows(app, select(Subscription.id, Subscription.url, Subscription.secret))
    tokens = {
        "client": make_token("sample/things:RW", user=None, client_id="builds"),
        "user": make_token("sample/things:RW", user=user),
    }
    for who, (sid, did) in made.items():
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        assert client.get("/api/webhooks", headers=headers).get_json()["results"] == [], who
        for method, path, body in (
            ("GET", f"/api/webhooks/{sid}", None),
            ("GET", f"/api/webhooks/{sid}/deliveries", None),
            ("PATCH", f"/api/webhooks/{sid}", {"url": "https://elsewhere.example.org/"}),
            ("POST", f"/api/webhooks/{sid}/rotate", {}),
            ("POST", f"/api/webhooks/{sid}/ping", {}),
            ("POST", f"/api/webhooks/{sid}/deliveries/{did}/redeliver", {}),
            ("DELETE", f"/api/webhooks/{sid}", None),
        ):
            answer = client.open(path, method=method, json=body, headers=headers)
            assert answer.status_code == 404, (who, method, path, answer.status_code)

    browser = log_in_client(app.test_client(), user)
    sid, _ = made["user"]
    assert "user.example.org" not in browser.get("/webhooks").get_data(as_text=True)
    assert browser.get(f"/webhooks/{sid}").status_code == 404
    assert browser.get(f"/webhooks/{sid}/edit").status_code == 404
    assert rows(app, select(Subscription.id, Subscription.url, Subscription.secret)) == before
