"""Throw-away PostgreSQL databases for test suites.

Each call makes a database with a unique name, so parallel test workers never collide.
The server is reached through ``SRCORE_TEST_POSTGRES_URL`` or, by default, the local
socket as the current user.
"""

from __future__ import annotations

import os
import uuid

from sqlalchemy import URL, create_engine, text
from sqlalchemy.pool import NullPool

from srcore.db import normalize_url
from srcore.extras import installed

__all__ = [
    "DEFAULT_POSTGRES_URL",
    "create_test_database",
    "drop_test_database",
    "postgres_available",
    "postgres_base_url",
    "reset_test_database",
]

DEFAULT_POSTGRES_URL = "postgresql+psycopg:///postgres"


def postgres_base_url() -> str:
    """The maintenance database URL that test databases are created from."""
    return os.environ.get("SRCORE_TEST_POSTGRES_URL") or DEFAULT_POSTGRES_URL


def _admin_url(url: str | URL) -> URL:
    return normalize_url(url).set(database="postgres")


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _execute_autocommit(url: URL, *statements: str) -> None:
    engine = create_engine(
        url,
        isolation_level="AUTOCOMMIT",
        poolclass=NullPool,
        connect_args={"connect_timeout": 5},
    )
    try:
        with engine.connect() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def postgres_available(base_url: str | None = None) -> bool:
    """Tell whether the PostgreSQL server answers, within a couple of seconds (never
    when psycopg, srcore's ``postgres`` extra, is not installed)."""
    if not installed("postgres"):
        return False
    engine = create_engine(
        normalize_url(base_url or postgres_base_url()),
        poolclass=NullPool,
        connect_args={"connect_timeout": 2},
    )
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        return False
    finally:
        engine.dispose()
    return True


def create_test_database(base_url: str | None = None, *, prefix: str = "srcore_test") -> str:
    """Create an empty database on the server of ``base_url`` and return its URL."""
    base = normalize_url(base_url or postgres_base_url())
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    _execute_autocommit(_admin_url(base), f"CREATE DATABASE {_quote(name)}")
    return base.set(database=name).render_as_string(hide_password=False)


def drop_test_database(url: str) -> None:
    """Drop a database made by :func:`create_test_database`, ending its connections."""
    target = normalize_url(url)
    name = target.database
    if not name:
        raise ValueError(f"no database name in {url!r}")
    _execute_autocommit(_admin_url(target), f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")


def reset_test_database(url: str) -> None:
    """Empty a test database: end other connections, drop and recreate the public schema."""
    target = normalize_url(url)
    _execute_autocommit(
        target,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()",
        "DROP SCHEMA public CASCADE",
        "CREATE SCHEMA public",
    )
