"""SQLAlchemy rigging shared by every service: metadata, types, mixins, engine, session.

Each service declares its own ``DeclarativeBase`` with :func:`make_metadata` and
:data:`TYPE_ANNOTATION_MAP`, and its own ``User`` model from :class:`UserMixin`. The
:class:`Database` object owns the engine; :data:`session` is the session of the current
Flask app context, opened on first use and closed on teardown.

A GET, HEAD or OPTIONS request may not write (:class:`SafeMethodWrite`), so on PostgreSQL
its session runs each query in autocommit: the query is the request's only round trip,
where a transaction would add a ``BEGIN`` and a ``ROLLBACK`` (three round trips for a
one-query read). Each query then sees its own snapshot, as if run alone; a read that
needs one snapshot across queries (or a server-side cursor) runs them in
``Database.transaction()``. Requests that write, and the GETs marked with
:func:`writes_on_safe_method`, keep one transaction that commits or rolls back as a
whole. SQLite's driver begins no transaction for a SELECT, so reads there were a single
statement already.
"""

from __future__ import annotations

import enum
import functools
import logging
import math
import os
import select
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar, cast

from flask import Flask, current_app, g, has_request_context, request
from sqlalchemy import (
    URL,
    Connection,
    DateTime,
    Dialect,
    Engine,
    Enum,
    MetaData,
    String,
    Text,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.engine import ExecutionContext
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import (
    Mapped,
    ORMExecuteState,
    Session,
    UOWTransaction,
    mapped_column,
    sessionmaker,
)
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator, TypeEngine
from werkzeug.local import LocalProxy
from werkzeug.wrappers import Response

from srcore.extras import require

__all__ = [
    "NAMING_CONVENTION",
    "SAFE_METHODS",
    "TYPE_ANNOTATION_MAP",
    "Database",
    "SafeMethodWrite",
    "TimestampMixin",
    "UTCDateTime",
    "UserMixin",
    "UserType",
    "as_utc",
    "connect_args",
    "init_app",
    "keep_sqlite_private",
    "make_metadata",
    "normalize_url",
    "release_request_connection",
    "require_driver",
    "session",
    "utcnow",
    "writes_on_safe_method",
]

#: Constraint names that are the same on every backend, so migrations can name them.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: SQLite waits this long (milliseconds) for a competing writer before giving up.
SQLITE_BUSY_TIMEOUT_MS = 5000
#: Seconds to wait for PostgreSQL to accept a connection and answer its start-up. libpq
#: waits forever by default: a server that drops packets, or accepts and never answers,
#: would hold each request (or command) until something outside kills it. A URL's own
#: ``connect_timeout`` wins.
CONNECT_TIMEOUT = 5
#: What srcore adds to a PostgreSQL connection once it is open, unless the URL sets it: a
#: server that stops answering at the network level (a failover moving its address, a
#: cable, a firewall dropping the flow) leaves an open connection waiting on TCP's own
#: retries, about fifteen minutes on Linux, and the request waiting with it. Data sent and
#: not acknowledged for ``tcp_user_timeout`` milliseconds ends the connection (a 503), and
#: keepalives find a pooled connection dead while it is idle, so the pool drops it.
#: Neither bounds a long statement: a live server acknowledges, whatever it is running.
TCP_OPTIONS: dict[str, int] = {
    "tcp_user_timeout": 10_000,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}

#: SQLite calls the statement-deadline check every this many virtual machine steps: an
#: ordinary statement takes fewer and is never interrupted to ask, a runaway one is
#: stopped within a fraction of a millisecond of its deadline.
SQLITE_PROGRESS_STEPS = 1000

_SESSION_KEY = "_srcore_db_session"

#: Methods that must not change state (RFC 9110 9.2.1): a link, a prefetch or a crawler
#: sends them without the user asking, and they carry no CSRF token and no rate limit.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: ``Session.info`` key marking the request-scoped session, the one that is guarded.
_REQUEST_SESSION = "srcore_request_session"
#: ``Session.info`` key of a request session that may not write (the request's method):
#: on PostgreSQL its queries autocommit.
_READ_ONLY = "srcore_read_only"
#: ``Session.info`` key under which :mod:`srcore.oncommit` (a sibling, not imported here)
#: keeps work waiting for the transaction's commit.
_AFTER_COMMIT = "srcore_after_commit"
#: ``ConnectionPoolEntry.info`` key: the connection was put in autocommit for a read.
_AUTOCOMMIT = "srcore_autocommit"
#: ``psycopg.pq.TransactionStatus.IDLE``: connected, no transaction open.
_PG_IDLE = 0
#: ``ConnectionPoolEntry.info`` key: the ``statement_timeout`` (milliseconds) set on a
#: PostgreSQL connection for requests; absent while it has the server's own setting.
_PG_STATEMENT_TIMEOUT = "srcore_statement_timeout"
#: ``ConnectionPoolEntry.info`` key: the :class:`_Deadline` of an SQLite connection.
_SQLITE_DEADLINE = "srcore_statement_deadline"
#: ``g`` key: the safe method of the request being dispatched, None if it may write.
_READ_ONLY_METHOD = "_srcore_read_only_method"
_WRITES_OK = "_srcore_writes_on_safe_method"
_F = TypeVar("_F", bound=Callable[..., Any])

log = logging.getLogger("srcore.db")


class SafeMethodWrite(RuntimeError):
    """A view tried to write through the request session during GET, HEAD or OPTIONS.

    It is a bug in the view, not bad input: tests see the exception, production a 500
    with nothing written. A view that must write on GET by protocol (an OAuth redirect
    back, a link in a mail) says so with :func:`writes_on_safe_method`.
    """


def writes_on_safe_method(reason: str) -> Callable[[_F], _F]:
    """Let a view write on GET; *reason* says why the protocol needs it.

    Only a GET, what a person opening a link sends: a HEAD (a link checker, a mail
    scanner, a preview) to such a view is a 405 without running it, so it never spends
    the link or changes anything, and OPTIONS never reaches a view.
    """
    if not reason:
        raise ValueError("say why this view writes on a safe method")

    def mark(view: _F) -> _F:
        setattr(view, _WRITES_OK, reason)
        return view

    return mark


def make_metadata() -> MetaData:
    """Return a new :class:`~sqlalchemy.MetaData` using :data:`NAMING_CONVENTION`."""
    return MetaData(naming_convention=dict(NAMING_CONVENTION))


def utcnow() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """*value* in UTC: an aware datetime converted, a naive one taken to be UTC already
    (what a UTC wall time read without its zone is), as pages show them.

    For the times srcore writes for machines (API answers, webhook payloads): always with
    the offset ``+00:00``, whatever zone the value came in (PostgreSQL's ``timezone``).
    """
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    PostgreSQL stores ``timestamptz``; SQLite, which has no time zones, stores the UTC wall
    time. Naive datetimes are refused on the way in: their meaning is a guess.
    """

    impl = DateTime
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(timezone=True)

    def __repr__(self) -> str:
        return "UTCDateTime()"

    @property
    def python_type(self) -> type[datetime]:
        return datetime

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"UTCDateTime expects a datetime, got {type(value).__name__}")
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(
                f"naive datetime {value.isoformat()} given for a UTCDateTime column; "
                "pass a timezone-aware datetime (srcore.db.utcnow() for now)"
            )
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: For ``DeclarativeBase.type_annotation_map``: ``Mapped[datetime]`` becomes UTCDateTime.
TYPE_ANNOTATION_MAP: dict[Any, TypeEngine[Any]] = {datetime: UTCDateTime()}

_CORE = {"srcore": True}


def _core(**info: object) -> dict[str, object]:
    return {**_CORE, **info}


class TimestampMixin:
    """``created`` and ``updated`` columns, set by the ORM on insert and update."""

    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow)
    updated: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, onupdate=utcnow)


class UserType(enum.StrEnum):
    """Account state, as decided by meta."""

    unconfirmed = "unconfirmed"
    active = "active"
    admin = "admin"
    suspended = "suspended"
    #: Deleted at meta: the row stays (what others wrote may name it), its profile dropped.
    deleted = "deleted"


class UserMixin(TimestampMixin):
    """The columns every service keeps about a user, mirrored from meta.

    The id is meta's account id, never generated locally. The columns are marked
    ``info={"srcore": True}``: the core's migration lineage owns them, a service's own
    lineage never touches them.
    """

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False, info=_core())
    username: Mapped[str] = mapped_column(String(256), unique=True, info=_core())
    email: Mapped[str] = mapped_column(String(256), index=True, info=_core())
    user_type: Mapped[UserType] = mapped_column(
        Enum(
            UserType,
            name="user_type",
            native_enum=False,
            length=16,
            values_callable=lambda cls: [member.value for member in cls],
            validate_strings=True,
        ),
        default=UserType.unconfirmed,
        info=_core(),
    )
    url: Mapped[str | None] = mapped_column(String(256), info=_core())
    location: Mapped[str | None] = mapped_column(String(256), info=_core())
    bio: Mapped[str | None] = mapped_column(Text, info=_core())
    suspension_notice: Mapped[str | None] = mapped_column(Text, info=_core())
    created: Mapped[datetime] = mapped_column(UTCDateTime(), default=utcnow, info=_core())
    updated: Mapped[datetime] = mapped_column(
        UTCDateTime(), default=utcnow, onupdate=utcnow, info=_core()
    )

    @property
    def is_admin(self) -> bool:
        return self.user_type == UserType.admin

    @property
    def is_suspended(self) -> bool:
        """True for a suspended account, and for a deleted one (refused for good)."""
        return self.user_type in (UserType.suspended, UserType.deleted)

    @property
    def is_deleted(self) -> bool:
        """True once meta deleted the account (:mod:`srcore.auth.deletion`)."""
        return self.user_type == UserType.deleted

    @property
    def is_active(self) -> bool:
        """True for confirmed, unsuspended accounts (admins included)."""
        return self.user_type in (UserType.active, UserType.admin)


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; plain ``postgresql://`` (and ``postgres://``) mean psycopg 3."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def require_driver(url: URL) -> None:
    """Raise :class:`~srcore.extras.MissingExtraError` when *url* needs psycopg and the
    ``postgres`` extra is not installed (SQLAlchemy alone says only "No module named")."""
    if url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg":
        where = url.render_as_string(hide_password=True)
        require("postgres", f"the PostgreSQL database {where}")


@functools.cache
def process_kind() -> str:
    """What this process is to an operator: ``web`` (gunicorn, ``srcore serve``), ``worker``
    (``srcore worker``), ``celery``, or the command or program that runs (``migrate``)."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = main.name.partition(".")[0] if main else os.path.basename(sys.argv[0])
    args = iter(sys.argv[1:] if program == "srcore" else ())
    for arg in args:  # the subcommand: the first argument that is no option nor --config's
        if arg == "--config":
            next(args, None)
        elif not arg.startswith("-"):
            program = arg
            break
    return {"gunicorn": "web", "serve": "web", "dev": "web"}.get(program, program)


def connect_args(url: URL) -> dict[str, Any]:
    """The driver's connect arguments srcore adds to *url*: :data:`CONNECT_TIMEOUT`,
    :data:`TCP_OPTIONS` and an ``application_name`` saying what connects (``srcore
    migrate``; a service's database adds its id, ``srcore todo web``), so that operators
    tell the connections apart in ``pg_stat_activity``. Each unless the URL sets its own
    (the name also unless ``PGAPPNAME`` does)."""
    if url.get_backend_name() != "postgresql":
        return {}
    wanted: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, **TCP_OPTIONS}
    if not os.environ.get("PGAPPNAME"):
        wanted["application_name"] = f"srcore {process_kind()}"
    return {key: value for key, value in wanted.items() if key not in url.query}


