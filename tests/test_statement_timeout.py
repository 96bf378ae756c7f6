"""No request can keep the database working for long: each statement a web request runs
is stopped after ``database-statement-timeout``, answered 503 with the standard error
body, logged with its route and never its parameters, and rolled back. Migrations and
work outside requests are not bounded by it."""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import request

from srcore.config import ConfigError, load_config
from srcore.testing import write_config

#: A bind parameter of the slow statements: it must reach neither the log nor the client.
SECRET = "hunter2-do-not-log-me"
#: The bound the tests configure: far below what the slow statements take.
BOUND = "200ms"
#: Longer than any test request may take, bound or not: only a guard against hanging.
HANG_GUARD = 120.0


def slow_select(backend: str) -> str:
    """A statement that runs far past :data:`BOUND` (and still ends, should the bound be
    missing): PostgreSQL sleeps, SQLite counts to a hundred million."""
    if backend == "postgresql":
        return "SELECT CAST(:secret AS text) || CAST(pg_sleep(5) AS text)"
    return (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 100000000)"
        " SELECT count(*) || CAST(:secret AS text) FROM c"
    )


def slowish_select(backend: str) -> str:
    """A statement longer than :data:`BOUND`, short enough to wait for in a test."""
    if backend == "postgresql":
        return "SELECT pg_sleep(0.5)"
    return (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000)"
        " SELECT count(*) FROM c"
    )


def add_routes(app: Any, backend: str) -> None:
    """Routes of the sample service that run the slow statement for a page, for the API,
    in a request that has already written, and a quick one."""
    import sample_service

    import srcore.db

    slow = sa.text(slow_select(backend))

    def run_slow() -> str:
        srcore.db.session.execute(slow, {"secret": SECRET}).all()
        return "finished"

    def write_then_slow() -> Any:
        srcore.db.session.add(sample_service.Thing(name="half-written"))
        srcore.db.session.flush()
        srcore.db.session.execute(slow, {"secret": SECRET}).all()
        srcore.db.session.commit()
        return {"ok": True}

    def count() -> Any:
        things = srcore.db.session.scalar(sa.select(sa.func.count(sample_service.Thing.id)))
        timeout = None
        if backend == "postgresql":
            timeout = srcore.db.session.scalar(sa.text("SHOW statement_timeout"))
        return {"things": things, "statement_timeout": timeout, "method": request.method}

    app.add_url_rule("/slow", "slow_page", run_slow)
    app.add_url_rule("/api/slow", "slow_api", run_slow)
    app.add_url_rule("/api/slow-write", "slow_write", write_then_slow, methods=["POST"])
    app.add_url_rule("/api/count", "count", count)


@pytest.fixture
def bounded_app(srcore_database: Any, tmp_path: Path) -> Iterator[Any]:
    """The sample service on its migrated test database, with a bound of :data:`BOUND`."""
    import sample_service

    from srcore.testing.databases import _clean

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=srcore_database.url,
        extra=f"database-statement-timeout = {BOUND}\n",
    )
    app = sample_service.create_app(config=path)
    app.config["TESTING"] = True
    add_routes(app, srcore_database.backend)
    try:
        yield app
    finally:
        _clean(app)
        app.extensions["srcore"].db.dispose()


def guarded(ask: Callable[[], Any]) -> Any:
    """The answer of *ask*, run in a thread that may not take longer than the guard."""
    answers: list[Any] = []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            answers.append(ask())
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=HANG_GUARD)
    assert not thread.is_alive(), "the request still keeps the database busy"
    if failures:
        raise failures[0]
    return answers[0]


