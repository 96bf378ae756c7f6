"""Alembic rigging: the core's migration lineage and one lineage per service.

A service database holds two lineages, each with its own version table:

* ``srcore`` (table ``alembic_version_srcore``): the columns :class:`srcore.db.UserMixin`
  adds, scripts in ``migrations_base/versions/``, shipped with srcore;
* the service's own (table ``alembic_version_<service_id>``): everything else, scripts in
  the service's ``migrations/versions/``.

Both run through the one ``migrations_base/env.py``, which takes every setting from
``config.attributes``. Autogenerate in a lineage only sees what that lineage owns: tables
of its metadata, and of the ``user`` table either the core columns or the service's own.
"""

from __future__ import annotations

import functools
import logging
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.autogenerate.api import AutogenContext
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import (
    URL,
    Connection,
    Engine,
    MetaData,
    RootTransaction,
    create_engine,
    event,
    inspect,
    text,
)
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from srcore.auth.ended import EndedSessionBase
from srcore.config.database import (
    describe_connect_failure,
    driver_cause,
    missing_sqlite_database,
    sqlite_file,
    sqlite_storage_problem,
)
from srcore.config.keys import env_name
from srcore.db import (
    TYPE_ANNOTATION_MAP,
    UserMixin,
    connect_args,
    keep_sqlite_private,
    make_metadata,
    normalize_url,
    require_driver,
)
from srcore.once import OnceBase
from srcore.resources import resource_dir
from srcore.webhooks.models import WebhookBase

__all__ = [
    "CORE_LINEAGE",
    "DatabaseMissing",
    "DatabaseUnreachable",
    "DowngradeRefused",
    "MigrationStopped",
    "MigrationTarget",
    "NewerDatabase",
    "OtherServicesDatabase",
    "RevisionInfo",
    "WrongDatabase",
    "behind",
    "core_metadata",
    "current",
    "describe_behind",
    "downgrade",
    "failed_script",
    "heads",
    "history",
    "identify",
    "pending_changes",
    "revision",
    "upgrade",
    "upgrade_all",
    "version_table",
]

_LOG = logging.getLogger(__name__)

#: The name of the core's own lineage.
CORE_LINEAGE = "srcore"

_SERVICE_ID = re.compile(r"^[a-z][a-z0-9_-]*$")


@functools.cache
def core_metadata() -> MetaData:
    """The metadata of the tables the core lineage owns: ``user`` with UserMixin's columns,
    the webhook tables of :mod:`srcore.webhooks.models`, the ended web sessions of
    :mod:`srcore.auth.ended` and the used form tokens of :mod:`srcore.once`.

    It lives here, not in :mod:`srcore.db`, because the lineage spans features: the
    database layer knows no feature's tables.
    """

    class _CoreBase(DeclarativeBase):
        metadata = make_metadata()
        type_annotation_map = TYPE_ANNOTATION_MAP

    class _CoreUser(UserMixin, _CoreBase):
        __tablename__ = "user"

    for base in (WebhookBase, EndedSessionBase, OnceBase):
        for table in base.metadata.sorted_tables:
            table.to_metadata(_CoreBase.metadata)
    return _CoreBase.metadata


@dataclass(frozen=True)
class MigrationTarget:
    """A service database and the service's half of what lives in it."""

    service_id: str
    database_url: str
    metadata: MetaData
    versions_dir: Path

    def __post_init__(self) -> None:
        if not _SERVICE_ID.match(self.service_id):
            raise ValueError(f"service id {self.service_id!r} is not [a-z][a-z0-9_-]*")
        if self.service_id == CORE_LINEAGE:
            raise ValueError(f"{CORE_LINEAGE!r} is the core's lineage, not a service id")
        object.__setattr__(self, "versions_dir", Path(self.versions_dir))


@dataclass(frozen=True)
class RevisionInfo:
    """One migration script of a lineage."""

    lineage: str
    revision: str
    down_revision: tuple[str, ...]
    message: str
    is_head: bool
    path: Path


