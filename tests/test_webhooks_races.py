"""One user's concurrent requests to the webhook API of the sample service, served by a
real gunicorn with several worker processes, on SQLite and on PostgreSQL: the limits
hold, racing changes of one subscription are made one after the other, and a request
that loses a race gets a 4xx that says why, never a 500. A deletion or a revocation that
meets the worker recording a batch takes the locks in its order, and waits instead of
deadlocking with it.

Each test repeats its burst a few times (a race is not lost every time); the counts are
bounded, and nothing is timed.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import delete, func, select, text, update

from srcore.db import utcnow
from srcore.identity.protocol import RevocationEvent
from srcore.signatures import generate_secret
from srcore.testing import TEST_ISSUER, ServiceDatabase, create_user, free_port, run_service
from srcore.webhooks.accounts import after_revocations
from srcore.webhooks.catalog import PING
from srcore.webhooks.delivery import lock_subscriptions
from srcore.webhooks.models import Delivery, OutboxRow, Subscription
from srcore.webhooks.outbox import insert_event
from srcore.webhooks.subscriptions import MAX_SUBSCRIPTIONS

pytestmark = pytest.mark.slow

#: Hands the server the public half of the test's token-signing key (a JWK).
KEY = "SRCORE_RACES_KEY"
HOOK = "https://hooks.example.org/races"
WORKERS = 4
CLIENTS = 12
ROUNDS = 6


def create_app() -> Any:
    """gunicorn's factory: the sample service on $SRCORE_CONFIG, trusting the test's key."""
    import sample_service
    from joserfc.jwk import KeySet, OKPKey

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.outbound.targets import set_resolver

    keys = StaticKeySource(KeySet([OKPKey.import_key(json.loads(os.environ[KEY]))]))
    verifier = TokenVerifier(keys=keys, issuer=TEST_ISSUER, audience="sample")
    app = sample_service.create_app(token_verifier=verifier)
    set_resolver(app, lambda host, port, timeout: None)  # no DNS query leaves the machine
    return app


@pytest.fixture
def server(
    app: Any,
    srcore_database: ServiceDatabase,
    srcore_signing_key: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[str]:
    """The sample service under gunicorn on the test's database (emptied after); its URL."""
    here = Path(__file__).parent
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(here), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv(KEY, json.dumps(srcore_signing_key.as_dict(private=False)))
    config = srcore_database.config_path
    port = free_port()
    with run_service(Path(__file__).stem, config, port=port, workers=WORKERS, timeout=60) as url:
        yield url


@pytest.fixture
def call(make_token: Any, user: Any, server: str) -> Callable[..., requests.Response]:
    """``call("POST", "/1/ping")``: a request of alice's to the server's webhook API."""
    headers = {"Authorization": f"Bearer {make_token('sample/things:RW', user=user)}"}

    def send(method: str, path: str = "", **options: Any) -> requests.Response:
        url = f"{server}/api/webhooks{path}"
        return requests.request(method, url, headers=headers, timeout=30, **options)

    return send


Answer = tuple[int, Any, requests.Response]


def at_once(sends: list[Callable[[], requests.Response]]) -> list[Answer]:
    """Send the requests from a pool of clients; each one's status, JSON body and response."""

    def one(send: Callable[[], requests.Response]) -> Answer:
        response = send()
        try:
            body = response.json()
        except ValueError:
            body = response.text[:300]
        return response.status_code, body, response

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        return list(pool.map(one, sends))


def statuses(answers: list[Answer]) -> Counter[int]:
    return Counter(status for status, _, _ in answers)


def reasons(answers: list[Answer], status: int) -> set[str]:
    return {e["reason"] for code, body, _ in answers if code == status for e in body["errors"]}


def subscribe(call: Callable[..., requests.Response]) -> dict[str, Any]:
    response = call("POST", json={"url": HOOK, "events": ["thing:created"]})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def scalar(app: Any, query: Any) -> Any:
    with app.extensions["srcore"].db.transaction() as session:
        return session.scalar(query)


def test_parallel_creates_stop_at_the_limit(
    app: Any, user: Any, call: Callable[..., requests.Response]
) -> None:
    """One below the limit, 16 creates at once: one is made, the others get the 400."""
    body = {"url": HOOK, "events": ["thing:created"]}
    count = select(func.count()).select_from(Subscription)
    for _ in range(ROUNDS):
        with app.extensions["srcore"].db.transaction() as session:
            session.execute(delete(Subscription))
            for _ in range(MAX_SUBSCRIPTIONS - 1):
                secret = generate_secret()
                session.add(
                    Subscription(owner_id=user.id, url=HOOK, events="thing:created", secret=secret)
                )
        answers = at_once([lambda: call("POST", json=body)] * 16)
        assert statuses(answers) == {201: 1, 400: 15}, answers
        limit = f"You already have {MAX_SUBSCRIPTIONS} webhooks here; delete one first."
        assert reasons(answers, 400) == {limit}
        assert scalar(app, count) == MAX_SUBSCRIPTIONS


