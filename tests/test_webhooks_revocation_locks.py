"""Two batches of revocations about the same accounts, applied at the same time (two pushes,
or a push and a pull), listing them in opposite orders: each waits for the other instead of
deadlocking with it, on PostgreSQL as on SQLite, and both are applied.

A third transaction holds one subscription so that the batches reach their locks in the
order that would close a cycle if each took its accounts' locks event by event. On SQLite,
a batch that read an account before it held the write lock could fail to insert it, or
undo a newer event. Every lock wait is bounded (``lock_timeout``), and nothing is timed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, func, select, text, update

from srcore.identity.protocol import RevocationEvent
from srcore.signatures import generate_secret
from srcore.webhooks.accounts import after_revocations
from srcore.webhooks.models import Account, Delivery, Subscription
from srcore.webhooks.outbox import insert_event

pytestmark = pytest.mark.usefixtures("clean_webhooks")

ALICE, BOB = 7001, 7002


@pytest.fixture
def service_db(app: Any) -> Iterator[Any]:
    """The app's database, every new PostgreSQL connection waiting at most 10 s for a lock."""
    db = app.extensions["srcore"].db
    if db.engine.dialect.name != "postgresql":
        yield db
        return

    def bounded(dbapi_connection: Any, _record: Any) -> None:
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '10s'")
        dbapi_connection.commit()

    db.engine.dispose()
    event.listen(db.engine, "connect", bounded)
    try:
        yield db
    finally:
        event.remove(db.engine, "connect", bounded)
        db.engine.dispose()


def subscribed(service_db: Any, owner_id: int) -> int:
    """A new subscription of *owner_id* with one pending delivery; its id."""
    with service_db.transaction() as session:
        sub = Subscription(
            owner_id=owner_id,
            url=f"https://hooks.example.org/{owner_id}",
            events="thing:created",
            secret=generate_secret(),
        )
        session.add(sub)
        session.flush()
        outbox_id = insert_event(session, "thing:created", {"id": owner_id})
        session.add(Delivery(subscription_id=sub.id, outbox_id=outbox_id))
        return sub.id


def waiting(service_db: Any, count: int) -> None:
    """Return once *count* transactions of this database wait for a lock (PostgreSQL), or
    after a moment (SQLite, where they wait for the one writer all along)."""
    if service_db.engine.dialect.name != "postgresql":
        time.sleep(0.2)
        return
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    for _ in range(500):
        with service_db.engine.connect() as probe:
            if probe.scalar(query) >= count:
                return
        time.sleep(0.02)
    raise AssertionError(f"fewer than {count} transactions came to wait for a lock")


def applied_while_held(
    app: Any, service_db: Any, held: int, first: list[Any], then: list[Any]
) -> None:
    """Apply the batches *first* and *then* on threads of their own, *first* starting (and
    coming to wait) while another transaction holds subscription *held*, *then* once it
    does; the holder then rolls back. Neither batch may fail."""
    failures: list[BaseException] = []

    def apply(events: list[Any]) -> None:
        try:
            after_revocations(app, events)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=apply, args=(events,)) for events in (first, then)]
    try:
        with service_db.session() as holder:  # as a change of it through the API does
            hold = update(Subscription).where(Subscription.id == held)
            holder.execute(hold.values(updated=Subscription.updated))
            for count, thread in enumerate(threads, 1):
                thread.start()
                waiting(service_db, count)
            holder.rollback()
    finally:
        for thread in threads:
            if thread.ident is not None:
                thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert failures == []


def pending(service_db: Any) -> int:
    with service_db.session() as session:
        query = select(func.count()).where(Delivery.status == "pending")
        return int(session.scalar(query) or 0)


@pytest.mark.parametrize("known", [False, True], ids=["new-accounts", "known-accounts"])
def test_suspensions_listed_in_opposite_orders_wait_for_each_other(
    app: Any, service_db: Any, known: bool
) -> None:
    alices, bobs = subscribed(service_db, ALICE), subscribed(service_db, BOB)
    if known:
        with service_db.transaction() as session:
            session.add_all([Account(user_id=ALICE, seq=1), Account(user_id=BOB, seq=1)])
    first = [RevocationEvent(12, "suspend", str(BOB)), RevocationEvent(13, "suspend", str(ALICE))]
    then = [RevocationEvent(10, "suspend", str(ALICE)), RevocationEvent(11, "suspend", str(BOB))]
    applied_while_held(app, service_db, bobs, first, then)

    with service_db.session() as session:
        accounts = session.scalars(select(Account).order_by(Account.user_id)).all()
        assert [(a.user_id, a.suspended, a.seq) for a in accounts] == [
            (ALICE, True, 13),
            (BOB, True, 12),
        ]
    assert alices != bobs and pending(service_db) == 0


def test_a_suspension_and_a_cut_off_in_opposite_orders_wait_for_each_other(
    app: Any, service_db: Any
) -> None:
    """The account's row and the other user's subscriptions, taken in either order."""
    alices, bobs = subscribed(service_db, ALICE), subscribed(service_db, BOB)
    cut_off = int(time.time())
    first = [
        RevocationEvent(21, "user", str(BOB), not_before=cut_off),
        RevocationEvent(22, "suspend", str(ALICE)),
    ]
    then = [
        RevocationEvent(20, "suspend", str(ALICE)),
        RevocationEvent(21, "user", str(BOB), not_before=cut_off),
    ]
    applied_while_held(app, service_db, bobs, first, then)

    with service_db.session() as session:
        alice = session.get(Account, ALICE)
        assert alice is not None and (alice.suspended, alice.seq) == (True, 22)
        assert session.get(Account, BOB) is None
        enabled = {s.id: s.enabled for s in session.scalars(select(Subscription))}
        assert enabled == {alices: True, bobs: False}
    assert pending(service_db) == 0


def test_events_about_no_account_lock_no_subscription(app: Any, service_db: Any) -> None:
    """A grant, token, client or session event's subject is not a user id, even when it is a
    number: a batch of them takes no lock on the subscriptions of the user with that id."""
    from srcore.webhooks.accounts import apply_with_change

    subscribed(service_db, ALICE)
    others = [
        RevocationEvent(1, "grant", str(ALICE), expires_at=int(time.time()) + 60),
        RevocationEvent(2, "token", str(ALICE), expires_at=int(time.time()) + 60),
        RevocationEvent(3, "client", str(ALICE), not_before=int(time.time())),
        RevocationEvent(4, "session", str(ALICE), not_before=int(time.time())),
    ]
    with service_db.session() as holder, service_db.session() as batch:
        held = select(Subscription.id).where(Subscription.owner_id == ALICE)
        holder.execute(held.with_for_update())  # as a change of ALICE's webhook does
        if service_db.engine.dialect.name == "postgresql":
            batch.execute(text("SET LOCAL lock_timeout = '1s'"))  # a wait fails at once
        apply_with_change(app, batch, others)
        batch.commit()
        holder.commit()
    with service_db.session() as session:
        assert session.scalar(select(func.count()).select_from(Account)) == 0
