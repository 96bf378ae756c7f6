from __future__ import annotations

import types
from datetime import UTC, datetime, timedelta, timezone

import pytest
from flask import Flask
from sqlalchemy import ForeignKey, String, event, insert, inspect, select, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from srcore import db as srcore_db
from srcore import sqltrace
from srcore.db import (
    NAMING_CONVENTION,
    TYPE_ANNOTATION_MAP,
    Database,
    TimestampMixin,
    UserMixin,
    UserType,
    init_app,
    make_metadata,
    normalize_url,
    utcnow,
)
from srcore.migrate import core_metadata


class Base(DeclarativeBase):
    metadata = make_metadata()
    type_annotation_map = TYPE_ANNOTATION_MAP


class User(UserMixin, Base):
    __tablename__ = "user"


class Note(TimestampMixin, Base):
    __tablename__ = "note"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("user.id"))
    text: Mapped[str] = mapped_column(String(100))
    due: Mapped[datetime | None]


@pytest.fixture
def tables(database: Database) -> Database:
    Base.metadata.create_all(database.engine)
    return database


def make_user(user_id: int = 1, username: str = "alice", **kw: object) -> User:
    return User(id=user_id, username=username, email=f"{username}@example.org", **kw)


def test_metadata_uses_naming_convention() -> None:
    assert make_metadata().naming_convention == NAMING_CONVENTION
    assert make_metadata() is not make_metadata()


def test_utcnow_is_aware() -> None:
    assert utcnow().tzinfo is UTC


def test_normalize_url_picks_psycopg() -> None:
    assert normalize_url("postgresql://h/db").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://h/db").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_timestamps_set_on_insert_and_update(tables: Database) -> None:
    with tables.transaction() as s:
        s.add(make_user())
        s.flush()
        s.add(Note(id=1, user_id=1, text="hello"))
    with tables.session() as s:
        note = s.get_one(Note, 1)
        assert note.created.tzinfo is UTC
        assert note.updated.tzinfo is UTC
        assert abs(note.created - utcnow()) < timedelta(minutes=1)
        first_updated = note.updated
        note.text = "changed"
        s.commit()
    with tables.session() as s:
        note = s.get_one(Note, 1)
        assert note.updated > first_updated
        assert note.created <= first_updated


def test_datetimes_round_trip_in_utc(tables: Database) -> None:
    plus_two = timezone(timedelta(hours=2))
    when = datetime(2024, 5, 1, 12, 30, 15, 123456, tzinfo=plus_two)
    with tables.transaction() as s:
        s.add(make_user())
        s.flush()
        s.add(Note(id=1, user_id=1, text="x", due=when))
    with tables.session() as s:
        due = s.get_one(Note, 1).due
        assert due == when
        assert due is not None
        assert due.tzinfo is UTC
        assert due.hour == 10
        # Comparisons in SQL convert bound values too.
        found = s.scalars(select(Note.id).where(Note.due < when + timedelta(seconds=1))).all()
        assert found == [1]


def test_naive_datetime_rejected(tables: Database) -> None:
    with tables.session() as s:
        s.add(make_user())
        s.flush()
        s.add(Note(id=1, user_id=1, text="x", due=datetime(2024, 1, 1)))
        with pytest.raises(StatementError, match="naive datetime"):
            s.flush()


def test_user_mixin_defaults_and_properties(tables: Database) -> None:
    with tables.transaction() as s:
        s.add(make_user())
    with tables.session() as s:
        user = s.get_one(User, 1)
        assert user.user_type is UserType.unconfirmed
        assert not user.is_active
        assert not user.is_admin
        assert not user.is_suspended
        user.user_type = UserType.admin
        assert user.is_admin
        assert user.is_active
        user.user_type = UserType.suspended
        assert user.is_suspended
        assert not user.is_active
        s.commit()
        stored = s.execute(text('SELECT user_type FROM "user"')).scalar_one()
        assert stored == "suspended"


def test_username_is_unique(tables: Database) -> None:
    with tables.transaction() as s:
        s.add(make_user(1, "alice"))
    with pytest.raises(IntegrityError), tables.transaction() as s:
        s.add(User(id=2, username="alice", email="other@example.org"))


def test_user_id_is_not_generated(tables: Database) -> None:
    columns = {c["name"]: c for c in inspect(tables.engine).get_columns("user")}
    assert columns["id"]["default"] is None
    assert User.__table__.c.id.autoincrement is False
    with tables.transaction() as s:
        s.add(make_user(4242, "bob"))
    with tables.session() as s:
        assert s.get_one(User, 4242).username == "bob"


