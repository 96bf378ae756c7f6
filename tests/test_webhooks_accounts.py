"""What meta's revocation events mean for a service's webhook subscriptions.

A suspended (or deleted) account's subscriptions receive nothing until meta unsuspends it;
when everything an account issued is revoked (a password change or reset), its
subscriptions are disabled and their owner told, so webhooks made by someone who held the
account before (a pre-hijacked registration) stop sending its data. srcore reacts to the
events meta pushes to ``/_srcore/events``: no service writes code for it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from srcore.db import utcnow
from srcore.signatures import generate_secret
from srcore.testing import create_user
from srcore.webhooks.fanout import fan_out
from srcore.webhooks.models import Delivery, DeliveryStatus, Subscription
from srcore.webhooks.outbox import insert_event
from tests.fake_meta import FakeMeta, build_service


@pytest.fixture
def fake() -> FakeMeta:
    return FakeMeta()


@pytest.fixture
def service(tmp_path: Any, fake: FakeMeta) -> Iterator[Any]:
    app = build_service(tmp_path, fake)
    yield app
    app.extensions["srcore"].db.dispose()


def push(app: Any, fake: FakeMeta, *events: dict[str, Any]) -> None:
    headers, body = fake.push(list(events))
    response = app.test_client().post("/_srcore/events", data=body, headers=headers)
    assert response.status_code == 204, response.get_data(as_text=True)


def event(seq: int, kind: str, subject: int, **times: int) -> dict[str, Any]:
    return {"seq": seq, "kind": kind, "subject": str(subject), **times}


def subscription(app: Any, owner_id: int, **values: Any) -> int:
    with app.extensions["srcore"].db.transaction() as session:
        sub = Subscription(
            owner_id=owner_id,
            url=f"https://hooks.example.org/{owner_id}",
            events="thing:created",
            scopes="sample/things:RW",
            secret=generate_secret(),
            **values,
        )
        session.add(sub)
        session.flush()
        return sub.id


def emitted(app: Any) -> dict[int, str]:
    """Emit one event and fan it out; returns the new deliveries' status by subscription."""
    st = app.extensions["srcore"]
    with st.db.transaction() as session:
        outbox_id = insert_event(session, "thing:created", {"id": 1})
    with st.db.session() as session:
        new = fan_out(session, [outbox_id], manifest=st.manifest)
        rows = session.scalars(select(Delivery).where(Delivery.id.in_(new))).all()
        return {d.subscription_id: d.status for d in rows}


def pending_delivery(app: Any, subscription_id: int) -> int:
    st = app.extensions["srcore"]
    with st.db.transaction() as session:
        outbox_id = insert_event(session, "thing:created", {"id": 0})
        delivery = Delivery(subscription_id=subscription_id, outbox_id=outbox_id)
        session.add(delivery)
        session.flush()
        return delivery.id


def status(app: Any, model: type[Any], ident: int) -> Any:
    with app.extensions["srcore"].db.transaction() as session:
        return session.get(model, ident)


def test_a_suspended_accounts_subscriptions_receive_nothing_until_unsuspended(
    service: Any, fake: FakeMeta
) -> None:
    alices, bobs = subscription(service, 7), subscription(service, 8)
    waiting = pending_delivery(service, alices)
    push(service, fake, event(1, "suspend", 7))
    assert status(service, Delivery, waiting).status == DeliveryStatus.cancelled
    assert emitted(service) == {bobs: "pending"}
    push(service, fake, event(2, "unsuspend", 7))
    assert emitted(service) == {alices: "pending", bobs: "pending"}
    push(service, fake, event(1, "suspend", 7))  # a late copy of an older event
    assert emitted(service) == {alices: "pending", bobs: "pending"}


def test_a_deleted_account_stays_suspended(service: Any, fake: FakeMeta) -> None:
    alices = subscription(service, 7)
    now = int(time.time())
    push(service, fake, event(3, "user", 7, not_before=now), event(4, "suspend", 7))
    assert emitted(service) == {}
    assert not status(service, Subscription, alices).enabled


def test_revoking_everything_an_account_issued_disables_its_subscriptions(
    service: Any, fake: FakeMeta, caplog: pytest.LogCaptureFixture
) -> None:
    alice = create_user(service, "alice", id=7, email="alice@example.org")
    hijacked = subscription(service, alice.id)
    waiting = pending_delivery(service, hijacked)
    bobs = subscription(service, 8)
    caplog.set_level(logging.WARNING, logger="srcore.mail")
    push(service, fake, event(5, "user", alice.id, not_before=int(time.time())))

    sub = status(service, Subscription, hijacked)
    assert not sub.enabled
    assert "password" in (sub.disabled_reason or "")
    assert status(service, Delivery, waiting).status == DeliveryStatus.cancelled
    assert status(service, Subscription, bobs).enabled
    assert emitted(service) == {bobs: "pending"}
    mails = [r.getMessage() for r in caplog.records if r.name == "srcore.mail"]
    assert any("alice@example.org" in m and sub.url in m for m in mails), mails

    # The owner checks it and enables it again: a replay of the event leaves it alone.
    with service.extensions["srcore"].db.transaction() as session:
        row = session.get(Subscription, hijacked)
        row.enabled, row.disabled_reason, row.confirmed_at = True, None, utcnow()
    time.sleep(0)  # the replay below carries the same not_before
    push(service, fake, event(5, "user", alice.id, not_before=int(time.time()) - 5))
    assert status(service, Subscription, hijacked).enabled