def version_table(lineage: str) -> str:
    """The version table of a lineage: ``alembic_version_<lineage>``."""
    return "alembic_version_" + lineage.replace("-", "_")


@dataclass(frozen=True)
class _Lineage:
    name: str
    metadata: MetaData
    versions_dir: Path
    core: bool


def _lineage(target: MigrationTarget, name: str | None) -> _Lineage:
    if name is None or name == target.service_id:
        return _Lineage(target.service_id, target.metadata, target.versions_dir, core=False)
    if name == CORE_LINEAGE:
        versions = resource_dir("migrations_base") / "versions"
        return _Lineage(CORE_LINEAGE, core_metadata(), versions, core=True)
    raise ValueError(f"unknown lineage {name!r}: {CORE_LINEAGE!r} or {target.service_id!r}")


def _core_columns(metadata: MetaData) -> dict[str, frozenset[str]]:
    """Table name -> names of the columns the core lineage owns in it."""
    owned: dict[str, frozenset[str]] = {}
    for table in metadata.tables.values():
        names = frozenset(c.name for c in table.columns if c.info.get("srcore"))
        if names:
            owned[table.name] = names
    return owned


def _object_filters(
    lineage: _Lineage,
) -> tuple[Callable[..., bool], Callable[..., bool]]:
    """``include_name`` and ``include_object`` hooks that keep a lineage to its own objects."""
    tables = {t.name for t in lineage.metadata.tables.values()}
    owned = _core_columns(lineage.metadata)

    def include_name(name: str | None, type_: str, parent_names: dict[str, Any]) -> bool:
        if type_ == "table":
            return name in tables
        return True

    def is_core(table_name: str, column_names: list[str]) -> bool:
        core = owned.get(table_name, frozenset())
        return bool(column_names) and all(n in core for n in column_names)

    def include_object(
        obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
    ) -> bool:
        if type_ == "table":
            return name in tables
        if type_ == "column":
            core = is_core(obj.table.name, [obj.name])
        elif type_ in ("index", "unique_constraint", "foreign_key_constraint"):
            table = getattr(obj, "table", None)
            if table is None:
                return not lineage.core
            core = is_core(table.name, [c.name for c in obj.columns])
        else:
            return True
        return core if lineage.core else not core

    return include_name, include_object


def _render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | bool:
    """Import the module of any non-SQLAlchemy type a generated script mentions."""
    if type_ == "type":
        module = type(obj).__module__
        if not module.startswith("sqlalchemy") and module != "builtins":
            autogen_context.imports.add(f"import {module}")
    return False


def _context_options(lineage: _Lineage) -> dict[str, Any]:
    include_name, include_object = _object_filters(lineage)
    return {
        "target_metadata": lineage.metadata,
        "version_table": version_table(lineage.name),
        "include_name": include_name,
        "include_object": include_object,
        "render_item": _render_item,
        "compare_type": True,
        "compare_server_default": False,
    }


def _config(lineage: _Lineage) -> Config:
    config = Config()
    base = resource_dir("migrations_base")
    config.set_main_option("script_location", str(base).replace("%", "%%"))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(lineage.versions_dir).replace("%", "%%"))
    config.attributes["lineage"] = lineage.name
    config.attributes.update(_context_options(lineage))
    _format_new_scripts(config)
    return config


def _format_new_scripts(config: Config) -> None:
    """Have Alembic run ruff over each script it writes, when ruff is installed.

    Alembic writes its own layout (single quotes, its import order), which fails the
    ``ruff check`` and ``ruff format --check`` a service's first CI run has: fixed and
    formatted as written, with the settings of the project the script is in.
    """
    import importlib.util

    if importlib.util.find_spec("ruff") is None:
        return
    # Formatted first, so that the fix step does not print the long lines of Alembic's
    # layout (E501) as if they were left in the script; formatted again after its fixes.
    hooks = {
        "ruff_format": "format --quiet",
        "ruff_fix": "check --fix --quiet",
        "ruff_format_again": "format --quiet",
    }
    config.set_section_option("post_write_hooks", "hooks", ", ".join(hooks))
    for name, options in hooks.items():
        config.set_section_option("post_write_hooks", f"{name}.type", "module")
        config.set_section_option("post_write_hooks", f"{name}.module", "ruff")
        config.set_section_option(
            "post_write_hooks", f"{name}.options", f"{options} REVISION_SCRIPT_FILENAME"
        )


