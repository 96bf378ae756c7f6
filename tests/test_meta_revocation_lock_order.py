"""meta applies a transaction's revocations to its own webhooks once, just before it commits.

Deleting an OAuth client revokes, in one transaction, the tokens each of its users made
with it, then the client. Applied as each event was emitted, the transaction locked one
user's webhooks, then another's; the webhook worker locks the webhooks of a batch in id
order, so a worker holding the second user's (lower ids) while waiting for the first's
closed a cycle with it, and PostgreSQL aborted one of them. Applied in one batch at the
commit, every webhook the revocations touch is locked in id order from the start: the
transaction waits for the worker, never the other way round.

The commit is the one that counts: a savepoint or transaction that rolls back applies
nothing, a session committing again applies nothing twice, and a failed flush leaves the
webhooks as they were. Every lock wait is bounded (``lock_timeout``, thread joins), and
nothing is timed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.exc import IntegrityError, OperationalError

from srcore.db import utcnow
from srcore.signatures import generate_secret
from srcore.testing import create_user
from srcore.webhooks.models import Subscription

pytestmark = pytest.mark.usefixtures("clean_webhooks")

CLIENT = "c-lock-order"
HOOK = "https://hooks.example.org/"


@pytest.fixture(scope="module")
def srcore_service() -> str:
    return "meta"


@pytest.fixture
def _mail_env(smtp_sink: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_HOST", smtp_sink.host)
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_PORT", str(smtp_sink.port))
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_TLS", "none")
    monkeypatch.setenv("SRCORE__GLOBAL__SMTP_FROM", "Test network <noreply@example.org>")


@pytest.fixture
def app(_mail_env: None, app: Any) -> Any:
    """meta's app, telling the owners of disabled webhooks through the SMTP sink."""
    return app


@pytest.fixture
def meta_db(app: Any) -> Iterator[Any]:
    """meta's database, every new PostgreSQL connection waiting at most 10 s for a lock."""
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


def authorised(meta_db: Any, user: Any, name: str) -> str:
    """*user*'s grant of the client and a token made with it; the token's jti."""
    from meta.oauth.models import Grant, PersonalAccessToken

    with meta_db.transaction() as session:
        session.add(Grant(id=f"grant-{name}", user_id=user.id, client_id=CLIENT, scope="x"))
        session.add(
            PersonalAccessToken(
                user_id=user.id,
                name=name,
                scope="meta/profile:RO",
                jti=f"jti-{name}",
                kid="test",
                expires_at=utcnow() + timedelta(days=1),
                parent=f"grant-{name}",
            )
        )
    return f"jti-{name}"


def webhook(meta_db: Any, user: Any, name: str) -> int:
    """A webhook of *user*'s set up with their token of the client; its id."""
    with meta_db.transaction() as session:
        sub = Subscription(
            owner_id=user.id,
            client_id=CLIENT,
            grant_id=f"grant-{name}",
            token_id=f"jti-{name}",
            url=HOOK + name,
            events="profile:updated",
            secret=generate_secret(),
        )
        session.add(sub)
        session.flush()
        return sub.id


@pytest.fixture
def network(app: Any, meta_db: Any) -> dict[str, int]:
    """alice and bob, each with a token of one client and a webhook it set up; bob's webhook
    has the lower id, alice's grant and token come first (as the client's deletion reads
    them)."""
    from meta.oauth.models import OAuthClient

    alice = create_user(app, "alice", password_hash="x")
    bob = create_user(app, "bob", password_hash="x")
    with meta_db.transaction() as session:
        session.add(OAuthClient(client_id=CLIENT, owner_id=alice.id, name="app", redirect_uris=""))
    bobs = webhook(meta_db, bob, "bob")
    alices = webhook(meta_db, alice, "alice")
    authorised(meta_db, alice, "alice")
    authorised(meta_db, bob, "bob")
    assert bobs < alices
    return {"alice": alices, "bob": bobs}


def enabled(meta_db: Any) -> dict[int, bool]:
    with meta_db.session() as session:
        return {s.id: s.enabled for s in session.scalars(select(Subscription))}


def hold(session: Any, sub_id: int) -> None:
    """Lock one subscription as the worker's record does (on SQLite: its one write lock)."""
    if session.get_bind().dialect.name == "postgresql":
        locked = select(Subscription.id).where(Subscription.id == sub_id).with_for_update()
        session.execute(locked)
    else:
        written = update(Subscription).where(Subscription.id == sub_id)
        session.execute(written.values(updated=Subscription.updated))


def waiting(meta_db: Any) -> None:
    """Return once a transaction of this database waits for a lock (PostgreSQL), or after a
    moment (SQLite, where it waits for the one writer all along)."""
    if meta_db.engine.dialect.name != "postgresql":
        time.sleep(0.2)
        return
    query = text(
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    )
    for _ in range(500):
        with meta_db.engine.connect() as probe:
            if probe.scalar(query):
                return
        time.sleep(0.02)
    raise AssertionError("meta's transaction never came to wait for a lock")


