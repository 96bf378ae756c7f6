"""meta's web logins last ``session-lifetime`` past their last use, as documented, on the
server as in the cookie.

The cookie is signed afresh on every page, so a browser used every day stays logged in
for good. meta also keeps a row per logged-in browser and checks it on every page; a
login at another browser deleted the account's rows *created* more than a lifetime ago,
so the browser in use was logged out the moment its owner logged in on their phone. And
the hourly pruning kept every row (it could not tell an abandoned browser from one in
use), so an account that never logged in again kept its rows for good.

The clocks of the cookie's signature and of meta's sessions are moved by hand, so
lifetimes pass without waiting for them.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import meta
import meta.logic
import pytest
import sqlalchemy as sa
from itsdangerous.timed import TimestampSigner
from meta.models import Base, WebSession
from sqlalchemy import event, select

from srcore import migrate
from srcore.webhooks import webhooks_state

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


class Clock:
    """The time the session cookie is signed and checked with, and meta's sessions' time."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = datetime.now(UTC)
        monkeypatch.setattr(
            TimestampSigner, "get_timestamp", lambda signer: int(self.now.timestamp())
        )
        monkeypatch.setattr(meta.logic, "utcnow", lambda: self.now)

    def advance(self, by: timedelta) -> None:
        self.now += by


def logged_in(client: Any) -> bool:
    """Whether *client*'s browser is logged in at meta: its profile page shows, rather
    than sending it to the login page."""
    answer = client.get("/profile")
    if answer.status_code == 302:
        assert "/login" in answer.headers["Location"], answer.headers["Location"]
        return False
    assert answer.status_code == 200, answer.status_code
    return True


def browser(app: Any, login: Any) -> Any:
    """A new browser (its own cookie jar) logged in as alice through the login form."""
    client = app.test_client()
    answer = login(client)
    assert answer.status_code == 302, answer.get_data(as_text=True)
    assert logged_in(client)
    return client


def rows(app: Any) -> int:
    with app.extensions["srcore"].db.session() as session:
        return int(session.scalar(select(sa.func.count()).select_from(WebSession)) or 0)


def run_hourly_pruning(app: Any, now: datetime) -> None:
    """What meta's webhook worker runs every hour, after the delivery log's pruning."""
    with app.extensions["srcore"].db.session() as session:
        for hook in webhooks_state(app).prune:
            with app.app_context():
                hook(session, now)