def _create_sqlite_file_private(
    _dialect: object, _record: object, cargs: list[Any], cparams: dict[str, Any]
) -> None:
    """Create a missing SQLite database file empty and owner-only before SQLite opens it.

    SQLite creates it with the umask's mode (0644 under the usual 022): readable by every
    user of the machine, with its password hashes, signing keys and webhook secrets, and
    its ``-wal`` and ``-shm`` files take the database file's mode. An empty file is an
    empty database to SQLite. A file already there keeps its mode (``srcore config
    check`` warns when others can read it or write in its directory)."""
    name = cargs[0] if cargs else cparams.get("database")
    if cparams.get("uri") or not isinstance(name, str) or name in ("", ":memory:"):
        return
    if name.startswith("file:"):
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:  # where SQLite would make it: at the end of a link, as it follows links
        os.close(os.open(os.path.realpath(name), flags, 0o600))
    except OSError:  # there already, or not makeable: SQLite opens it or says why
        return


def keep_sqlite_private(engine: Engine) -> None:
    """Have *engine* create a missing SQLite database file readable by its owner only."""
    if engine.dialect.name == "sqlite":
        event.listen(engine, "do_connect", _create_sqlite_file_private)


def _sqlite_on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
        except sqlite3.OperationalError as exc:
            # Switching to WAL writes the file: one this process may not write (made by a
            # command run as root) still serves reads in the mode it is in, and its writes
            # are refused one by one (a 503), rather than every connection failing.
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_READONLY":
                raise
            _warn_read_only(dbapi_connection)
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


