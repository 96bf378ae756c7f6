"""Two deploys run ``srcore migrate upgrade`` on one database at the same moment (two hosts
starting, a container that migrates as it starts): one applies each revision, the other
waits for it and then finds it applied. Before, the second failed half-way with the
database's own error (a duplicate version table on PostgreSQL, ``database is locked`` on
SQLite)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from alembic import command as alembic_command
from sqlalchemy import create_engine, text

from srcore import migrate
from srcore.migrate import CORE_LINEAGE, MigrationTarget, core_metadata
from tests.test_migrate import service_a_metadata, target

BOUND = 60  # seconds any wait below may take at most (a hang guard, not a measurement)


class HeldFirstUpgrade:
    """``alembic.command`` whose first core upgrade, once applied, waits for ``go`` before
    its transaction commits: the moment a second migration starts meanwhile."""

    def __init__(self) -> None:
        self.applied = threading.Event()
        self.go = threading.Event()
        self._first = True
        self._lock = threading.Lock()

    def upgrade(self, config: Any, revision: str) -> None:
        alembic_command.upgrade(config, revision)
        with self._lock:
            first, self._first = self._first, False
        if first and config.attributes["lineage"] == CORE_LINEAGE:
            self.applied.set()
            assert self.go.wait(BOUND)

    def __getattr__(self, name: str) -> Any:
        return getattr(alembic_command, name)


def _waiting_on_a_lock(url: str) -> bool:
    """Whether a session of this PostgreSQL database waits for a lock another one holds."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            query = "SELECT count(*) FROM pg_locks WHERE NOT granted"
            return bool(connection.execute(text(query)).scalar())
    finally:
        engine.dispose()


def _run(t: MigrationTarget, errors: list[BaseException]) -> threading.Thread:
    def work() -> None:
        try:
            migrate.upgrade_all(t)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def test_a_second_migration_waits_for_the_first_and_finds_it_applied(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    t = target("a", database_url, service_a_metadata(), tmp_path)
    held = HeldFirstUpgrade()
    monkeypatch.setattr(migrate, "command", held)
    errors: list[BaseException] = []
    first = _run(t, errors)
    assert held.applied.wait(BOUND)
    second = _run(t, errors)
    if database_url.startswith("postgresql"):
        deadline = time.monotonic() + BOUND
        while not _waiting_on_a_lock(database_url):
            assert time.monotonic() < deadline, "the second migration never waited"
            time.sleep(0.05)
    else:  # SQLite says nothing of who waits: give the second time to reach its wait
        time.sleep(1.0)
    held.go.set()
    first.join(BOUND)
    second.join(BOUND)
    assert not first.is_alive() and not second.is_alive()
    assert errors == []
    assert migrate.current(t) == {"srcore": "srcore_0010", "a": None}
    assert migrate.pending_changes(t, lineage=CORE_LINEAGE) == []
    assert set(core_metadata().tables) <= _tables(database_url)


def _tables(url: str) -> set[str]:
    from sqlalchemy import inspect

    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_reading_the_revision_takes_no_write_lock(database_url: str, tmp_path: Path) -> None:
    """``current`` reads while a migration holds the database: it is not held up by it, and
    opens an SQLite file read-only."""
    t = target("a", database_url, service_a_metadata(), tmp_path)
    migrate.upgrade_all(t)
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            if database_url.startswith("postgresql"):
                lock = f"SELECT pg_advisory_lock({migrate.MIGRATION_LOCK})"
                connection.execute(text(lock))
            assert migrate.current(t)["srcore"] == "srcore_0010"
    finally:
        engine.dispose()
