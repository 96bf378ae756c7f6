"""A row a request read, deleted by another request before this one wrote it: a 409 that
asks to reload, not a 500 (SQLAlchemy's StaleDataError at the flush, ObjectDeletedError
when an expired attribute of the gone row is read); and ``lock_row``, which a view calls
to hold the row and judge it as it now is."""

from __future__ import annotations

from typing import Any

import pytest
from sample_service import Thing
from sqlalchemy import delete, update
from sqlalchemy.exc import OperationalError

from srcore.db import session, writes_on_safe_method
from srcore.sqlrows import lock_row
from srcore.testing import log_in_client


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


def test_lock_row_reads_the_row_again_and_holds_it(app: Any, thing: int) -> None:
    database = app.extensions["srcore"].db
    with database.session() as mine:
        row = mine.get(Thing, thing)
        assert row is not None
        with database.transaction() as other:
            other.execute(update(Thing).where(Thing.id == thing).values(name="changed"))
        assert lock_row(mine, row)
        assert row.name == "changed" and not mine.is_modified(row)
        # Held until this transaction ends: another writer cannot change it meanwhile.
        with database.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql("SET lock_timeout = '200ms'")
            else:
                conn.exec_driver_sql("PRAGMA busy_timeout = 100")
            with pytest.raises(OperationalError):
                conn.execute(update(Thing).where(Thing.id == thing).values(name="blocked"))
            conn.rollback()
        mine.commit()
    with database.transaction() as check:
        assert check.get(Thing, thing).name == "changed"


def test_lock_row_says_when_the_row_is_gone(app: Any, thing: int) -> None:
    database = app.extensions["srcore"].db
    with database.session() as mine:
        row = mine.get(Thing, thing)
        _delete_meanwhile(app, thing)
        assert lock_row(mine, row) is False


def test_the_409_page_of_a_logged_in_user_is_the_sites_page(
    app: Any, user: Any, thing: int, caplog: Any
) -> None:
    """The page's layout reads the logged-in user through the request's session, whose
    flush failed: it is rolled back first (the page was plain text, with an error logged)."""

    @writes_on_safe_method("a test page that writes when opened")
    def rename_page(ident: int) -> Any:
        row = session.get(Thing, ident)
        assert row is not None
        _delete_meanwhile(app, ident)
        row.name = "renamed"
        session.commit()
        return "renamed"

    app.add_url_rule("/rename/<int:ident>", view_func=rename_page)
    client = log_in_client(app.test_client(), user)
    answer = client.get(f"/rename/{thing}")
    assert answer.status_code == 409
    html = answer.get_data(as_text=True)
    assert "<!doctype html>" in html.lower() and user.username in html and "meanwhile" in html
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
