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


def while_a_worker_records(app: Any, change: Callable[[], None]) -> None:
    """Run *change* on a thread while a worker records a batch: it holds the batch's
    deliveries, then (once *change* waits for a lock) updates their subscription."""
    db = app.extensions["srcore"].db
    with db.session() as worker:
        worker.execute(update(Delivery).values(attempts=Delivery.attempts + 1))
        changing = threading.Thread(target=change)
        changing.start()
        postgres = worker.get_bind().dialect.name == "postgresql"
        for _ in range(200):  # until *change* waits for the worker's locks
            if postgres:
                with db.session() as probe:
                    query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    if probe.scalar(text(query)):
                        break
            time.sleep(0.02)  # SQLite: it waits for the write lock all along
        worker.execute(update(Subscription).values(failing_since=utcnow()))
        worker.commit()
        changing.join(timeout=30)


def test_a_deletion_waits_for_the_worker_instead_of_deadlocking_with_it(
    app: Any, call: Callable[..., requests.Response]
) -> None:
    """A deletion takes the locks in the worker's order (deliveries, then their subscription),
    so it waits for the worker's commit rather than holding what the worker needs next."""
    sid = subscribe(call)["id"]
    with app.extensions["srcore"].db.transaction() as session:
        outbox_id = insert_event(session, "thing:created", {"id": 1})
        session.add(Delivery(subscription_id=sid, outbox_id=outbox_id))
    answers: list[requests.Response] = []
    while_a_worker_records(app, lambda: answers.append(call("DELETE", f"/{sid}")))
    assert [a.status_code for a in answers] == [204], [a.text for a in answers]
    assert scalar(app, select(func.count()).select_from(Delivery)) == 0


def test_a_revocation_waits_for_the_worker_instead_of_deadlocking_with_it(app: Any) -> None:
    """Disabling the subscriptions of an account whose trust meta revoked cancels their
    deliveries before it changes them: the worker's order, so it waits for the worker."""
    alice = create_user(app, "alice-revoked")
    with app.extensions["srcore"].db.transaction() as session:
        sub = Subscription(
            owner_id=alice.id, url=HOOK, events="thing:created", secret=generate_secret()
        )
        session.add(sub)
        session.flush()
        outbox_id = insert_event(session, "thing:created", {"id": 1})
        session.add(Delivery(subscription_id=sub.id, outbox_id=outbox_id))
        sid = sub.id
    revoked = RevocationEvent(5, "user", str(alice.id), not_before=int(time.time()) + 5)
    failures: list[BaseException] = []

    def revoke() -> None:
        try:
            after_revocations(app, [revoked])
        except BaseException as exc:
            failures.append(exc)

    while_a_worker_records(app, revoke)
    assert failures == []
    assert not scalar(app, select(Subscription.enabled).where(Subscription.id == sid))