_warned_read_only: set[str] = set()


def _warn_read_only(dbapi_connection: Any) -> None:
    """Say once per file that it is read-only to this process."""
    row = dbapi_connection.execute("PRAGMA database_list").fetchone()
    path = str(row[2]) if row else "?"
    if path not in _warned_read_only:
        _warned_read_only.add(path)
        log.warning("database %s is read-only to this process: reads only, writes answer 503", path)


def _readable(fd: int) -> bool:
    """Whether *fd* has something to read (or its peer closed it), without waiting."""
    if _HAS_POLL:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    return bool(select.select([fd], [], [], 0)[0])  # no poll (Windows): fds stay low there


_HAS_POLL = hasattr(select, "poll")


def _pg_drop_if_closed(dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: object) -> None:
    """Refuse a pooled PostgreSQL connection that the server closed while it sat idle.

    A restart, a failover, ``pg_terminate_backend`` or ``idle_session_timeout`` ends a
    server process at once, and its last words (a ``FATAL`` notice, then the end of the
    stream) wait unread in the idle connection's socket. Used as it was, the connection
    fails the request that takes it, and every idle one of the pool fails one more: after
    a restart, requests that were not even running got a 503. An idle connection that
    has anything to read has been closed (srcore never listens for notifications), so it
    is dropped here and the pool connects anew, and the request never sees it. The check
    is one ``poll`` of the socket, no round trip, unlike ``pool_pre_ping``'s ``SELECT``.
    Only a connection cut while a request was using it still fails that request.
    """
    try:
        closed = bool(dbapi_connection.closed) or _readable(dbapi_connection.pgconn.socket)
    except Exception as exc:  # psycopg has no socket left for it
        raise DisconnectionError(f"the connection is lost: {exc}") from exc
    if closed:
        raise DisconnectionError("the server closed this connection while it was in the pool")