#: The advisory lock a PostgreSQL migration holds for its transaction (the key is arbitrary).
MIGRATION_LOCK = 0x5C0E_0A1E
#: How long, in seconds, a migration on SQLite waits for another writer (another migration).
SQLITE_WAIT = 300
#: Milliseconds of each of the waits that make up :data:`SQLITE_WAIT`.
_SQLITE_WAIT_STEP_MS = 200


def _sqlite_transactional(engine: Engine, *, write: bool, service_id: str) -> None:
    """Let SQLite run DDL inside the migration's transaction, with foreign keys off.

    pysqlite only opens transactions before DML; batch migrations copy and drop tables,
    which must happen atomically and without foreign key enforcement. One that may *write*
    takes the write lock as it begins (``BEGIN IMMEDIATE``), before it reads the version;
    when another process holds it, it says so once and waits (:data:`SQLITE_WAIT`).
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        dbapi_connection.execute("PRAGMA foreign_keys = OFF")

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        if not write:
            connection.exec_driver_sql("BEGIN")
            return
        connection.exec_driver_sql("PRAGMA busy_timeout = 0")
        try:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        except DBAPIError as exc:
            if driver_cause(exc) != "locked":
                raise
            _LOG.warning(
                "the database of %s is being written by another process (another migration, "
                "or the service): waiting up to %d s for it to finish",
                service_id,
                SQLITE_WAIT,
            )
            # In short waits: SQLite's own wait is one call that no signal handler runs
            # during, so Ctrl-C (and a SIGTERM) went unheard for as long as it lasted.
            connection.exec_driver_sql(f"PRAGMA busy_timeout = {_SQLITE_WAIT_STEP_MS}")
            deadline = time.monotonic() + SQLITE_WAIT
            while True:
                try:
                    connection.exec_driver_sql("BEGIN IMMEDIATE")
                    break
                except DBAPIError as again:
                    if driver_cause(again) != "locked" or time.monotonic() >= deadline:
                        raise
        connection.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_WAIT * 1000}")


def _engine(url: str | URL, *, write: bool = True, service_id: str = "") -> Engine:
    parsed = normalize_url(url)
    require_driver(parsed)
    options = connect_args(parsed)
    if parsed.get_backend_name() == "sqlite":
        options.setdefault("timeout", SQLITE_WAIT)
    engine = create_engine(parsed, poolclass=NullPool, connect_args=options)
    keep_sqlite_private(engine)
    if engine.dialect.name == "sqlite":
        _sqlite_transactional(engine, write=write, service_id=service_id)
    return engine


def _one_at_a_time(connection: Connection, service_id: str) -> None:
    """Wait for any other migration of this database to commit: two deploys running
    ``srcore migrate`` at once would both find a revision unapplied and apply it, and the
    second fail half-way on what the first created. The one that waited then finds it
    applied, and says once that it waits, and for whom. (On SQLite, ``BEGIN IMMEDIATE``
    waits the same way.)"""
    if connection.dialect.name != "postgresql":
        return
    if connection.exec_driver_sql(f"SELECT pg_try_advisory_xact_lock({MIGRATION_LOCK})").scalar():
        return
    holder = connection.execute(
        text(
            "SELECT a.pid, a.application_name, a.client_addr, a.xact_start FROM pg_locks l "
            "JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND l.granted AND l.classid = 0 AND l.objid::bigint = :key AND l.database = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"key": MIGRATION_LOCK},
    ).first()
    who = ""
    if holder is not None:
        pid, application, address, since = holder
        who = f" (server pid {pid}, {application or 'no application_name'}"
        who += f" from {address}" if address else " on the server's socket"
        who += f", started {since:%Y-%m-%d %H:%M:%S %Z})" if since else ")"
    _LOG.warning(
        "another migration of the database of %s is under way%s: waiting for it to finish",
        service_id,
        who,
    )
    connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")


class DatabaseUnreachable(Exception):
    """The service's database could not be opened; nothing was read or changed.

    Its message names the service, the database (without its password) and the key to
    check, where the driver's own error names neither.
    """


class DatabaseMissing(DatabaseUnreachable):
    """The SQLite database file does not exist, and the command only reads.

    SQLite creates a missing file on connecting: ``current`` on a misspelt path would
    leave an empty database there and report it as never migrated.
    """


def _read_only(target: MigrationTarget) -> URL:
    """The URL of *target* opened read-only when it is an SQLite file, so that reading
    never creates one; :class:`DatabaseMissing` when the file is not there."""
    url = normalize_url(target.database_url)
    file = sqlite_file(url)
    if file is None:
        return url  # another backend, or a file: URI the operator wrote (its own mode)
    missing = missing_sqlite_database(target.service_id, url)
    if missing is not None:
        raise DatabaseMissing(missing)
    path = file.absolute()
    query = {**url.query, "mode": "ro", "uri": "true"}
    return url.set(database=f"file:{quote(str(path))}", query=query)


def _open(connection: Connection, *, read_only: bool, service_id: str) -> RootTransaction:
    """Begin the migration's transaction and touch the database, so that what keeps it
    from being opened fails here, before anything is read or changed.

    SQLite opens its file lazily: a file or a directory this user may not write (a
    database made by ``sudo srcore migrate``), whose WAL files it cannot make, fails only
    at the first statement, which for a read is the first of Alembic's."""
    transaction = connection.begin()
    if not read_only:
        _one_at_a_time(connection, service_id)
    elif connection.dialect.name == "sqlite":
        connection.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()
    return transaction


