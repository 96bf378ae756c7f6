"""operators.md: ``srcore serve`` serves a database that is not migrated, and requests
that need it answer 503 until it is; during an upgrade, migrations run before the
services restart, so the old code meets the new tables for a while. A statement naming a
table or column the database does not have is neither the client's fault nor a broken
service: a 503 with Retry-After, and one log line naming the command that fixes it. On
PostgreSQL it was a 500 (an unhandled ProgrammingError), on SQLite an outage with a
traceback."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_db_pressure import make_todo, todo_app

from srcore.testing import require_or_skip, write_config

TICKETS = "/api/trackers/bugs/tickets"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database, not migrated."""
    if request.param == "sqlite":
        sqlite3.connect(tmp_path / "todo.db").close()
        yield f"sqlite:///{tmp_path / 'todo.db'}"
        return
    from srcore import testdb

    require_or_skip(testdb.postgres_available(), "PostgreSQL")
    url = testdb.create_test_database()
    try:
        yield url
    finally:
        testdb.drop_test_database(url)


def _said(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "database not migrated" in r.getMessage()]


def _check(answer: Any, caplog: pytest.LogCaptureFixture, words: str) -> None:
    body = answer.get_data(as_text=True)
    assert answer.status_code == 503, body[:400]
    assert answer.headers["Retry-After"] == "5"
    assert "Traceback" not in body and "SQLSTATE" not in body and "no such" not in body
    [line] = _said(caplog)
    assert "run `srcore migrate todo upgrade`" in line and words in line, line
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)


def test_a_database_not_migrated_is_a_503_naming_the_command(
    empty_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from test_db_pressure import SCOPES

    from srcore.auth import jose
    from srcore.testing import mint_token

    key = jose.generate_key("schema")
    config = write_config(tmp_path / "config.ini", service_id="todo", database_url=empty_url)
    app = todo_app(config, key)
    token = mint_token(key, audience="todo", scopes=SCOPES, user_id=1)
    try:
        with caplog.at_level(logging.INFO, "srcore"):
            answer = app.test_client().get(TICKETS, headers={"Authorization": f"Bearer {token}"})
        _check(answer, caplog, "does not exist" if "postgresql" in empty_url else "no such table")
    finally:
        app.extensions["srcore"].db.dispose()


def test_old_code_meeting_a_column_a_release_removed_is_a_503(
    empty_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = make_todo(tmp_path, empty_url)
    client = service.app.test_client()
    assert client.get(TICKETS, headers=service.headers).status_code == 200
    # What the next release's migration might do; this process still runs the old code.
    engine = service.app.extensions["srcore"].db.engine
    with engine.begin() as connection:
        connection.execute(sa.text("ALTER TABLE ticket DROP COLUMN title"))
    service.app.extensions["srcore"].db.dispose()
    try:
        with caplog.at_level(logging.INFO, "srcore"):
            answer = client.get(TICKETS, headers=service.headers)
        _check(answer, caplog, "title")
        caplog.clear()
        with caplog.at_level(logging.INFO, "srcore"):
            made = client.post(TICKETS, json={"title": "t"}, headers=service.headers)
        _check(made, caplog, "title")
    finally:
        service.app.extensions["srcore"].db.dispose()