class Database:
    """One service's database: its engine and its session factory."""

    engine: Engine
    sessionmaker: sessionmaker[Session]
    #: The service whose database this is (set by :func:`init_app`): it names connections.
    service_id: str | None = None

    def __init__(
        self,
        url: str | URL,
        *,
        echo: bool = False,
        pool_size: int = 5,
        max_overflow: int = 10,
        pool_timeout: float = 30.0,
        pool_recycle: int = -1,
        pool_pre_ping: bool = False,
    ) -> None:
        self.url = normalize_url(url)
        require_driver(self.url)
        if self.url.get_backend_name() == "sqlite":
            self.engine = create_engine(self.url, echo=echo)
            keep_sqlite_private(self.engine)
            event.listen(self.engine, "connect", _sqlite_on_connect)
        else:
            self.engine = create_engine(
                self.url,
                echo=echo,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                pool_recycle=pool_recycle,
                pool_pre_ping=pool_pre_ping,
                connect_args=connect_args(self.url),
            )
            if self.engine.dialect.driver == "psycopg":
                # First of the checkout listeners: the others may talk to the server.
                event.listen(self.engine, "checkout", _pg_drop_if_closed)
                event.listen(self.engine, "do_connect", self._name_connection)
        self.sessionmaker = sessionmaker(bind=self.engine, expire_on_commit=False)
        event.listen(self.sessionmaker, "before_flush", _refuse_flush)
        event.listen(self.sessionmaker, "do_orm_execute", _refuse_dml)
        if self.engine.dialect.driver == "psycopg":
            event.listen(self.sessionmaker, "after_begin", _autocommit_reads)
            event.listen(self.engine, "reset", _end_autocommit)

    def _name_connection(
        self, _dialect: Dialect, _record: object, _args: object, params: Any
    ) -> None:
        """Add the service to the name :func:`connect_args` gave (``srcore todo web``):
        operators count each service's connections by kind of process."""
        if self.service_id and params.get("application_name") == f"srcore {process_kind()}":
            params["application_name"] = f"srcore {self.service_id} {process_kind()}"

    #: How long one statement run for a web request may take; None: no bound.
    request_statement_timeout: timedelta | None = None

    def __repr__(self) -> str:
        return f"<Database {self.url.render_as_string(hide_password=True)}>"

    def limit_request_statements(self, timeout: timedelta) -> None:
        """Have the database stop any one statement run for a web request after *timeout*.

        No input a request carries may keep the database working for minutes, holding a
        web worker, a connection and locks. A stopped statement raises an
        :class:`~sqlalchemy.exc.OperationalError` (PostgreSQL's ``query_canceled``,
        SQLite's ``SQLITE_INTERRUPT``) that :mod:`srcore.errors` answers as such, not as an
        outage. Statements run outside a request (migrations, workers, commands) keep the
        server's own setting: they may legitimately run long. Other databases and drivers
        are left unbounded, with a warning.
        """
        if timeout <= timedelta(0):
            raise ValueError("a statement timeout is longer than nothing")
        first = self.request_statement_timeout is None
        self.request_statement_timeout = timeout
        if not first:
            return
        backend = self.url.get_backend_name()
        if backend == "postgresql" and self.engine.dialect.driver == "psycopg":
            event.listen(self.engine, "checkout", self._pg_statement_timeout)
        elif backend == "sqlite":
            event.listen(self.engine, "checkout", _sqlite_deadline_on_checkout)
            event.listen(self.engine, "checkin", _sqlite_deadline_on_checkin)
            # The driver's execute calls, not the engine's cursor events: an engine with
            # those builds an event dispatcher for every connection (tens of microseconds).
            for name in ("do_execute", "do_executemany", "do_execute_no_params"):
                event.listen(self.engine, name, self._sqlite_start_statement)
        else:
            log.warning(
                "database-statement-timeout is not applied to %s: srcore bounds statements "
                "on PostgreSQL (psycopg) and SQLite only",
                self.url.drivername,
            )

    def _pg_statement_timeout(
        self, dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: object
    ) -> None:
        """Give a connection checked out for a request the bound, and one checked out for
        anything else the server's setting back, when it does not have it already.

        The setting is the connection's own (``SET``, not ``SET LOCAL``): it costs one round
        trip when a connection changes hands between requests and other work, and none
        otherwise; a request's reads run in autocommit, where ``SET LOCAL`` means nothing.
        """
        timeout = self.request_statement_timeout
        wanted = _milliseconds(timeout) if timeout and has_request_context() else None
        if record.info.get(_PG_STATEMENT_TIMEOUT) == wanted:
            return
        if dbapi_connection.pgconn.transaction_status != _PG_IDLE:
            return  # never reached: the pool rolls a returned connection back
        sql = f"SET statement_timeout = {wanted}" if wanted else "RESET statement_timeout"
        autocommit = dbapi_connection.autocommit
        try:
            # Outside a transaction, so that it holds whatever becomes of the next one.
            dbapi_connection.autocommit = True
            try:
                dbapi_connection.execute(sql)
            finally:
                dbapi_connection.autocommit = autocommit
        except self.engine.dialect.loaded_dbapi.Error as exc:
            # A connection a restart cut: the pool drops it and connects anew.
            raise DisconnectionError(str(exc)) from exc
        if wanted is None:
            record.info.pop(_PG_STATEMENT_TIMEOUT, None)
        else:
            record.info[_PG_STATEMENT_TIMEOUT] = wanted

    def _sqlite_start_statement(self, _cursor: object, *args: Any) -> bool:
        """Start the clock of a statement run for a request; any other runs unbounded.

        Called as the driver is about to run it; *args* end with its execution context.
        Returns False: the driver still runs the statement.
        """
        context: ExecutionContext = args[-1]
        deadline: _Deadline | None = context.connection.info.get(_SQLITE_DEADLINE)
        if deadline is not None:
            timeout = self.request_statement_timeout
            if timeout is not None and has_request_context():
                deadline.at = time.monotonic() + timeout.total_seconds()
            else:
                deadline.at = math.inf
        return False

    def session(self) -> Session:
        """Open a new session; the caller closes it (CLI commands, workers)."""
        return self.sessionmaker()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """Yield a session in a transaction: committed on success, rolled back on error."""
        with self.sessionmaker.begin() as db_session:
            yield db_session

    def check(self) -> None:
        """Run ``SELECT 1``; raises if the database cannot be reached."""
        with self.engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _milliseconds(timeout: timedelta) -> int:
    return max(1, round(timeout.total_seconds() * 1000))


