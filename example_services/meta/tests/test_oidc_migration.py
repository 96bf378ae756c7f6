"""0006_oidc (ID-token keys by algorithm, the codes' login, the clients' logout URIs) goes
down and up again on SQLite and PostgreSQL, to a schema that matches the models."""

from __future__ import annotations

from pathlib import Path

import meta
from meta.models import Base

from srcore import migrate


def test_the_oidc_migration_goes_down_and_up_again(srcore_backend: str, tmp_path: Path) -> None:
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
    try:
        migrate.upgrade_all(target)
        assert migrate.pending_changes(target) == []
        migrate.downgrade(target, "0005_passkeys")
        assert migrate.current(target)["meta"] == "0005_passkeys"
        migrate.upgrade_all(target)
        assert migrate.current(target)["meta"] == migrate.heads(target)["meta"]
        assert migrate.pending_changes(target) == []
    finally:
        if srcore_backend == "postgresql":
            drop_test_database(url)
