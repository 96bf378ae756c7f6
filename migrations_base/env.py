"""Alembic environment shared by every srcore lineage.

Everything comes from ``config.attributes``, set by :mod:`srcore.migrate`: the open
``connection`` (or a ``url`` for offline SQL), ``target_metadata``, ``version_table`` and
the ``include_name`` / ``include_object`` / ``render_item`` / ``on_version_apply`` hooks.
No file is read here.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, create_engine
from sqlalchemy.pool import NullPool

_OPTIONS = (
    "target_metadata",
    "version_table",
    "include_name",
    "include_object",
    "render_item",
    "compare_type",
    "compare_server_default",
    "on_version_apply",
)


def _options() -> dict[str, Any]:
    attributes = context.config.attributes
    return {name: attributes[name] for name in _OPTIONS if name in attributes}


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        render_as_batch=connection.dialect.name == "sqlite",
        **_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    url = context.config.attributes["url"]
    context.configure(
        url=url,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=str(url).startswith("sqlite"),
        **_options(),
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(context.config.attributes["url"], poolclass=NullPool)
    try:
        with engine.begin() as connection:
            _run(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