@contextmanager
def _connection(target: MigrationTarget, *, read_only: bool = False) -> Iterator[Connection]:
    url = _read_only(target) if read_only else target.database_url
    engine = _engine(url, write=not read_only, service_id=target.service_id)
    try:
        try:
            connection = engine.connect()
            try:
                transaction = _open(connection, read_only=read_only, service_id=target.service_id)
            except BaseException:
                connection.close()
                raise
        except DBAPIError as exc:
            message = describe_connect_failure(target.service_id, target.database_url, exc)
            raise DatabaseUnreachable(message) from exc
        with connection, transaction:
            yield connection
    finally:
        engine.dispose()


def _check_versions_dir(lineage: _Lineage) -> None:
    if not lineage.versions_dir.is_dir():
        raise FileNotFoundError(
            f"migrations of {lineage.name!r}: {lineage.versions_dir} is not a directory"
        )


class MigrationStopped(Exception):
    """A lineage's migrations were stopped by the storage (a full disk, files another user
    owns, a lock held too long) and rolled back: the lineage is where it was.

    Its message says so in one line, with the cause and what to do; the driver's text
    with a statement of a migration script means nothing to an operator there.
    """


def _applied(connection: Connection, lineage: str) -> tuple[str, ...]:
    context = MigrationContext.configure(connection, opts={"version_table": version_table(lineage)})
    return tuple(context.get_current_heads())


class WrongDatabase(Exception):
    """The database is not one this installation's migrations of the service can move;
    nothing was read past that or changed. Its message says what it is instead, in one line."""


class NewerDatabase(WrongDatabase):
    """A lineage of the database is at a revision none of the installed scripts has: a
    newer release migrated it (and the code was then put back), or it was restored from one.
    """


class OtherServicesDatabase(WrongDatabase):
    """The database holds another lineage than the core's and the service's: the
    ``database-url`` of the service names another service's database (each has its own).
    """


def _shown(target: MigrationTarget) -> str:
    return normalize_url(target.database_url).render_as_string(hide_password=True)


