"""Migrated databases for the services under test, made once per test session."""

from __future__ import annotations

import importlib
import importlib.resources
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from srcore.testing.configs import write_config

if TYPE_CHECKING:
    import pytest

__all__ = ["ServiceDatabase"]


@dataclass
class ServiceDatabase:
    """A migrated database for one service under test, on one backend."""

    backend: str
    url: str
    config_path: Path


class _DatabasePool:
    """Migrated databases by (service, backend), made once per test session.

    A session-scoped fixture would be cached across conftests that name different
    services, so the databases are kept here, keyed by what they are for.
    """

    def __init__(self, tmp_path_factory: pytest.TempPathFactory) -> None:
        self._tmp = tmp_path_factory
        self._made: dict[tuple[str, str], ServiceDatabase] = {}
        self._drops: list[Callable[[], None]] = []

    def get(self, service: str, backend: str) -> ServiceDatabase:
        key = (service, backend)
        if key not in self._made:
            self._made[key] = self._make(service, backend)
        return self._made[key]

    def _make(self, service: str, backend: str) -> ServiceDatabase:
        from srcore import migrate
        from srcore.manifest import load_manifest

        manifest = load_manifest(service)
        tmp = self._tmp.mktemp(f"{manifest.id}-{backend}")
        if backend == "sqlite":
            url = f"sqlite:///{tmp / 'test.db'}"
        else:
            from srcore.testdb import create_test_database, drop_test_database

            url = create_test_database()
            self._drops.append(lambda: drop_test_database(url))
        config_path = write_config(tmp / "config.ini", service_id=manifest.id, database_url=url)
        module = importlib.import_module(service)
        app = module.create_app(config=config_path)
        versions = Path(str(importlib.resources.files(service))) / "migrations" / "versions"
        target = migrate.MigrationTarget(
            service_id=manifest.id,
            database_url=url,
            metadata=app.extensions["srcore"].metadata,
            versions_dir=versions,
        )
        migrate.upgrade_all(target)
        app.extensions["srcore"].db.dispose()
        return ServiceDatabase(backend, url, config_path)

    def close(self) -> None:
        for drop in self._drops:
            drop()


def _clean(app: Any) -> None:
    """Empty the service's tables and the core's (webhooks), leaving the schema."""
    from srcore.migrate import core_metadata

    metadata = app.extensions["srcore"].metadata
    service_tables = list(reversed(metadata.sorted_tables)) if metadata is not None else []
    names = {table.name for table in service_tables}
    core_tables = [t for t in reversed(core_metadata().sorted_tables) if t.name not in names]
    with app.extensions["srcore"].db.transaction() as session:
        for table in core_tables + service_tables:
            session.execute(table.delete())