def test_the_webhooks_page_says_why_a_subscription_was_disabled(
    service: Any, fake: FakeMeta
) -> None:
    from srcore.auth.web import _SESSION_AT
    from srcore.testing import log_in_client

    alice = create_user(service, "alice", id=7, email="alice@example.org")
    subscription(service, alice.id, created=utcnow() - timedelta(hours=1))
    # Long enough ago that the login below is a new session, after the revocation.
    push(service, fake, event(5, "user", alice.id, not_before=int(time.time()) - 60))
    browser = log_in_client(service.test_client(), alice)
    with browser.session_transaction() as cookie:
        cookie[_SESSION_AT] = time.time()  # logged in after the revocation
    response = browser.get("/webhooks")
    assert response.status_code == 200, response.headers
    page = response.get_data(as_text=True)
    assert "password" in page


def test_events_pulled_from_meta_apply_too(service: Any, fake: FakeMeta) -> None:
    """A lost push is made up for by the pull: the subscriptions follow it as well."""
    alices, bobs = subscription(service, 7), subscription(service, 8)
    fake.add_event("suspend", "7")
    puller = service.extensions["srcore"].identity.puller
    assert puller.pull_once() == 1
    assert emitted(service) == {bobs: "pending"}
    assert status(service, Subscription, alices).enabled


def test_a_revocation_rolled_back_disables_nothing_and_tells_nobody(
    service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """meta applies revocations inside the transaction that makes them: when it rolls back, the
    owner hears nothing, not even at the session's next commit."""
    from srcore.identity.protocol import RevocationEvent
    from srcore.webhooks.accounts import apply_with_change

    alice = create_user(service, "alice", id=7, email="alice@example.org")
    hijacked = subscription(service, alice.id)
    revoked = RevocationEvent(5, "user", str(alice.id), not_before=int(time.time()) + 5)
    caplog.set_level(logging.INFO, logger="srcore.mail")
    with service.extensions["srcore"].db.session() as session:
        apply_with_change(service, session, [revoked])
        session.rollback()
        session.commit()  # a later, unrelated commit
        apply_with_change(service, session, [revoked])
        session.commit()
    assert not status(service, Subscription, hijacked).enabled
    mails = [r.getMessage() for r in caplog.records if r.name == "srcore.mail"]
    assert len(mails) == 1 and "alice@example.org" in mails[0], mails


def test_a_subject_of_non_ascii_digits_names_no_account() -> None:
    """Arabic-Indic one, zero (U+0661 U+0660) pass str.isdecimal() and int() reads them as
    10: they must not name user 10."""
    from types import SimpleNamespace

    from srcore.webhooks.accounts import _untrusted

    event = SimpleNamespace(kind="user", subject="\u0661\u0660", not_before=int(time.time()))
    assert _untrusted(event) is None


def test_a_suspension_after_metas_restore_from_a_dump_stops_deliveries(
    service: Any, fake: FakeMeta
) -> None:
    """meta restored from a dump numbers its new events from the dump's last seq again. A
    suspension made after the restore is numbered below the unsuspension the restore lost,
    which this service applied: the subscriptions follow the new numbering all the same."""
    alices, bobs = subscription(service, 7), subscription(service, 8)
    puller = service.extensions["srcore"].identity.puller
    fake.add_event("token", "dumped", expires_at=int(time.time()) + 600)  # seq 1: the dump
    fake.add_event("suspend", "7")
    fake.add_event("unsuspend", "7")
    puller.pull_once()
    assert emitted(service) == {alices: "pending", bobs: "pending"}
    del fake.events[1:]  # pg_restore of the dump
    fake.add_event("suspend", "7")  # seq 2 again
    puller.pull_once()
    assert emitted(service) == {bobs: "pending"}


def test_an_old_suspension_read_again_with_its_end_cancels_nothing(
    service: Any, fake: FakeMeta
) -> None:
    """Reading meta's list again from the start (after a restore) brings an account's old
    suspension and its unsuspension in one batch: only the newest counts, so the
    account's pending deliveries are not cancelled on the way."""
    alices = subscription(service, 7)
    waiting = pending_delivery(service, alices)
    push(service, fake, event(3, "suspend", 7), event(5, "unsuspend", 7))
    assert status(service, Delivery, waiting).status == DeliveryStatus.pending
    assert alices in emitted(service)