def _check_identity(connection: Connection, target: MigrationTarget, *, alone: bool) -> None:
    """Raise :class:`WrongDatabase` when *connection* is not the database of *target* as
    this installation knows it: a lineage is at a revision unknown here, or (when the
    service is to be *alone* in it) another lineage's version table is there: another
    service's database, or another Alembic application's.
    """
    own = {version_table(CORE_LINEAGE), version_table(target.service_id)}
    found = set(inspect(connection).get_table_names())
    others = sorted(n for n in found if n.startswith("alembic_version") and n not in own)
    if alone and others:
        names = ", ".join(
            n.removeprefix("alembic_version_") if n != "alembic_version" else "another application"
            for n in others
        )
        key = (
            f"[{target.service_id}] database-url (or {env_name(target.service_id, 'database-url')})"
        )
        raise OtherServicesDatabase(
            f"the database of {target.service_id} ({_shown(target)}) holds the migrations of "
            f"{names} ({', '.join(others)}), not only {target.service_id}'s; each service has "
            f"its own database: check {key}"
        )
    for name in (CORE_LINEAGE, target.service_id):
        if version_table(name) not in found:
            continue
        lineage = _lineage(target, name)
        scripts = _scripts(lineage)
        known = {script.revision for script in scripts.walk_revisions()}
        unknown = [r for r in _applied(connection, name) if r not in known]
        if unknown:
            newest = ",".join(scripts.get_heads()) or "none"
            what = "srcore" if lineage.core else target.service_id
            raise NewerDatabase(
                f"the {name} lineage of the database of {target.service_id} ({_shown(target)}) "
                f"is at {','.join(unknown)}, a revision the installed {what} does not have (its "
                f"newest is {newest}): a newer release of {what} migrated it. Install that "
                f"release (or a newer one) again, or restore the backup taken before it"
            )


def identify(target: MigrationTarget) -> None:
    """Raise :class:`WrongDatabase` when the service's database is another service's (it
    holds another lineage), or at a revision the installed scripts do not have. Only reads,
    as :func:`current` does.

    :func:`upgrade` and :func:`downgrade` refuse only the second: the lineages of several
    services can share one database as far as Alembic goes. ``srcore migrate``,
    ``srcore serve`` and ``srcore worker`` ask this first, since each service has its own.
    """
    with _connection(target, read_only=True) as connection:
        _check_identity(connection, target, alone=True)


def _stopped(
    target: MigrationTarget, lineage: str, was: Sequence[str], exc: DBAPIError
) -> MigrationStopped:
    cause = driver_cause(exc)
    reason = " ".join(str(exc.orig).split())
    file = sqlite_file(normalize_url(target.database_url))
    where = f"the file system of {file.absolute().parent}" if file else "the database server's disk"
    advice = f"make room on {where}, and run it again"
    found = sqlite_storage_problem(target.database_url) if cause != "full" else None
    if found is not None:
        advice = f"{found}; then run it again"
    elif cause == "locked":
        advice = "another process holds the database's write lock: let it finish, and run it again"
    elif cause == "read-only" and file is None:
        advice = (
            "the database refuses writes (a standby server, or default_transaction_read_only "
            "on for the database, the role or the server): point database-url at the primary, "
            "or turn default_transaction_read_only off, and run it again"
        )
    elif cause == "read-only":
        advice = (
            f"is {where.removeprefix('the file system of ')} mounted read-only? Then run it again"
        )
    at = ",".join(was) or "no revision"
    return MigrationStopped(
        f"the migrations of {lineage} in the database of {target.service_id} ({_shown(target)}) "
        f"stopped: {reason}. They were rolled back, and {lineage} was left where it was ({at}; "
        f"each lineage runs in one transaction): {advice}"
    )


