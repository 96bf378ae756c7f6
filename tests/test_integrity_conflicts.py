"""A write the database refuses because another request took the value or deleted the row
in between (a unique or foreign key violation the view's own check could not see) is the
409 of a row changed meanwhile, not a 500; any other constraint failing is still a bug."""

from __future__ import annotations

from typing import Any

import pytest
from sample_service import Thing
from sqlalchemy import text

from srcore.db import session


@pytest.fixture
def thing(app: Any) -> int:
    with app.extensions["srcore"].db.transaction() as db_session:
        row = Thing(name="old")
        db_session.add(row)
        db_session.flush()
        return row.id


def test_a_value_taken_meanwhile_is_a_409(app: Any, thing: int, caplog: Any) -> None:
    def copy(ident: int) -> Any:
        # As a view that checked the id was free, and another request took it since.
        session.add(Thing(id=ident, name="copy"))
        session.commit()
        return {"id": ident}

    app.add_url_rule("/api/copy/<int:ident>", view_func=copy, methods=["POST"])
    answer = app.test_client().post(f"/api/copy/{thing}")
    assert answer.status_code == 409, answer.get_data(as_text=True)[:300]
    assert "meanwhile" in answer.get_json()["errors"][0]["reason"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_parent_deleted_meanwhile_is_a_409(app: Any, thing: int) -> None:
    database = app.extensions["srcore"].db
    with database.engine.begin() as connection:
        connection.execute(
            text(
                "CREATE TABLE IF NOT EXISTS part "
                "(id INTEGER PRIMARY KEY, thing_id INTEGER NOT NULL REFERENCES thing (id))"
            )
        )

    def add_part(ident: int) -> Any:
        session.execute(text("INSERT INTO part (id, thing_id) VALUES (1, :t)"), {"t": ident + 1})
        session.commit()
        return {"id": 1}

    app.add_url_rule("/api/part/<int:ident>", view_func=add_part, methods=["POST"])
    try:
        answer = app.test_client().post(f"/api/part/{thing}")
    finally:
        with database.engine.begin() as connection:
            connection.execute(text("DROP TABLE part"))
    assert answer.status_code == 409, answer.get_data(as_text=True)[:300]


def test_another_constraint_failing_is_still_a_500(app: Any, caplog: Any) -> None:
    def broken() -> Any:
        session.add(Thing(name=None))
        session.commit()
        return {}

    app.add_url_rule("/api/broken", view_func=broken, methods=["POST"])
    answer = app.test_client().post("/api/broken")
    assert answer.status_code == 500
    assert [r for r in caplog.records if r.levelname == "ERROR"]
