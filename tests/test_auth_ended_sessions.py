"""A logout at the service ends that session for every copy of its cookie (srcore.auth.ended),
on SQLite and PostgreSQL, in process; the browser and several gunicorn processes are in
test_sessions_logout_replay.py.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from srcore.auth.ended import EndedSession
from srcore.db import utcnow
from srcore.testing import create_user, log_in_client


@pytest.fixture
def service(app: Any) -> Any:
    app.config["WTF_CSRF_ENABLED"] = False
    return app


def cookie_of(app: Any, client: Any) -> str:
    name = app.session_interface.get_cookie_name(app)
    cookie = client.get_cookie(name)
    assert cookie is not None
    return str(cookie.value)


def with_cookie(app: Any, value: str) -> Any:
    """A client of its own (another browser, another machine) holding *value*."""
    other = app.test_client()
    other.set_cookie(app.session_interface.get_cookie_name(app), value)
    return other


def reads_as_alice(client: Any) -> bool:
    answer = client.get("/private")
    return answer.status_code == 200 and answer.get_data(as_text=True) == "hello alice"


def ended_rows(app: Any) -> list[EndedSession]:
    with app.extensions["srcore"].db.transaction() as db_session:
        return list(db_session.scalars(select(EndedSession)))


def test_a_copy_of_the_cookie_dies_with_the_logout_and_other_logins_live_on(service: Any) -> None:
    alice = create_user(service, "alice")
    browser = log_in_client(service.test_client(), alice)
    copied = cookie_of(service, browser)
    laptop = log_in_client(service.test_client(), alice)  # alice, elsewhere
    thief = with_cookie(service, copied)
    assert reads_as_alice(thief)
    assert service.test_client().post("/logout").status_code == 302  # no session: no row
    assert ended_rows(service) == []

    assert browser.post("/logout").status_code == 302
    assert not reads_as_alice(thief)
    assert not reads_as_alice(with_cookie(service, copied))
    assert reads_as_alice(laptop)
    # A copy replayed after the logout clears itself, and a fresh login is a new session.
    assert thief.get_cookie(service.session_interface.get_cookie_name(service)) is None
    log_in_client(browser, alice)
    assert reads_as_alice(browser) and not reads_as_alice(with_cookie(service, copied))
    assert len(ended_rows(service)) == 1


def test_a_session_begun_before_ids_ends_by_its_login_time(service: Any) -> None:
    alice = create_user(service, "alice")
    browser, laptop = service.test_client(), service.test_client()
    for client, at in ((browser, time.time() - 30), (laptop, time.time() - 20)):
        with client.session_transaction() as session:
            session.update({"_uid": alice.id, "_at": at, "_permanent": True})
    copied = cookie_of(service, browser)
    assert browser.post("/logout").status_code == 302
    assert not reads_as_alice(with_cookie(service, copied))
    assert reads_as_alice(laptop)


def test_a_logout_the_database_cannot_record_still_clears_the_cookie(
    service: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from sqlalchemy.exc import OperationalError

    import srcore.auth.ended

    def down(*args: object, **kwargs: object) -> None:
        raise OperationalError("INSERT", {}, Exception("database is locked"))

    alice = create_user(service, "alice")
    browser = log_in_client(service.test_client(), alice)
    monkeypatch.setattr(srcore.auth.ended, "record_end", down)
    with caplog.at_level(logging.ERROR, logger="srcore.auth"):
        assert browser.post("/logout").status_code == 302
    assert not reads_as_alice(browser)
    assert any("could not be recorded" in r.getMessage() for r in caplog.records)


def test_rows_go_once_no_copy_of_their_cookie_can_be_accepted(service: Any) -> None:
    lifetime = service.permanent_session_lifetime
    with service.extensions["srcore"].db.transaction() as db_session:
        db_session.add(EndedSession(sid="long-gone", expires_at=utcnow() - timedelta(seconds=1)))
        db_session.add(EndedSession(sid="still-live", expires_at=utcnow() + timedelta(hours=1)))
    alice = create_user(service, "alice")
    browser = log_in_client(service.test_client(), alice)
    before = utcnow()
    assert browser.post("/logout").status_code == 302
    rows = {row.sid: row.expires_at for row in ended_rows(service)}
    assert "long-gone" not in rows and "still-live" in rows and len(rows) == 2
    (mine,) = [expires for sid, expires in rows.items() if sid != "still-live"]
    assert before + lifetime <= mine <= utcnow() + lifetime


def test_a_logged_in_page_asks_the_database_once(service: Any) -> None:
    """Whether the session was logged out comes with the user's row: one statement, as
    before sessions could be ended here (on PostgreSQL, one round trip)."""
    from srcore.sqltrace import watch

    alice = create_user(service, "alice")
    browser = log_in_client(service.test_client(), alice)
    assert reads_as_alice(browser)  # connections and statements warmed up
    with watch(service.extensions["srcore"].db.engine) as wire:
        assert reads_as_alice(browser)
    assert len(wire.sent) == 1, wire.sent
    assert "EXISTS" in wire.sent[0].upper()  # the ended-session check, in that query