def _run(target: MigrationTarget, lineage: _Lineage, fn: Callable[[Config], object]) -> int:
    """Run *fn* (an Alembic command) on *lineage*, in one transaction: every script it
    runs is applied, or none is (on PostgreSQL and on SQLite, whose DDL is transactional
    on the connection :func:`_sqlite_transactional` makes). Returns how many scripts ran,
    counted while this migration holds the database: one that waited for another's finds
    them applied and runs none.

    A database at a revision the scripts do not have is refused with
    :class:`NewerDatabase` before anything runs."""
    _check_versions_dir(lineage)
    config = _config(lineage)
    steps: list[object] = []
    config.attributes["on_version_apply"] = (lambda **kw: steps.append(kw["step"]),)
    was: tuple[str, ...] | None = None
    try:
        with _connection(target) as connection:
            config.attributes["connection"] = connection
            _check_identity(connection, target, alone=False)
            was = _applied(connection, lineage.name)
            fn(config)
    except DBAPIError as exc:  # in the scripts or at the commit: rolled back either way
        if was is None or driver_cause(exc) is None:
            raise  # a script's own mistake: its statement is what its author needs
        raise _stopped(target, lineage.name, was, exc) from exc
    return len(steps)


def failed_script(target: MigrationTarget, exc: BaseException) -> RevisionInfo | None:
    """The migration script of *target* (either lineage) that *exc* was raised in, or
    None when it was raised elsewhere (srcore, Alembic, the database's commit)."""
    tb = exc.__traceback__
    files: list[Path] = []
    while tb is not None:
        files.append(Path(tb.tb_frame.f_code.co_filename))
        tb = tb.tb_next
    infos = {info.path.resolve(): info for info in history(target)}
    for file in reversed(files):
        info = infos.get(file.resolve())
        if info is not None:
            return info
    return None


def upgrade(target: MigrationTarget, revision: str = "heads", *, lineage: str | None = None) -> int:
    """Upgrade a lineage to ``revision``; how many scripts this call ran.

    By default the service lineage, after bringing the core lineage to its head (service
    migrations may refer to the ``user`` table). ``lineage="srcore"`` upgrades the core
    lineage alone.
    """
    chosen = _lineage(target, lineage)
    ran = 0
    if not chosen.core:
        ran = upgrade(target, "heads", lineage=CORE_LINEAGE)
    return ran + _run(target, chosen, lambda config: command.upgrade(config, revision))


def upgrade_all(target: MigrationTarget) -> int:
    """Bring both lineages to their heads, the core first, then the service; how many
    scripts this call ran."""
    return upgrade(target, "heads")


class DowngradeRefused(Exception):
    """The downgrade would leave the service's lineage on tables the core's no longer has;
    it was rolled back."""


def downgrade(target: MigrationTarget, revision: str, *, lineage: str | None = None) -> None:
    """Downgrade one lineage (the service's by default) to ``revision`` (``base``: all).

    The core lineage is not taken to base under a service lineage that has revisions:
    those refer to the ``user`` table. SQLite, whose migrations run with foreign keys off,
    would drop it, and PostgreSQL refuses in its own words: :class:`DowngradeRefused` says
    to downgrade the service first, and nothing is changed.
    """
    chosen = _lineage(target, lineage)

    def run(config: Config) -> None:
        connection: Connection = config.attributes["connection"]
        service = _applied(connection, target.service_id) if chosen.core else ()
        refused = DowngradeRefused(
            f"{CORE_LINEAGE} cannot go to base (it drops the user table) while the "
            f"{target.service_id} lineage is at {','.join(service)}, whose tables refer to "
            f"it: downgrade {target.service_id} first (srcore migrate {target.service_id} "
            "downgrade base)"
        )
        try:
            command.downgrade(config, revision)
        except DBAPIError as exc:  # PostgreSQL: dependent_objects_still_exist
            if service and getattr(exc.orig, "sqlstate", None) == "2BP01":
                raise refused from exc
            raise
        if service and not _applied(connection, CORE_LINEAGE):
            raise refused

    _run(target, chosen, run)


def current(target: MigrationTarget) -> dict[str, str | None]:
    """Applied revision of each lineage (None if never migrated), core first.

    Only reads: an SQLite file that does not exist raises :class:`DatabaseMissing`
    rather than being created empty.
    """
    result: dict[str, str | None] = {}
    with _connection(target, read_only=True) as connection:
        for name in (CORE_LINEAGE, target.service_id):
            context = MigrationContext.configure(
                connection, opts={"version_table": version_table(name)}
            )
            revisions = context.get_current_heads()
            result[name] = ",".join(revisions) if revisions else None
    return result