def test_parallel_pings_send_one_test_event(
    app: Any, call: Callable[..., requests.Response]
) -> None:
    """12 pings of one subscription at once: one is sent, the others get the 429."""
    for _ in range(ROUNDS):
        sub = subscribe(call)
        answers = at_once([lambda: call("POST", f"/{sub['id']}/ping")] * 12)
        assert statuses(answers) == {202: 1, 429: 11}, answers
        assert all(int(r.headers["Retry-After"]) > 0 for code, _, r in answers if code == 429)
        pings = Delivery.subscription_id == sub["id"], OutboxRow.event == PING
        sent = select(func.count()).select_from(Delivery).join(Delivery.outbox).where(*pings)
        assert scalar(app, sent) == 1


def test_parallel_rotations_are_made_one_after_the_other(
    app: Any, call: Callable[..., requests.Response]
) -> None:
    """Two rotations at once: the first one's secret is the previous secret beside the
    second's (neither answer hands out a secret that is already lost)."""
    for _ in range(2 * ROUNDS):
        sub = subscribe(call)
        rotate = lambda: call("POST", f"/{sub['id']}/rotate", json={"overlap": 600})  # noqa: E731
        answers = at_once([rotate, rotate])
        assert statuses(answers) == {200: 2}, answers
        row = scalar(app, select(Subscription).where(Subscription.id == sub["id"]))
        assert {row.secret, row.previous_secret} == {body["secret"] for _, body, _ in answers}


def test_changes_racing_a_deletion_are_404s(
    app: Any, call: Callable[..., requests.Response]
) -> None:
    """Changes, pings, redeliveries and deletions of one subscription at once: one deletion
    wins; a request that comes after it is a 404, and nothing of it is left behind."""
    for _ in range(ROUNDS):
        sub = subscribe(call)
        with app.extensions["srcore"].db.transaction() as session:
            outbox_id = insert_event(session, "thing:created", {"id": 7, "name": "seven"})
            delivery = Delivery(subscription_id=sub["id"], outbox_id=outbox_id, status="failed")
            session.add(delivery)
            session.flush()
            delivery_id = delivery.id
        path = f"/{sub['id']}"
        changes = [
            lambda: call("PATCH", path, json={"url": HOOK + "/changed"}),
            lambda: call("PATCH", path, json={"enabled": False}),
            lambda: call("POST", path + "/rotate", json={"overlap": 60}),
            lambda: call("POST", path + "/ping"),
            lambda: call("POST", f"{path}/deliveries/{delivery_id}/redeliver"),
        ]
        remove = lambda: call("DELETE", path)  # noqa: E731
        answers = at_once(changes * 2 + [remove] + changes * 2 + [remove])
        assert statuses(answers)[204] == 1, answers
        assert set(statuses(answers)) <= {200, 202, 204, 404, 409, 429}, answers
        left = (
            select(func.count()).select_from(Delivery).where(Delivery.subscription_id == sub["id"])
        )
        assert scalar(app, left) == 0


def pending_deliveries(app: Any, sid: int, count: int) -> list[int]:
    """*count* pending deliveries of subscription *sid*, each due later than the one before."""
    ids = []
    with app.extensions["srcore"].db.transaction() as session:
        for n in range(count):
            outbox_id = insert_event(session, "thing:created", {"id": n})
            due = utcnow() + timedelta(minutes=n)
            delivery = Delivery(subscription_id=sid, outbox_id=outbox_id, next_attempt_at=due)
            session.add(delivery)
            session.flush()
            ids.append(delivery.id)
    return ids


def waiting_for_a_lock(app: Any) -> None:
    """Return once another transaction waits for a row lock (PostgreSQL), or after a moment."""
    db = app.extensions["srcore"].db
    for _ in range(200):
        if db.engine.dialect.name == "postgresql":
            with db.session() as probe:
                query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                if probe.scalar(text(query)):
                    return
        time.sleep(0.02)  # SQLite: it waits for the write lock all along