def test_unknown_user_type_rejected(tables: Database) -> None:
    with tables.session() as s:
        s.add(make_user(user_type="superuser"))
        with pytest.raises(StatementError):
            s.flush()


def test_foreign_keys_enforced(tables: Database) -> None:
    with pytest.raises(IntegrityError), tables.transaction() as s:
        s.add(Note(id=1, user_id=99, text="orphan"))


def test_mixin_columns_marked_core() -> None:
    user_columns = User.__table__.columns
    assert all(c.info.get("srcore") for c in user_columns)
    assert not any(c.info.get("srcore") for c in Note.__table__.columns)
    assert {c.name for c in core_metadata().tables["user"].columns} == {
        c.name for c in user_columns
    }


def test_transaction_rolls_back_on_error(tables: Database) -> None:
    def fail() -> None:
        with tables.transaction() as s:
            s.add(make_user())
            s.flush()
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        fail()
    with tables.session() as s:
        assert s.scalar(select(User)) is None


def test_check(database: Database) -> None:
    database.check()
    assert database.sessionmaker.kw["expire_on_commit"] is False


def test_check_fails_loudly(tmp_path: object) -> None:
    broken = Database("sqlite:////nonexistent/dir/x.db")
    with pytest.raises(Exception, match="unable to open"):
        broken.check()
    broken.dispose()


def test_sqlite_pragmas(tmp_path: object) -> None:
    database = Database(f"sqlite:///{tmp_path}/p.db")
    try:
        with database.engine.connect() as c:
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert c.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
    finally:
        database.dispose()


# --- Flask glue -------------------------------------------------------------------------


def make_app(database: Database, name: str = "app") -> Flask:
    app = Flask(name)
    app.extensions["srcore"] = types.SimpleNamespace(db=database)
    init_app(app, database)
    init_app(app, database)  # idempotent

    @app.get("/users")
    def users() -> list[str]:
        return list(srcore_db.session.scalars(select(User.username).order_by(User.id)))

    return app


def current_session() -> Session:
    return srcore_db.session._get_current_object()  # type: ignore[attr-defined,no-any-return]


def test_session_is_lazy_and_closed_on_teardown(tables: Database) -> None:
    app = make_app(tables)
    with app.app_context():
        from flask import g

        assert g.get("_srcore_db_session") is None
        s = current_session()
        assert current_session() is s
        srcore_db.session.add(make_user())
        srcore_db.session.flush()
        assert s.in_transaction()
    assert not s.in_transaction()
    assert tables.engine.pool.checkedout() == 0
    with tables.session() as other:
        # Never committed: the teardown rolled it back.
        assert other.scalar(select(User)) is None


def test_session_per_app_and_per_context(tables: Database, tmp_path: object) -> None:
    second = Database(tables.url)
    try:
        app1, app2 = make_app(tables, "one"), make_app(second, "two")
        with app1.app_context():
            s1 = current_session()
            with app2.app_context():
                s2 = current_session()
                assert s2 is not s1
                assert s2.get_bind() is second.engine
            assert current_session() is s1
            assert s1.get_bind() is tables.engine
        with app1.app_context():
            assert current_session() is not s1
    finally:
        second.dispose()


def test_session_without_database_is_a_clear_error() -> None:
    app = Flask("bare")
    with app.app_context(), pytest.raises(RuntimeError, match="no srcore database"):
        srcore_db.session.execute(text("SELECT 1"))


def test_request_commit_is_visible(tables: Database) -> None:
    app = make_app(tables)

    @app.post("/users")
    def add() -> str:
        srcore_db.session.add(make_user(7, "carol"))
        srcore_db.session.commit()
        return "ok"

    client = app.test_client()
    assert client.post("/users").status_code == 200
    assert client.get("/users").get_json() == ["carol"]


def test_read_only_request_statements(tables: Database) -> None:
    """A read-only request runs its queries and nothing else at the SQL level."""
    app = make_app(tables)
    statements: list[str] = []
    event.listen(
        tables.engine,
        "before_cursor_execute",
        lambda conn, cursor, stmt, params, context, many: statements.append(stmt),
    )
    client = app.test_client()
    client.get("/users")  # warm up the pool and the dialect
    statements.clear()
    assert client.get("/users").status_code == 200
    assert len(statements) == 1
    assert tables.engine.pool.checkedout() == 0


def test_read_only_request_runs_only_its_query(tables: Database) -> None:
    """A read-only request sends its query and nothing else: no BEGIN, no ROLLBACK.

    On PostgreSQL that is one round trip instead of three; SQLite's driver never began a
    transaction for a SELECT, so it runs the SELECT alone either way.
    """
    app = make_app(tables)
    client = app.test_client()
    client.get("/users")  # warm up the pool and the dialect
    with sqltrace.watch(tables.engine) as wire:
        assert client.get("/users").status_code == 200
    assert len(wire.sent) == 1, wire.sent
    assert "SELECT" in wire.sent[0].upper()
    assert wire.round_trips == (1 if tables.engine.dialect.name == "postgresql" else 0)


