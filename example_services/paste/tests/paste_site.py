"""The site the browser tests serve: a paste config on a migrated SQLite database."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def served_site(tmp: Path) -> tuple[Path, Any, int]:
    """A paste config in *tmp* on a migrated SQLite database, its app, and a free port for
    ``run_service`` to serve it on."""
    import paste

    from srcore import migrate
    from srcore.app import migration_target
    from srcore.testing import free_port, write_config

    port = free_port()
    config = write_config(
        tmp / "config.ini",
        service_id="paste",
        database_url=f"sqlite:///{tmp / 'paste.db'}",
        origin=f"http://127.0.0.1:{port}",
    )
    app = paste.create_app(config=config)
    migrate.upgrade_all(migration_target("paste", config))
    return config, app, port
