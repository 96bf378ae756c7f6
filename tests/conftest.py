"""Fixtures shared by srcore's own tests: a database URL for SQLite and for PostgreSQL."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from srcore import testdb
from srcore.db import Database

# srcore's fixtures (app, client, db, user, ...) are opt-in: this suite asks for them.
pytest_plugins = ["srcore.testing"]


@functools.cache
def _postgres_reachable() -> bool:
    return testdb.postgres_available()


def require_postgres() -> None:
    """Skip when PostgreSQL is unreachable; fail instead when running in CI."""
    if _postgres_reachable():
        return
    message = f"PostgreSQL is unreachable at {testdb.postgres_base_url()}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true requires it)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def postgres_module_url() -> Iterator[str]:
    """A fresh PostgreSQL database for one test module, dropped afterwards."""
    require_postgres()
    url = testdb.create_test_database()
    try:
        yield url
    finally:
        testdb.drop_test_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a SQLite file, or the module's PostgreSQL database emptied after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    url: str = request.getfixturevalue("postgres_module_url")
    try:
        yield url
    finally:
        testdb.reset_test_database(url)


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A :class:`Database` on :func:`database_url`, its pool closed after the test."""
    db = Database(database_url)
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture(scope="session")
def srcore_service() -> str:
    """srcore's own app tests build the sample service in tests/sample_service."""
    return "sample_service"


@pytest.fixture
def clean_webhooks(app: Any) -> Iterator[None]:
    """Empties the webhook tables after the test: the app's database outlives it."""
    from sqlalchemy import delete

    from srcore.webhooks.models import WebhookBase

    yield
    with app.extensions["srcore"].db.transaction() as session:
        for table in reversed(WebhookBase.metadata.sorted_tables):
            session.execute(delete(table))


def run_config_check(path: Path) -> tuple[int, str]:
    """``srcore config check`` of *path*, as the operator runs it (in a process of its own,
    none of this suite's ``SRCORE`` variables): exit status and output."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SRCORE")}
    done = subprocess.run(
        [sys.executable, "-m", "srcore", "--config", str(path), "config", "check"],
        capture_output=True,
        text=True,
        timeout=120,
        env=environ,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def run_probe(service: Path, probe: str) -> subprocess.CompletedProcess[str]:
    """Run *probe*, a test a service's author adds, as ``tests/test_probe.py`` of the
    generated *service* with its own conftest, in a pytest of its own (none of this
    suite's environment); fails unless it passed."""
    (service / "tests" / "test_probe.py").write_text(probe, encoding="utf-8")
    environ = {
        k: v for k, v in os.environ.items() if not k.startswith(("SRCORE_", "PYTEST_", "PYTHON"))
    }
    environ["PYTHONPATH"] = str(service)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_probe.py"],
        cwd=service,
        capture_output=True,
        text=True,
        env=environ,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    return result