def delete_client(app: Any) -> None:
    """What ``POST /clients/<id>/delete`` does: revoke the client and commit."""
    from meta.oauth.models import OAuthClient
    from meta.oauth.pats import revoke_client

    from srcore.db import session

    with app.app_context():
        row = session.scalar(select(OAuthClient).where(OAuthClient.client_id == CLIENT))
        assert row is not None
        revoke_client(row)
        session.commit()


def test_deleting_a_client_waits_for_a_worker_holding_its_users_webhooks(
    app: Any, meta_db: Any, network: dict[str, int], smtp_sink: Any
) -> None:
    """The worker holds bob's webhook, then takes alice's (id order); meta's transaction,
    revoking alice's token before bob's, waits for it instead of closing a cycle."""
    failures: list[BaseException] = []

    def revoke() -> None:
        try:
            delete_client(app)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=revoke)
    try:
        with meta_db.session() as worker:
            hold(worker, network["bob"])
            thread.start()
            waiting(meta_db)
            try:
                hold(worker, network["alice"])
                worker.commit()
            except OperationalError as exc:  # PostgreSQL found a deadlock and chose the worker
                failures.append(exc)
    finally:
        if thread.ident is not None:
            thread.join(timeout=60)
    assert not thread.is_alive()
    assert failures == []
    assert enabled(meta_db) == {network["alice"]: False, network["bob"]: False}
    told = sorted(str(mail["To"]) for mail in smtp_sink.messages)
    assert told == ["alice@example.org", "bob@example.org"]


def revoke_token(session: Any, jti: str) -> None:
    from meta.oauth import events

    events.emit(session, "token", jti, expires_at=int(time.time()) + 3600)


def enable(session: Any, sub_id: int) -> None:
    sub = session.get(Subscription, sub_id)
    sub.enabled, sub.disabled_reason = True, None


def test_revocations_are_applied_at_the_commit_and_only_once(
    meta_db: Any, network: dict[str, int], smtp_sink: Any
) -> None:
    alices, bobs = network["alice"], network["bob"]
    with meta_db.session() as session:
        revoke_token(session, "jti-alice")
        assert session.get(Subscription, alices).enabled  # not before the commit
        session.commit()
        assert enabled(meta_db) == {alices: False, bobs: True}
        assert [str(mail["To"]) for mail in smtp_sink.messages] == ["alice@example.org"]

        # The owner enables it again; the same session commits again: nothing reapplied.
        enable(session, alices)
        session.commit()
        assert enabled(meta_db) == {alices: True, bobs: True}

        revoke_token(session, "jti-bob")
        session.rollback()
        session.get(Subscription, alices).url = HOOK + "moved"
        session.commit()
    assert enabled(meta_db) == {alices: True, bobs: True}
    assert len(smtp_sink.messages) == 1


def test_a_revocation_in_a_rolled_back_savepoint_is_not_applied(
    meta_db: Any, network: dict[str, int], smtp_sink: Any
) -> None:
    alices, bobs = network["alice"], network["bob"]
    with meta_db.session() as session:
        with session.begin_nested() as undone:
            revoke_token(session, "jti-bob")
            undone.rollback()
        with session.begin_nested(), session.begin_nested():  # a savepoint in a savepoint
            revoke_token(session, "jti-alice")
        session.commit()
    assert enabled(meta_db) == {alices: False, bobs: True}
    assert [str(mail["To"]) for mail in smtp_sink.messages] == ["alice@example.org"]


def test_a_transaction_committed_with_a_savepoint_open_applies_its_revocations(
    meta_db: Any, network: dict[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    """Its commit releases the savepoint only after the transaction's own ``before_commit``:
    the revocation is applied just after the commit, in a transaction of its own, and said."""
    with meta_db.transaction() as session:
        session.begin_nested()
        revoke_token(session, "jti-bob")
    assert enabled(meta_db) == {network["alice"]: True, network["bob"]: False}
    assert "applied after it" in caplog.text


def test_a_failed_flush_applies_nothing(
    meta_db: Any, network: dict[str, int], smtp_sink: Any
) -> None:
    from meta.oauth.models import Grant

    with meta_db.session() as session:
        revoke_token(session, "jti-alice")
        bob = session.scalar(select(Grant.user_id).where(Grant.id == "grant-bob"))
        session.add(Grant(id="grant-bob", user_id=bob, client_id=CLIENT, scope="x"))  # taken
        with pytest.raises(IntegrityError):
            session.commit()
        session.rollback()
        session.get(Subscription, network["bob"]).url = HOOK + "moved"
        session.commit()
    assert enabled(meta_db) == {network["alice"]: True, network["bob"]: True}
    assert smtp_sink.messages == []
