"""srcore.oncommit: work announced by a transaction runs at its commit, never after a rollback."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from flask import Flask

import srcore.db
from srcore.db import Database
from srcore.oncommit import after_commit

metadata = sa.MetaData()
notes = sa.Table("oncommit_note", metadata, sa.Column("id", sa.Integer, primary_key=True))


class Calls:
    def __init__(self) -> None:
        self.seen: list[list[object]] = []

    def __call__(self, items: list[object]) -> None:
        self.seen.append(items)


def test_runs_once_at_the_commit_with_every_item_given(database: Database) -> None:
    metadata.create_all(database.engine)
    calls, other = Calls(), Calls()
    with database.session() as session:
        session.execute(notes.insert().values(id=1))
        after_commit(session, calls, 1)
        after_commit(session, other, "a")
        with session.begin_nested():  # a savepoint that commits keeps its items
            after_commit(session, calls, 2, 3)
        session.flush()
        assert calls.seen == [] and other.seen == []  # not before the commit
        session.commit()
        assert calls.seen == [[1, 2, 3]] and other.seen == [["a"]]
        session.commit()  # a later commit has nothing left to run
        assert calls.seen == [[1, 2, 3]]
    metadata.drop_all(database.engine)


def test_a_rollback_forgets_them_even_at_a_later_commit(database: Database) -> None:
    metadata.create_all(database.engine)
    calls = Calls()
    with database.session() as session:
        session.execute(notes.insert().values(id=1))
        after_commit(session, calls, "undone")
        session.rollback()
        session.execute(notes.insert().values(id=2))
        after_commit(session, calls, "kept")
        session.commit()
        assert calls.seen == [["kept"]]
        assert session.scalars(sa.select(notes.c.id)).all() == [2]
    metadata.drop_all(database.engine)


@pytest.mark.parametrize("begun", [True, False], ids=["begun", "not-begun"])
@pytest.mark.parametrize("end", ["close", "rollback"])
def test_ending_without_a_commit_forgets_them(database: Database, begun: bool, end: str) -> None:
    """Also when nothing had begun the transaction yet (as right after a commit)."""
    calls = Calls()
    with database.session() as session:
        if begun:
            session.connection()
        after_commit(session, calls, "abandoned")
        getattr(session, end)()  # its transaction ends without a commit
        session.connection()  # the same session, used again
        session.commit()
    assert calls.seen == []


def test_a_savepoint_rolled_back_leaves_the_outer_transactions_items(database: Database) -> None:
    calls = Calls()
    with database.session() as session:
        session.connection()
        after_commit(session, calls, "outer")
        savepoint = session.begin_nested()
        after_commit(session, calls, "undone")
        inner = session.begin_nested()
        after_commit(session, calls, "undone too")
        inner.commit()  # now waits for the savepoint around it
        savepoint.rollback()
        after_commit(session, calls, "after")
        session.commit()
    assert calls.seen == [["outer", "after"]]


def test_a_failing_callback_is_logged_and_the_rest_still_run(
    database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(items: list[object]) -> None:
        raise RuntimeError("the broker is down")

    calls = Calls()
    with database.session() as session, caplog.at_level(logging.ERROR, logger="srcore.db"):
        after_commit(session, broken, 1)
        after_commit(session, calls, 2)
        session.commit()  # does not raise
    assert calls.seen == [[2]]
    assert "after a commit" in caplog.text and "the broker is down" in caplog.text


def test_the_request_session_proxy_is_followed_to_its_session(database: Database) -> None:
    app = Flask(__name__)
    app.extensions["srcore"] = SimpleNamespace(db=database)
    srcore.db.init_app(app, database)
    calls = Calls()
    with app.app_context():
        after_commit(srcore.db.session, calls, "x")
        after_commit(srcore.db.session, calls, "y")
        srcore.db.session.commit()
    assert calls.seen == [["x", "y"]]
