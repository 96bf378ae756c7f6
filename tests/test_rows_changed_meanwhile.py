"""A row a request read, deleted by another request before this one wrote it: a 409 that
asks to reload, not a 500 (SQLAlchemy's StaleDataError at the flush, ObjectDeletedError
when an expired attribute of the gone row is read)."""

from __future__ import annotations

from typing import Any

import pytest
from sample_service import Thing
from sqlalchemy import delete

from srcore.db import session


def _delete_meanwhile(app: Any, ident: int) -> None:
    with app.extensions["srcore"].db.transaction() as other:
        other.execute(delete(Thing).where(Thing.id == ident))


@pytest.fixture
def thing(app: Any) -> int:
    with app.extensions["srcore"].db.transaction() as db_session:
        row = Thing(name="old")
        db_session.add(row)
        db_session.flush()
        return row.id


@pytest.mark.parametrize("how", ["changed", "expired"])
def test_a_row_deleted_meanwhile_is_a_409(app: Any, thing: int, how: str, caplog: Any) -> None:
    def rename(ident: int) -> Any:
        row = session.get(Thing, ident)
        assert row is not None
        if how == "expired":
            session.expire(row)
        _delete_meanwhile(app, ident)
        row.name = "renamed"
        session.commit()
        return {"name": row.name}

    app.add_url_rule("/api/rename/<int:ident>", view_func=rename, methods=["POST"])
    answer = app.test_client().post(f"/api/rename/{thing}")
    assert answer.status_code == 409, answer.get_data(as_text=True)[:300]
    assert "meanwhile" in answer.get_json()["errors"][0]["reason"]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
