"""PostgreSQL under pressure, as operators meet it: more requests than the server allows
connections, and a restart (its connections ended) in the middle of traffic.

Each test has a database of its own, and for the connection limit a role of its own with
``CONNECTION LIMIT``; the server's own settings are never touched. A restart is what
``pg_terminate_backend`` does to the test database's connections.
"""

from __future__ import annotations

import collections
import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from test_db_pressure import (
    CLIENTS,
    REQUESTS,
    check_rows,
    make_todo,
    outcome,
    serve,
    write_concurrently,
)

from srcore.testing.skipping import require_or_skip

pytestmark = pytest.mark.slow


def _admin() -> sa.Engine:
    from srcore.testdb import postgres_base_url

    url = sa.make_url(postgres_base_url()).set(database="postgres")
    return sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)


@pytest.fixture
def database() -> Iterator[tuple[str, str]]:
    """A fresh database owned by a role of its own; yields (URL as that role, role name).

    The role may open any number of connections until a test sets its limit.
    """
    from srcore.extras import installed
    from srcore.testdb import postgres_available

    require_or_skip(installed("postgres") and postgres_available(), "PostgreSQL")
    name = f"srcore_test_pressure_{uuid.uuid4().hex[:12]}"
    admin = _admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE ROLE "{name}" LOGIN')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" OWNER "{name}"')
    base = sa.make_url(admin.url)
    url = base.set(username=name, password=None, database=name)
    try:
        yield url.render_as_string(hide_password=False), name
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.exec_driver_sql(f'DROP ROLE IF EXISTS "{name}"')
        admin.dispose()


def _limit(role: str, connections: int) -> None:
    admin = _admin()
    with admin.connect() as conn:
        conn.exec_driver_sql(f'ALTER ROLE "{role}" CONNECTION LIMIT {connections}')
    admin.dispose()


def _cut(database: str, pid: int | None = None) -> int:
    """End the connections to *database* (or the one of *pid*) as a restart does, and wait
    (a few seconds at most) until the server has let them go."""
    admin = _admin()
    which = "pid = :pid" if pid is not None else "datname = :name"
    with admin.connect() as conn:
        ended = conn.execute(
            sa.text(
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE {which}"
                " AND pid <> pg_backend_pid()"
            ),
            {"name": database, "pid": pid},
        ).all()
        for _ in range(100):
            left = conn.execute(
                sa.text(f"SELECT count(*) FROM pg_stat_activity WHERE {which}"),
                {"name": database, "pid": pid},
            ).scalar()
            if not left:
                break
            time.sleep(0.05)
    admin.dispose()
    return len(ended)