def while_a_worker_disables(app: Any, sid: int, batch: int, change: Callable[[], None]) -> None:
    """Run *change* on a thread while a worker records a *batch* delivery that disables *sid*,
    taking the locks as ``record`` does: the subscription, the batch, and (once *change*
    waits) the subscription's other pending deliveries, cancelled."""
    with app.extensions["srcore"].db.session() as worker:
        lock_subscriptions(worker, Subscription.id == sid)
        worker.execute(update(Delivery).where(Delivery.id == batch).values(attempts=1))
        changing = threading.Thread(target=change)
        changing.start()
        waiting_for_a_lock(app)
        pending = Delivery.subscription_id == sid, Delivery.status == "pending"
        worker.execute(update(Delivery).where(*pending).values(status="cancelled"))
        worker.execute(update(Subscription).where(Subscription.id == sid).values(enabled=False))
        worker.commit()
        changing.join(timeout=30)


def test_a_deletion_waits_for_the_worker_instead_of_deadlocking_with_it(
    app: Any, call: Callable[..., requests.Response]
) -> None:
    """A deletion takes the locks in the worker's order (the subscription, then its deliveries),
    so it waits for the worker's commit rather than holding what the worker needs next."""
    sid = subscribe(call)["id"]
    _other, batch = pending_deliveries(app, sid, 2)
    answers: list[requests.Response] = []
    while_a_worker_disables(app, sid, batch, lambda: answers.append(call("DELETE", f"/{sid}")))
    assert [a.status_code for a in answers] == [204], [a.text for a in answers]
    assert scalar(app, select(func.count()).select_from(Delivery)) == 0


def test_a_revocation_waits_for_the_worker_instead_of_deadlocking_with_it(app: Any) -> None:
    """A suspension cancels an account's deliveries after locking its subscriptions: the
    worker's order, so it waits for the worker."""
    alice = create_user(app, "alice-suspended")
    with app.extensions["srcore"].db.transaction() as session:
        sub = Subscription(
            owner_id=alice.id, url=HOOK, events="thing:created", secret=generate_secret()
        )
        session.add(sub)
        session.flush()
        sid = sub.id
    _other, batch = pending_deliveries(app, sid, 2)
    suspended = RevocationEvent(5, "suspend", str(alice.id))
    failures: list[BaseException] = []

    def suspend() -> None:
        try:
            after_revocations(app, [suspended])
        except BaseException as exc:
            failures.append(exc)

    while_a_worker_disables(app, sid, batch, suspend)
    assert failures == []
    assert scalar(app, select(func.count()).where(Delivery.status == "pending")) == 0


@pytest.mark.parametrize("changes_it", [True, False], ids=["changing-it", "not-changing-it"])
def test_recording_locks_the_subscriptions_before_their_deliveries(
    app: Any, changes_it: bool
) -> None:
    """While a change holds a subscription, the worker recording its batch waits before it
    has locked any of the batch's deliveries (PostgreSQL; SQLite has one writer anyway),
    whether or not the record changes the subscription: a change of several subscriptions
    (a suspension of an account with two) would otherwise hold some of the batch's
    deliveries while the batch holds others."""
    import random

    from srcore.outbound import Exchange
    from srcore.webhooks.delivery import load_jobs, record
    from srcore.webhooks.settings import WebhookSettings

    db = app.extensions["srcore"].db
    with db.transaction() as session:
        # The 204 below clears it: the record changes the subscription too.
        failing = utcnow() if changes_it else None
        sub = Subscription(url=HOOK, events="thing:created", secret="x", failing_since=failing)
        session.add(sub)
        session.flush()
        sid = sub.id
    [batch] = pending_deliveries(app, sid, 1)
    with db.session() as session:
        jobs = load_jobs(session, [batch])
    for job in jobs:
        job.exchange, job.now, job.headers = Exchange(status=204), utcnow(), {}
    failures: list[BaseException] = []

    def recording() -> None:
        try:
            with db.session() as session:
                record(session, jobs, config=WebhookSettings(), rng=random.Random())
        except BaseException as exc:
            failures.append(exc)

    with db.session() as holder:
        lock_subscriptions(holder, Subscription.id == sid)  # as a change of it does
        worker = threading.Thread(target=recording)
        worker.start()
        waiting_for_a_lock(app)
        if db.engine.dialect.name == "postgresql":
            with db.session() as probe:  # the batch is not locked yet
                free = select(Delivery.id).where(Delivery.id == batch).with_for_update(nowait=True)
                assert probe.scalar(free) == batch
                assert (
                    probe.scalar(select(Delivery.status).where(Delivery.id == batch)) == "pending"
                )
        holder.commit()
        worker.join(timeout=30)
    assert failures == []
    assert scalar(app, select(Delivery.status).where(Delivery.id == batch)) == "delivered"