def add_users_then_fail() -> str:
    srcore_db.session.add(make_user(1, "alice"))
    srcore_db.session.flush()
    srcore_db.session.execute(insert(User), [{"id": 2, "username": "bob", "email": "b@x.org"}])
    raise RuntimeError("the view fails after writing")


def test_write_request_rolls_back_entirely_on_error(tables: Database) -> None:
    """A POST runs in a transaction: a failure after some writes leaves none of them.

    A read-only request goes first on the same pooled connection, so the write also
    shows that the connection left autocommit when the read gave it back.
    """
    app = make_app(tables)
    app.add_url_rule("/fail", view_func=add_users_then_fail, methods=["POST"])
    client = app.test_client()
    assert client.get("/users").get_json() == []
    with sqltrace.watch(tables.engine) as wire:
        assert client.post("/fail").status_code == 500
    assert client.get("/users").get_json() == []
    assert tables.engine.pool.checkedout() == 0
    assert wire.sent[0].upper().startswith("BEGIN")
    assert wire.sent[-1].upper().startswith("ROLLBACK")


def test_get_that_writes_by_protocol_keeps_its_transaction(tables: Database) -> None:
    """A GET marked with writes_on_safe_method commits or rolls back as a whole."""
    app = make_app(tables)

    @srcore_db.writes_on_safe_method("a confirmation link")
    def confirm() -> str:
        return add_users_then_fail()

    @srcore_db.writes_on_safe_method("a confirmation link")
    def confirm_ok() -> str:
        srcore_db.session.add(make_user(3, "carol"))
        srcore_db.session.flush()
        srcore_db.session.add(make_user(4, "dave"))
        srcore_db.session.commit()
        return "ok"

    app.add_url_rule("/confirm", view_func=confirm)
    app.add_url_rule("/confirm-ok", view_func=confirm_ok)
    client = app.test_client()
    assert client.get("/confirm").status_code == 500
    assert client.get("/users").get_json() == []
    assert client.get("/confirm-ok").status_code == 200
    assert client.get("/users").get_json() == ["carol", "dave"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_pooled_connection_leaves_autocommit_with_the_read(tables: Database) -> None:
    app = make_app(tables)
    dbapi_connections: list[object] = []
    event.listen(
        tables.engine,
        "checkin",
        lambda dbapi_connection, record: dbapi_connections.append(dbapi_connection),
    )
    assert app.test_client().get("/users").status_code == 200
    assert dbapi_connections
    assert all(c.autocommit is False for c in dbapi_connections)  # type: ignore[attr-defined]


def test_read_only_session_refuses_writes_after_its_request(tables: Database) -> None:
    """A test's outer app context keeps the session a GET opened; it still may not write
    (on PostgreSQL its connection autocommits, so a write would not wait for a commit)."""
    app = make_app(tables)
    with app.app_context():
        assert app.test_client().get("/users").status_code == 200
        srcore_db.session.add(make_user())
        with pytest.raises(srcore_db.SafeMethodWrite, match="GET"):
            srcore_db.session.flush()
        srcore_db.session.rollback()
    with tables.session() as other:
        assert other.scalar(select(User)) is None


def test_a_database_this_process_may_not_write_still_serves_reads(
    tmp_path: object, caplog: pytest.LogCaptureFixture
) -> None:
    """A database made by a command run as root, in SQLite's default journal mode, then
    served by the service's user: switching it to WAL writes the file, and failed, so every
    connection failed and reads answered 503 too. Reads now go on; each write is refused."""
    import sqlite3
    from pathlib import Path

    path = Path(str(tmp_path)) / "root-made.db"
    made = sqlite3.connect(path)
    made.execute("CREATE TABLE note (id INTEGER PRIMARY KEY, text TEXT)")
    made.execute("INSERT INTO note (text) VALUES ('kept')")
    made.commit()
    made.close()
    # Read-only as the service's user would find it (root ignores file modes).
    database = Database(f"sqlite:///file:{path}?mode=ro&uri=true")
    try:
        with caplog.at_level("WARNING", logger="srcore.db"), database.session() as session:
            assert session.execute(text("SELECT text FROM note")).scalar_one() == "kept"
            with pytest.raises(Exception, match="readonly"):
                session.execute(text("INSERT INTO note (text) VALUES ('lost')"))
        assert any("read-only" in r.getMessage() for r in caplog.records)
    finally:
        database.dispose()