def test_requests_past_the_connection_limit_are_a_busy_503(
    tmp_path: Path, database: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """Every connection the role may open is taken (by other processes, other services):
    a request that needs one more is answered at once 503 with Retry-After, saying the
    database is busy in the service's words, not psycopg's; once a slot is free it is
    served."""
    url, role = database
    service = make_todo(tmp_path, url)
    client = service.app.test_client()
    _limit(role, 2)
    holders = sa.create_engine(url, poolclass=sa.pool.NullPool)
    taken = [holders.connect(), holders.connect()]
    try:
        with caplog.at_level(logging.WARNING, logger="srcore"):
            answer = client.post(
                "/api/trackers/bugs/tickets", json={"title": "x"}, headers=service.headers
            )
            listed = client.get("/api/trackers/bugs/tickets", headers=service.headers)
        for response in (answer, listed):
            assert response.status_code == 503, response.get_data(as_text=True)
            assert response.headers["Retry-After"] == "5"
            reason = response.get_json()["errors"][0]["reason"]
            assert reason == "The database is busy right now. Try again in a few seconds."
        logged = [r.getMessage() for r in caplog.records if r.name == "srcore"]
        assert any("no connection slots left" in line for line in logged), logged
    finally:
        for conn in taken:
            conn.close()
        holders.dispose()
    again = client.post("/api/trackers/bugs/tickets", json={"title": "x"}, headers=service.headers)
    assert again.status_code == 201, again.get_data(as_text=True)
    service.app.extensions["srcore"].db.dispose()


def test_more_clients_than_connections_under_gunicorn(
    tmp_path: Path, database: tuple[str, str]
) -> None:
    """Two workers of four threads against a role allowed two connections: each write is a
    201 or a busy 503, never a 500 or a hang, and every 201 is a row."""
    url, role = database
    service = make_todo(tmp_path, url)
    _limit(role, 2)
    with serve(service, tmp_path, workers=2, threads=4) as served:
        outcomes, answered = write_concurrently(served, service.headers)
    tickets, comments = check_rows(service)
    assert tickets - 1 + comments == answered == outcomes["ok"]
    assert set(outcomes) <= {"ok", "busy"}, outcomes
    assert sum(outcomes.values()) == REQUESTS
    service.app.extensions["srcore"].db.dispose()


def test_connections_a_restart_ended_while_idle_fail_no_request(
    tmp_path: Path, database: tuple[str, str]
) -> None:
    """The server ended every pooled connection while no request was running: the next
    requests are all served, on new connections (before, each pooled connection failed
    the request that took it with a 503)."""
    url, _role = database
    service = make_todo(tmp_path, url)
    client = service.app.test_client()
    engine = service.app.extensions["srcore"].db.engine
    headers = service.headers

    # Two connections in the pool: one held while the other is taken.
    with engine.connect():
        assert client.get("/api/trackers/bugs/tickets", headers=headers).status_code == 200
    assert _cut(sa.make_url(url).database or "") >= 2
    for _ in range(3):
        listed = client.get("/api/trackers/bugs/tickets", headers=headers)
        assert listed.status_code == 200, listed.get_data(as_text=True)
        opened = client.post("/api/trackers/bugs/tickets", json={"title": "t"}, headers=headers)
        assert opened.status_code == 201, opened.get_data(as_text=True)
    service.app.extensions["srcore"].db.dispose()


def test_a_restart_under_gunicorn_fails_at_most_the_requests_in_flight(
    tmp_path: Path, database: tuple[str, str]
) -> None:
    """Two workers of four threads: their pools are full of connections the server then
    ends while idle; the next :data:`REQUESTS` requests from :data:`CLIENTS` clients are
    all served."""
    url, _role = database
    service = make_todo(tmp_path, url)
    name = sa.make_url(url).database or ""
    headers = service.headers
    with serve(service, tmp_path, workers=2, threads=4) as served:

        def request(index: int) -> str:
            if index % 2:
                answer = requests.post(
                    f"{served}/api/trackers/bugs/tickets",
                    json={"title": f"t{index}"},
                    headers=headers,
                    timeout=30,
                )
            else:
                answer = requests.get(
                    f"{served}/api/trackers/bugs/tickets", headers=headers, timeout=30
                )
            return outcome(answer)

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            warm = collections.Counter(pool.map(request, range(REQUESTS)))
        assert warm == {"ok": REQUESTS}
        assert _cut(name) >= 2
        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            after = collections.Counter(pool.map(request, range(REQUESTS)))
    assert after == {"ok": REQUESTS}
    service.app.extensions["srcore"].db.dispose()


def test_a_connection_cut_during_a_request_is_a_503_then_served(
    tmp_path: Path, database: tuple[str, str]
) -> None:
    """A restart in the middle of a request fails that request, with 503 and Retry-After;
    the next is served on a new connection."""
    url, _role = database
    service = make_todo(tmp_path, url)
    client = service.app.test_client()
    engine = service.app.extensions["srcore"].db.engine
    headers = service.headers
    assert client.get("/api/trackers/bugs/tickets", headers=headers).status_code == 200

    def cut_once(dbapi_connection: Any, _record: object, _proxy: object) -> None:
        _cut("", pid=dbapi_connection.info.backend_pid)

    # After srcore's own checkout listeners: the connection dies once the request has it.
    sa.event.listen(engine, "checkout", cut_once, once=True)
    answer = client.post("/api/trackers/bugs/tickets", json={"title": "x"}, headers=headers)
    assert outcome_of(answer) == "unavailable"
    again = client.post("/api/trackers/bugs/tickets", json={"title": "x"}, headers=headers)
    assert again.status_code == 201, again.get_data(as_text=True)
    assert again.get_json()["number"] == 1
    service.app.extensions["srcore"].db.dispose()


def outcome_of(response: Any) -> str:
    """:func:`test_db_pressure.outcome` for a test client's response."""
    fake = requests.Response()
    fake.status_code = response.status_code
    fake.headers.update(dict(response.headers))
    fake._content = response.get_data()
    return outcome(fake)
