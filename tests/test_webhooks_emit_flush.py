"""emit() flushes the session first and builds a lazy payload after it, so a service
emitting about a new row needs no flush of its own to put the row's id in the event."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from sample_service import Thing
from sqlalchemy import delete, select

from srcore.webhooks import emit
from srcore.webhooks.models import OutboxRow, WebhookBase


@pytest.fixture(autouse=True)
def clean(app: Any) -> Iterator[None]:
    yield
    with app.extensions["srcore"].db.transaction() as s:
        s.execute(delete(Thing))
        for table in reversed(WebhookBase.metadata.sorted_tables):
            s.execute(delete(table))


def test_a_lazy_payload_and_resource_see_the_new_rows_id(app: Any, db: Any) -> None:
    db.add(thing := Thing(name="new"))
    assert thing.id is None
    with app.app_context():
        emit(
            "thing:created",
            lambda: {"id": thing.id, "name": thing.name},
            resource=lambda: f"thing:{thing.id}",
            session=db,
        )
    db.commit()
    row = db.scalars(select(OutboxRow)).one()
    assert thing.id is not None
    assert row.resource == f"thing:{thing.id}"
    assert json.loads(row.payload) == {"id": thing.id, "name": "new"}


def test_a_plain_payload_still_works_and_pending_rows_are_flushed(app: Any, db: Any) -> None:
    db.add(thing := Thing(name="pending"))
    with app.app_context():
        emit("thing:created", {"id": 0, "name": "x"}, resource="thing:0", session=db)
    assert thing.id is not None  # flushed by emit
    db.commit()
    assert json.loads(db.scalars(select(OutboxRow)).one().payload) == {"id": 0, "name": "x"}