class _Deadline:
    """When the statement running on one SQLite connection must stop (monotonic clock).

    SQLite has no statement timeout of its own; its progress handler, called every
    :data:`SQLITE_PROGRESS_STEPS` steps of a statement, interrupts it by answering true.
    """

    __slots__ = ("at",)

    def __init__(self) -> None:
        self.at = math.inf

    def passed(self, _now: Callable[[], float] = time.monotonic) -> bool:
        return _now() > self.at


def _sqlite_deadline_on_checkout(
    dbapi_connection: Any, record: ConnectionPoolEntry, _proxy: object
) -> None:
    if _SQLITE_DEADLINE not in record.info:
        deadline = _Deadline()
        dbapi_connection.set_progress_handler(deadline.passed, SQLITE_PROGRESS_STEPS)
        record.info[_SQLITE_DEADLINE] = deadline


def _sqlite_deadline_on_checkin(_dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
    """A returned connection's next user starts unbounded, even one that runs SQL on the
    driver's connection without SQLAlchemy (which would not start a clock)."""
    deadline: _Deadline | None = record.info.get(_SQLITE_DEADLINE)
    if deadline is not None:
        deadline.at = math.inf


def _autocommit_reads(db_session: Session, _transaction: object, connection: Connection) -> None:
    """Put a read-only request session's connection in autocommit before its first query.

    SQLAlchemy's transaction has begun only in Python at this point; psycopg sends the
    ``BEGIN`` with the first query unless the connection is in autocommit, and then sends
    nothing at the ``ROLLBACK`` either, the connection being idle. Setting the flag is
    local to psycopg (no round trip), unlike the engine's ``isolation_level`` option,
    which costs a few hundred Python calls per checkout and checkin. A connection already
    in a transaction (a pre-ping began one) keeps it: the read is then merely slower.
    """
    if not db_session.info.get(_READ_ONLY):
        return
    pooled = connection.connection
    dbapi_connection: Any = pooled.dbapi_connection
    if dbapi_connection is None or dbapi_connection.pgconn.transaction_status != _PG_IDLE:
        return
    dbapi_connection.autocommit = True
    pooled.info[_AUTOCOMMIT] = True


def _end_autocommit(dbapi_connection: Any, record: ConnectionPoolEntry, _state: object) -> None:
    """Give a connection back to the pool in transaction mode, as every other user expects.

    Runs when the pool resets a returned connection; should it raise (a broken
    connection), the pool discards the connection instead of reusing it.
    """
    if record.info.pop(_AUTOCOMMIT, False):
        dbapi_connection.autocommit = False


def _refuse(db_session: Session) -> None:
    # A read-only session refuses even after its request (a test's outer app context
    # keeps it): its connection autocommits, so a write would stick at once.
    method: str | None = db_session.info.get(_READ_ONLY)
    if method is None and db_session.info.get(_REQUEST_SESSION):
        method = _read_only_method()  # opened before the request was dispatched
    if method is not None:
        endpoint = request.endpoint if has_request_context() else None
        raise SafeMethodWrite(
            f"a {method} request must not change state ({endpoint}); "
            "use POST, or mark the view with srcore.db.writes_on_safe_method"
        )


def _refuse_flush(db_session: Session, _context: UOWTransaction, _instances: object) -> None:
    if db_session.new or db_session.dirty or db_session.deleted:
        _refuse(db_session)


def _refuse_dml(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        _refuse(state.session)


def _read_only_method() -> str | None:
    """The safe method of the request being dispatched, unless its view may write anyway."""
    if not has_request_context():
        return None  # a CLI command, a worker
    # Set by _mark_dispatching; absent in a test's request context, which dispatches nothing.
    method: str | None = g.get(_READ_ONLY_METHOD)
    return method


def _writes_on_get() -> bool:
    """Whether the view of the request is marked with :func:`writes_on_safe_method`."""
    endpoint = request.endpoint
    view = current_app.view_functions.get(endpoint) if endpoint else None
    return view is not None and bool(getattr(view, _WRITES_OK, None))


def _mark_dispatching() -> Response | None:
    """Decide once per request whether its request session may write.

    The method is the one the client sent: srcore's request class reports HEAD as GET.
    """
    method = str(request.environ.get("REQUEST_METHOD", "GET")).upper()
    read_only = method if method in SAFE_METHODS else None
    if method in ("GET", "HEAD") and _writes_on_get():
        if method == "HEAD":
            from srcore.errors import error_response

            return error_response(
                405,
                "This address does something when opened; open it with GET.",
                headers=[("Allow", "GET")],
            )
        read_only = None
    setattr(g, _READ_ONLY_METHOD, read_only)
    return None


def _current_database() -> Database:
    state = current_app.extensions.get("srcore")
    database = getattr(state, "db", None)
    if not isinstance(database, Database):
        raise RuntimeError("no srcore database on this app: app.extensions['srcore'].db is not set")
    return database


def _get_session() -> Session:
    db_session: Session | None = g.get(_SESSION_KEY)
    if db_session is None:
        db_session = _current_database().session()
        db_session.info[_REQUEST_SESSION] = True
        method = _read_only_method()
        if method is not None:
            db_session.info[_READ_ONLY] = method
        setattr(g, _SESSION_KEY, db_session)
    return db_session


def release_request_connection(*, only_read: bool = False) -> bool:
    """Give the request session's connection back to the pool, for a request about to
    wait on something other than the database (an HTTP call to meta).

    Held idle meanwhile, the connection is missing from the pool the rest of the process
    draws on, the wait's own work included: a request that copies a user from meta in a
    transaction of its own would need two at once, and as many such requests as the pool
    has connections would each hold one while waiting for a second until the pool's
    timeout. The transaction is ended only when it cannot hold a write: the session of a
    request that may not write, or one whose caller knows it has only read (*only_read*:
    the caller began it with a read of its own, nothing pending before). It commits, with
    nothing to write: what the session loaded stays loaded (it does not expire on commit,
    where a rollback would expire it), and its next query checks a connection out again.

    Returns whether the session holds no connection now; False leaves it as it was.
    """
    db_session: Session | None = g.get(_SESSION_KEY)
    if db_session is None or not db_session.in_transaction():
        return True
    if (
        db_session.new
        or db_session.dirty
        or db_session.deleted
        or db_session.in_nested_transaction()
        or db_session.info.get(_AFTER_COMMIT)
        or not (only_read or db_session.info.get(_READ_ONLY))
    ):
        return False
    db_session.commit()
    return True


def _close_session(_exc: BaseException | None = None) -> None:
    db_session: Session | None = g.pop(_SESSION_KEY, None)
    if db_session is not None:
        db_session.close()


def init_app(app: Flask, database: Database) -> None:
    """Close the app context's session on teardown; refuse its writes on safe methods;
    bound each statement of a request by the service's ``database-statement-timeout``.

    ``database`` must be the one stored as ``app.extensions["srcore"].db``; it is what
    :data:`session` opens sessions from.
    """
    if _close_session not in app.teardown_appcontext_funcs:
        app.teardown_appcontext(_close_session)
    database.service_id = getattr(app.extensions.get("srcore"), "service_id", None)
    section = getattr(app.extensions.get("srcore"), "section", None)
    timeout = section.get("database-statement-timeout") if section is not None else None
    if isinstance(timeout, timedelta):
        database.limit_request_statements(timeout)
    # The guard applies from the first before-request hook on: a request being served.
    funcs = app.before_request_funcs.setdefault(None, [])
    if _mark_dispatching not in funcs:
        funcs.insert(0, _mark_dispatching)


#: The current app context's session: opened on first use, closed on teardown. During a
#: GET, HEAD or OPTIONS request it refuses to write (:class:`SafeMethodWrite`).
session: Session = cast(Session, LocalProxy(_get_session))