def test_a_browser_in_use_stays_logged_in_when_the_account_logs_in_elsewhere(
    app: Any, accounts: Any, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    lifetime = app.permanent_session_lifetime
    accounts.make("alice")
    laptop = browser(app, login)
    # Used every few days for longer than a lifetime: its cookie never gets old.
    for _ in range(6):
        clock.advance(lifetime / 4)
        assert logged_in(laptop)
    phone = browser(app, login)
    assert logged_in(laptop), "logging in on another browser logged out the one in use"
    assert logged_in(phone)
    assert rows(app) == 2


def test_a_browser_idle_past_the_lifetime_is_logged_out_and_its_row_pruned(
    app: Any, accounts: Any, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    lifetime = app.permanent_session_lifetime
    accounts.make("alice")
    started = clock.now
    laptop = browser(app, login)
    desktop = browser(app, login)
    copy = app.test_client()  # what a copy of the idle browser's cookie would send
    name = app.session_interface.get_cookie_name(app)
    cookie = desktop.get_cookie(name)
    assert cookie is not None
    copy.set_cookie(name, cookie.value)

    # Until its cookie may have expired, the hourly pruning keeps the idle browser's row.
    clock.advance(lifetime - HOUR)
    assert logged_in(laptop)
    run_hourly_pruning(app, clock.now)
    assert rows(app) == 2

    clock.advance(2 * HOUR)
    assert not logged_in(desktop), "a browser idle past session-lifetime stayed logged in"
    assert logged_in(laptop)
    # A day later (the pruning's grace), the idle browser's row goes; the laptop's stays.
    clock.advance(DAY)
    assert logged_in(laptop)
    run_hourly_pruning(app, clock.now)
    assert rows(app) == 1, "the hourly pruning kept a session nobody can use any more"
    assert logged_in(laptop)
    assert not logged_in(copy)
    assert clock.now - started > lifetime + DAY


def test_logging_in_forgets_the_accounts_abandoned_browsers_only(
    app: Any, accounts: Any, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Clock(monkeypatch)
    lifetime = app.permanent_session_lifetime
    accounts.make("alice")
    browser(app, login)  # never used again
    laptop = browser(app, login)
    clock.advance(lifetime / 2)
    assert logged_in(laptop)
    clock.advance(lifetime / 2 + 2 * HOUR)
    phone = browser(app, login)
    assert rows(app) == 2, "the login forgot a browser in use, or kept an abandoned one"
    assert logged_in(laptop) and logged_in(phone)


def test_a_page_reads_the_session_once_and_records_its_use_at_most_hourly(
    app: Any, accounts: Any, login: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each page asks the database one question about the session, as before; the time
    of its last use is written once in a while, not on every page."""
    clock = Clock(monkeypatch)
    accounts.make("alice")
    laptop = browser(app, login)
    said: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if re.search(r"\bweb_session\b", statement):
            said.append(statement.split(None, 1)[0].upper())

    engine = app.extensions["srcore"].db.engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        for _ in range(5):
            clock.advance(timedelta(minutes=5))
            assert logged_in(laptop)
        assert said == ["SELECT"] * 5, said
        said.clear()
        clock.advance(HOUR)
        assert logged_in(laptop)
        assert logged_in(laptop)
        assert said == ["SELECT", "UPDATE", "SELECT"], said
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    with app.extensions["srcore"].db.session() as session:
        used = session.scalars(select(WebSession.last_used)).one()
    assert abs(used - clock.now) < timedelta(seconds=1)


def test_the_migration_dates_each_sessions_last_use_from_its_start(
    srcore_backend: str, tmp_path: Path
) -> None:
    """0010_session_last_used gives each session the time it started as its last use, goes
    down and up again, and leaves a schema that matches the models, on both databases."""
    from srcore.testdb import create_test_database, drop_test_database

    url = f"sqlite:///{tmp_path / 'meta.db'}"
    if srcore_backend == "postgresql":
        url = create_test_database()
    target = migrate.MigrationTarget(
        service_id="meta",
        database_url=url,
        metadata=Base.metadata,
        versions_dir=Path(meta.__file__).parent / "migrations" / "versions",
    )
    started = datetime(2026, 11, 1, 8, 30, tzinfo=UTC)
    engine = sa.create_engine(url)
    try:
        migrate.upgrade_all(target)
        migrate.downgrade(target, "0009_canonical_addresses")
        with engine.begin() as connection:
            connection.execute(
                sa.text(
                    'INSERT INTO "user" (id, username, email, user_type, created, updated) '
                    "VALUES (7, 'ann', 'ann@example.org', 'active', :at, :at)"
                ),
                {"at": started},
            )
            connection.execute(
                sa.text(
                    "INSERT INTO web_session (user_id, secret_hash, created, amr) "
                    "VALUES (7, :hash, :at, 'pwd')"
                ),
                {"hash": "a" * 64, "at": started},
            )
        migrate.upgrade_all(target)
        assert migrate.current(target)["meta"] == "0010_session_last_used"
        assert migrate.current(target)["meta"] == migrate.heads(target)["meta"]
        assert migrate.pending_changes(target) == []
        with engine.connect() as connection:
            used = connection.execute(sa.text("SELECT last_used FROM web_session")).scalar_one()
        if isinstance(used, str):  # SQLite hands back the text
            used = datetime.fromisoformat(used)
        if used.tzinfo is None:
            used = used.replace(tzinfo=UTC)
        assert used == started
        migrate.downgrade(target, "0009_canonical_addresses")
        migrate.upgrade_all(target)
        assert migrate.pending_changes(target) == []
    finally:
        engine.dispose()
        if srcore_backend == "postgresql":
            drop_test_database(url)