def test_a_statement_past_the_bound_is_a_clear_503_and_the_next_request_works(
    bounded_app: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = bounded_app.test_client()
    assert client.get("/api/count").status_code == 200
    with caplog.at_level(logging.WARNING, logger="srcore"):
        answer = guarded(lambda: client.get("/api/slow"))
    body = answer.get_data(as_text=True)
    assert answer.status_code == 503, body[:300]
    assert answer.is_json
    (error,) = answer.get_json()["errors"]
    assert "busy too long" in error["reason"]
    assert "unavailable" not in body  # not an outage:
    assert "Retry-After" not in answer.headers  # the same request would take as long
    assert SECRET not in body and "Traceback" not in body

    said = [r for r in caplog.records if "statement timeout" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    line = said[0].getMessage()
    assert "GET /api/slow" in line and "slow_api" in line
    logged = "\n".join(r.getMessage() + str(r.exc_info or "") for r in caplog.records)
    assert SECRET not in logged
    assert not [r for r in caplog.records if "database unavailable" in r.getMessage()]

    # The connection the statement was stopped on serves the next request.
    again = client.get("/api/count")
    assert again.status_code == 200 and again.get_json()["things"] == 0

    page = guarded(lambda: client.get("/slow"))
    text = page.get_data(as_text=True)
    assert page.status_code == 503 and page.mimetype == "text/html"
    assert "busy too long" in text and SECRET not in text and "Traceback" not in text
    assert client.get("/api/count").status_code == 200


def test_a_request_stopped_after_writing_keeps_nothing(bounded_app: Any) -> None:
    client = bounded_app.test_client()
    answer = guarded(lambda: client.post("/api/slow-write"))
    assert answer.status_code == 503, answer.get_data(as_text=True)[:300]
    assert "busy too long" in answer.get_json()["errors"][0]["reason"]
    assert client.get("/api/count").get_json()["things"] == 0
    with bounded_app.extensions["srcore"].db.session() as session:
        assert session.scalar(sa.text("SELECT count(*) FROM thing")) == 0


def test_work_outside_requests_is_not_bounded(bounded_app: Any, srcore_backend: str) -> None:
    """Workers and commands use the same engine outside any request: they keep the
    server's own setting, even on a connection a request was bounded on before."""
    client = bounded_app.test_client()
    answer = client.get("/api/count")
    assert answer.status_code == 200
    database = bounded_app.extensions["srcore"].db
    assert database.request_statement_timeout == timedelta(milliseconds=200)
    with database.session() as session:
        if srcore_backend == "postgresql":
            assert answer.get_json()["statement_timeout"] == BOUND
            assert session.scalar(sa.text("SHOW statement_timeout")) == "0"
        assert session.execute(sa.text(slowish_select(srcore_backend))).all()
    assert client.get("/api/count").get_json()["statement_timeout"] == (
        BOUND if srcore_backend == "postgresql" else None
    )


SLOW_REVISION = '''"""slow"""

from alembic import op

revision = "5b0e1d7c2a9f"
down_revision = "f2b3d1add26b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("""{statement}""")


def downgrade() -> None:
    pass
'''


def test_migrations_are_not_bounded(srcore_backend: str, tmp_path: Path) -> None:
    """A migration runs statements far longer than the service's bound (here one of
    100ms, which the same statement in a request would not survive)."""
    import sample_service

    from srcore import migrate, testdb

    if srcore_backend == "postgresql":
        url = testdb.create_test_database()
    else:
        url = f"sqlite:///{tmp_path / 'fresh.db'}"
    try:
        path = write_config(
            tmp_path / "config.ini",
            service_id="sample",
            database_url=url,
            extra="database-statement-timeout = 100ms\n",
        )
        app = sample_service.create_app(config=path)
        versions = tmp_path / "versions"
        versions.mkdir()
        ours = Path(sample_service.__file__).parent / "migrations" / "versions"
        for script in ours.glob("*.py"):
            shutil.copy(script, versions / script.name)
        slow = SLOW_REVISION.format(statement=slowish_select(srcore_backend))
        (versions / "5b0e1d7c2a9f_slow.py").write_text(slow, encoding="utf-8")
        target = migrate.MigrationTarget(
            service_id="sample",
            database_url=url,
            metadata=app.extensions["srcore"].metadata,
            versions_dir=versions,
        )
        guarded(lambda: migrate.upgrade_all(target))
        assert migrate.current(target)["sample"] == "5b0e1d7c2a9f"

        # The same statement in a request is stopped.
        app.config["TESTING"] = True
        statement = sa.text(slowish_select(srcore_backend))

        def slow() -> str:
            import srcore.db

            srcore.db.session.execute(statement).all()
            return "finished"

        app.add_url_rule("/api/slowish", "slowish", slow)
        answer = guarded(lambda: app.test_client().get("/api/slowish"))
        assert answer.status_code == 503, answer.get_data(as_text=True)[:300]
        app.extensions["srcore"].db.dispose()
    finally:
        if srcore_backend == "postgresql":
            testdb.drop_test_database(url)


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("50ms", "must be between 100ms and 1h, not 50ms"),
        ("0s", "must be between 100ms and 1h, not 0s"),
        ("2h", "must be between 100ms and 1h, not 2h"),
        ("forever", "not a duration"),
    ],
)
def test_a_bound_that_cannot_work_is_refused(tmp_path: Path, value: str, why: str) -> None:
    """One line naming the file, line, section and key, for each value that is no bound
    (or one too short for ordinary pages)."""
    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
        extra=f"database-statement-timeout = {value}\n",
    )
    line = path.read_text().splitlines().index(f"database-statement-timeout = {value}") + 1
    with pytest.raises(ConfigError) as info:
        load_config(path, specs={}, environ={})
    (problem,) = info.value.errors
    assert (problem.line, problem.section, problem.key) == (
        line,
        "sample",
        "database-statement-timeout",
    )
    assert why in problem.message
    assert str(problem).startswith(f"{path}:{line} [sample] database-statement-timeout: ")
    assert "\n" not in str(problem)


def test_the_default_bound_is_below_gunicorns_worker_timeout(tmp_path: Path) -> None:
    import sample_service

    path = write_config(
        tmp_path / "config.ini",
        service_id="sample",
        database_url=f"sqlite:///{tmp_path / 'sample.db'}",
    )
    app = sample_service.create_app(config=path)
    bound = app.extensions["srcore"].db.request_statement_timeout
    assert bound == timedelta(seconds=15) < timedelta(seconds=30)
