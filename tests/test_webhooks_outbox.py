"""emit(): one INSERT in the caller's transaction; the dispatcher is told after commit only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from sqlalchemy import event, func, select

import srcore.db
from srcore.signatures import generate_secret
from srcore.webhooks import LocalDispatcher, build_dispatcher, emit
from srcore.webhooks.models import OutboxRow, Subscription

pytestmark = pytest.mark.usefixtures("clean_webhooks")


class Recorder:
    def __init__(self) -> None:
        self.nudged: list[list[int]] = []

    def nudge(self, outbox_ids: Sequence[int]) -> None:
        self.nudged.append(list(outbox_ids))


def count(db: Any) -> int:
    db.rollback()
    return int(db.scalar(select(func.count()).select_from(OutboxRow)))


def test_committed_event_is_written_and_nudged_after_commit(app: Any, db: Any) -> None:
    recorder = Recorder()
    app.extensions["srcore.webhooks"].dispatcher = recorder
    with app.app_context():
        emit("thing:created", {"id": 1, "name": "a"}, resource="thing:1")
        assert recorder.nudged == []  # not before the commit
        srcore.db.session.commit()
    assert len(recorder.nudged) == 1
    row = db.scalars(select(OutboxRow)).one()
    assert recorder.nudged == [[row.id]]
    assert (row.event, row.resource) == ("thing:created", "thing:1")
    assert json.loads(row.payload) == {"id": 1, "name": "a"}
    assert row.fanned_out_at is None


def test_rolled_back_request_emits_nothing(app: Any, db: Any) -> None:
    recorder = Recorder()
    app.extensions["srcore.webhooks"].dispatcher = recorder
    with app.app_context():
        emit("thing:created", {"id": 1})
        srcore.db.session.rollback()
        srcore.db.session.commit()  # an empty commit after the rollback nudges nothing
    with app.app_context():
        emit("thing:created", {"id": 2})  # the app context ends without a commit
    assert count(db) == 0
    assert recorder.nudged == []


def test_unknown_event_is_refused(app: Any) -> None:
    with app.app_context(), pytest.raises(ValueError, match=r"not declared.*thing:created"):
        emit("thing:exploded", {})


def test_one_insert_however_many_subscribers(app: Any, db: Any) -> None:
    for _ in range(50):
        db.add(
            Subscription(
                url="https://example.org/hook",
                events="thing:created",
                scopes="sample/things:RO",
                secret=generate_secret(),
            )
        )
    db.commit()
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement.split()[0].upper())

    engine = app.extensions["srcore"].db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        with app.app_context():
            emit("thing:created", {"id": 1})
            srcore.db.session.commit()
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert [s for s in statements if s not in ("BEGIN", "COMMIT")] == ["INSERT"]


def test_emit_in_an_explicit_session(app: Any, db: Any) -> None:
    with app.app_context():
        emit("thing:created", {"id": 3}, session=db)
    db.commit()
    assert count(db) == 1


def test_dispatcher_selection(app: Any) -> None:
    assert isinstance(app.extensions["srcore.webhooks"].dispatcher, LocalDispatcher)
    dispatcher = LocalDispatcher()
    dispatcher.nudge([])
    assert not dispatcher.wakeup.is_set()
    dispatcher.nudge([1])
    assert dispatcher.wakeup.is_set()

    config = app.extensions["srcore"].config
    broker = dict(config.global_)
    broker_app = type("A", (), {})()
    broker_app.extensions = {
        "srcore": type(
            "S",
            (),
            {
                "config": type(
                    "C", (), {"global_": {**broker, "webhooks-broker": "redis://127.0.0.1:6379/1"}}
                )()
            },
        )()
    }
    from srcore.webhooks.celery import CeleryDispatcher

    built = build_dispatcher(broker_app)  # builds objects only: nothing connects
    assert isinstance(built, CeleryDispatcher) and built.app is broker_app


def test_dates_and_datetimes_are_written_as_the_catalog_describes_them(app: Any, db: Any) -> None:
    """The catalog's schemas call a date field ``format: date`` and a datetime ``date-time``:
    emit writes both as ISO 8601 text; a type JSON lacks is refused, naming it."""
    from datetime import UTC, date, datetime
    from decimal import Decimal

    when = datetime(2026, 12, 3, 17, 0, tzinfo=UTC)
    with app.app_context():
        emit("thing:created", {"id": 1, "name": "a", "due": date(2026, 12, 24), "at": when})
        srcore.db.session.commit()
        with pytest.raises(TypeError, match="Decimal"):
            emit("thing:created", {"id": 2, "name": "b", "price": Decimal("1.5")})
        srcore.db.session.rollback()
    row = db.scalars(select(OutboxRow)).one()
    payload = json.loads(row.payload)
    assert (payload["due"], payload["at"]) == ("2026-12-24", "2026-12-03T17:00:00+00:00")


@pytest.mark.parametrize("number", [float("nan"), float("inf"), -float("inf")])
def test_a_number_json_lacks_is_refused_at_emit(app: Any, db: Any, number: float) -> None:
    """Python's json writes NaN and infinity as bare words no strict JSON parser takes: every
    delivery of such an event would fail at its receiver. emit refuses it, where the
    service's code can see why, and writes nothing."""
    with app.app_context():
        with pytest.raises(ValueError, match="must be JSON"):
            emit("thing:created", {"id": 3, "name": "c", "score": number})
        srcore.db.session.rollback()
    assert count(db) == 0