def _scripts(lineage: _Lineage) -> ScriptDirectory:
    _check_versions_dir(lineage)
    return ScriptDirectory.from_config(_config(lineage))


def heads(target: MigrationTarget) -> dict[str, str | None]:
    """Head revision of each lineage's scripts (None for a lineage with no scripts)."""
    result: dict[str, str | None] = {}
    for name in (CORE_LINEAGE, target.service_id):
        found = _scripts(_lineage(target, name)).get_heads()
        result[name] = ",".join(found) if found else None
    return result


def behind(target: MigrationTarget) -> dict[str, tuple[str | None, str | None]]:
    """The lineages not at their head, core first: each one's applied and head revision.

    Only reads, as :func:`current` does. :class:`WrongDatabase` when the database is
    another service's or newer than the scripts: no upgrade brings it to its head.
    """
    identify(target)
    wanted = heads(target)
    applied = current(target)
    return {
        name: (applied.get(name), head)
        for name, head in wanted.items()
        if applied.get(name) != head
    }


def describe_behind(lineages: Mapping[str, tuple[str | None, str | None]]) -> str:
    """What :func:`behind` found, as one line for an operator."""
    return ", ".join(
        f"{name} is at {applied or 'no revision'}, its head is {head}"
        for name, (applied, head) in lineages.items()
    )


def _as_tuple(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def history(target: MigrationTarget) -> list[RevisionInfo]:
    """Every script, core lineage first, each lineage from base to head."""
    infos: list[RevisionInfo] = []
    for name in (CORE_LINEAGE, target.service_id):
        scripts = _scripts(_lineage(target, name))
        found = [
            RevisionInfo(
                lineage=name,
                revision=script.revision,
                down_revision=_as_tuple(script.down_revision),
                message=(script.doc or "").strip(),
                is_head=script.is_head,
                path=Path(script.path),
            )
            for script in scripts.walk_revisions()
        ]
        infos.extend(reversed(found))
    return infos


def revision(
    target: MigrationTarget,
    message: str,
    *,
    autogenerate: bool = True,
    lineage: str | None = None,
) -> Path:
    """Write a new migration script for a lineage (the service's by default).

    With ``autogenerate`` the database must be at the lineage's head; the script holds the
    differences between the lineage's metadata and the database, limited to what the
    lineage owns. Returns the new file's path.
    """
    chosen = _lineage(target, lineage)
    chosen.versions_dir.mkdir(parents=True, exist_ok=True)
    config = _config(chosen)
    scripts: list[Any] = []

    def make(config: Config) -> None:
        result = command.revision(config, message=message, autogenerate=autogenerate)
        scripts.extend(result if isinstance(result, list) else [result])

    if autogenerate:
        _run(target, chosen, make)
    else:
        make(config)
    if len(scripts) != 1 or scripts[0] is None:
        raise RuntimeError(f"expected one new revision, Alembic made {len(scripts)}")
    return Path(scripts[0].path)


def pending_changes(target: MigrationTarget, *, lineage: str | None = None) -> list[Any]:
    """What autogenerate would put in a new script for a lineage (empty when in sync)."""
    chosen = _lineage(target, lineage)
    options = _context_options(chosen)
    options.pop("target_metadata")
    with _connection(target) as connection:
        options["render_as_batch"] = connection.dialect.name == "sqlite"
        context = MigrationContext.configure(connection, opts=options)
        with warnings.catch_warnings():
            # SQLite's indexes on an expression (meta's one account per lower(email))
            # cannot be read back; both libraries say so at every comparison and leave
            # them out of it, as they must. PostgreSQL's are compared.
            if connection.dialect.name == "sqlite":
                for message in _UNREFLECTABLE_INDEX:
                    warnings.filterwarnings("ignore", message)
            return list(compare_metadata(context, chosen.metadata))


#: What SQLAlchemy and Alembic warn of an index on an expression on SQLite.
_UNREFLECTABLE_INDEX = (
    "Skipped unsupported reflection of expression-based index",
    "autogenerate skipping metadata-specified expression-based index",
)
