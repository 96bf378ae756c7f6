"""The day's new surfaces probed from outside: logged-out cookies kept alive elsewhere,
conditional requests the API ignored.

The clock the session cookie is signed with and the clock of the ended-session table are
moved by hand, so a session lifetime passes without waiting for it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from itsdangerous.timed import TimestampSigner

import srcore.auth.ended
from srcore.testing import create_user, log_in_client


class Clock:
    """A clock the test moves: the cookie signer's and the ended-session table's."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = datetime.now(UTC).timestamp()
        monkeypatch.setattr(TimestampSigner, "get_timestamp", lambda signer: int(self.now))
        monkeypatch.setattr(
            srcore.auth.ended, "utcnow", lambda: datetime.fromtimestamp(self.now, UTC)
        )


@pytest.fixture
def service(app: Any) -> Any:
    app.config["WTF_CSRF_ENABLED"] = False
    return app


def cookie_name(app: Any) -> str:
    return str(app.session_interface.get_cookie_name(app))


def cookie_of(app: Any, client: Any) -> str:
    cookie = client.get_cookie(cookie_name(app))
    assert cookie is not None
    return str(cookie.value)


def with_cookie(app: Any, value: str) -> Any:
    other = app.test_client()
    other.set_cookie(cookie_name(app), value)
    return other


def reads_as_alice(client: Any) -> bool:
    answer = client.get("/private")
    return answer.status_code == 200 and answer.get_data(as_text=True) == "hello alice"


def test_a_logged_out_copy_is_not_renewed_by_pages_that_do_not_check_it(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A copy of a logged-out cookie sent to /healthz (or a static file, or any page that
    does not look at the login) came back signed afresh; kept until its ended-session row
    was pruned, a session lifetime after the logout, the fresh copy logged in again."""
    clock = Clock(monkeypatch)
    lifetime = service.permanent_session_lifetime.total_seconds()
    alice, bob = create_user(service, "alice"), create_user(service, "bob")
    browser = log_in_client(service.test_client(), alice)
    copied = cookie_of(service, browser)
    assert browser.post("/logout").status_code == 302

    clock.now += lifetime - 60  # the copy is nearly too old; its row is still there
    thief = with_cookie(service, copied)
    answer = thief.get("/healthz")
    assert answer.status_code == 200
    name = cookie_name(service)
    renewed = [h for h in answer.headers.getlist("Set-Cookie") if h.startswith(name)]

    clock.now += 120  # the row's time is up; the next logout prunes it
    assert log_in_client(service.test_client(), bob).post("/logout").status_code == 302
    assert not reads_as_alice(with_cookie(service, cookie_of(service, thief)))
    assert not reads_as_alice(with_cookie(service, copied))
    assert renewed == [], "a logged-out login was signed afresh"


def test_a_live_login_is_still_renewed_by_a_page_that_checks_it(
    service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    lifetime = service.permanent_session_lifetime.total_seconds()
    alice = create_user(service, "alice")
    browser = log_in_client(service.test_client(), alice)
    for _ in range(3):  # each visit renews it: three lifetimes later it still logs in
        clock.now += lifetime - 60
        assert reads_as_alice(browser)


def test_two_logouts_of_one_session_at_once_record_it_without_an_error(
    service: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Log out clicked twice, or the person and the thief logging out one cookie at once:
    both read no row for the session and both inserted one; the second failed on the key
    and logged that the logout could not be recorded (copies stay valid), which was false."""
    import logging
    import threading
    import time
    from datetime import timedelta

    from sqlalchemy import text

    alice = create_user(service, "alice")
    browser = log_in_client(service.test_client(), alice)
    copy = with_cookie(service, cookie_of(service, browser))
    with copy.session_transaction() as session:
        sid = session["_sid"]
    database = service.extensions["srcore"].db
    answers: list[int] = []
    with caplog.at_level(logging.ERROR, logger="srcore.auth"):
        with database.transaction() as first:
            srcore.auth.ended.record_end(first, sid, lifetime=timedelta(days=1))
            first.flush()
            second = threading.Thread(
                target=lambda: answers.append(copy.post("/logout").status_code), daemon=True
            )
            second.start()
            # The second waits for the first's lock (SQLite: for a moment, well within
            # its busy timeout; PostgreSQL: until it is seen waiting).
            postgresql = database.engine.dialect.name == "postgresql"
            deadline = time.monotonic() + (5 if postgresql else 0.3)
            while second.is_alive() and time.monotonic() < deadline:
                if postgresql:
                    with database.engine.connect() as probe:
                        waiting = probe.execute(
                            text(
                                "SELECT count(*) FROM pg_stat_activity WHERE "
                                "wait_event_type = 'Lock' AND datname = current_database()"
                            )
                        ).scalar()
                    if waiting:
                        break
                time.sleep(0.05)
        second.join(timeout=30)
    assert answers == [302]
    assert not [r.getMessage() for r in caplog.records if "could not be recorded" in r.getMessage()]
    assert not reads_as_alice(browser)
