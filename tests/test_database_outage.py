"""When the database fails for reasons of its own (a restart cut the connections, it cannot
be reached), pages and the API answer 503 with Retry-After, not a 500, and the service
serves again by itself once the database is back."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from srcore.testing import log_in_client, write_config


def _cut_connections(app: Any) -> int:
    """What a PostgreSQL restart does to the app's pooled connections: ends them."""
    url = app.extensions["srcore"].db.engine.url
    admin = sa.create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            ended = conn.execute(
                # Waits (5 s at most) until each has ended: a signalled backend still
                # answers a pool's ping for a moment, and the next request meets its end.
                sa.text(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": url.database},
            ).all()
    finally:
        admin.dispose()
    return len(ended)


def _cut_during_next_request(app: Any) -> None:
    """A restart in the middle of a request: the next connection the app takes from its
    pool is ended once the request has it (after srcore's own checks)."""
    engine = app.extensions["srcore"].db.engine
    admin = sa.create_engine(
        engine.url.set(database="postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.NullPool
    )

    def cut(dbapi_connection: Any, _record: object, _proxy: object) -> None:
        pid = {"pid": dbapi_connection.info.backend_pid}
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), pid)
            for _ in range(100):  # until the server has let it go (5 s at most)
                query = "SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"
                if not conn.execute(sa.text(query), pid).scalar():
                    break
                time.sleep(0.05)

    sa.event.listen(engine, "checkout", cut, once=True)


@pytest.mark.parametrize("srcore_backend", ["postgresql"], indirect=True)
def test_connections_cut_by_a_restart_are_a_503_then_served_again(
    app: Any, user: Any, make_token: Any, caplog: pytest.LogCaptureFixture
) -> None:
    client = log_in_client(app.test_client(), user)
    api = {"Authorization": f"Bearer {make_token('sample/things:RO', user=user)}"}
    assert client.get("/private").status_code == 200
    assert client.get("/api/things", headers=api).status_code == 200
    assert _cut_connections(app) >= 1
    # Ended while idle in the pool: dropped when taken, no request sees them.
    assert client.get("/private").status_code == 200
    assert client.get("/api/things", headers=api).status_code == 200

    _cut_during_next_request(app)
    page = client.get("/private")
    assert page.status_code == 503, page.get_data(as_text=True)[:300]
    assert page.headers["Retry-After"] == "5"
    assert "database is unavailable" in page.get_data(as_text=True)
    assert "Traceback" not in page.get_data(as_text=True)
    # The whole error page, its layout not asking the failed session who is logged in.
    assert "<html" in page.get_data(as_text=True)
    assert "rendering the error page failed" not in caplog.text
    # The pool was invalidated with the cut: the next request reconnects.
    assert client.get("/private").status_code == 200

    _cut_during_next_request(app)
    answer = client.get("/api/things", headers=api)
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "5"
    assert answer.is_json and "database is unavailable" in answer.get_json()["errors"][0]["reason"]
    assert client.get("/api/things", headers=api).status_code == 200


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A port on 127.0.0.1 that nothing listens on (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _app_on(tmp_path: Path, database_url: str) -> Any:
    import sample_service

    path = write_config(tmp_path / "config.ini", service_id="sample", database_url=database_url)
    app = sample_service.create_app(config=path)
    app.config["TESTING"] = True
    return app


@pytest.mark.parametrize("kind", ["postgresql", "sqlite"])
def test_a_database_that_cannot_be_reached_is_a_503(
    tmp_path: Path, closed_port: int, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    if kind == "postgresql":
        url = f"postgresql+psycopg://root@127.0.0.1:{closed_port}/nothing?connect_timeout=2"
    else:
        url = f"sqlite:///{tmp_path / 'no-such-directory' / 'sample.db'}"
    app = _app_on(tmp_path, url)
    try:
        client = app.test_client()
        with client.session_transaction() as session:
            session["_uid"] = 1  # a page that reads the session's user from the database
        page = client.get("/private")
        assert page.status_code == 503, page.get_data(as_text=True)[:300]
        assert page.headers["Retry-After"] == "5"
        assert "database is unavailable" in page.get_data(as_text=True)
        # The whole page, shown to nobody logged in: its layout did not try the database
        # again (a second wait for a server that is not there).
        assert "<html" in page.get_data(as_text=True)
        assert "rendering the error page failed" not in caplog.text
        assert caplog.text.count("database unavailable on GET /private") == 1
        assert client.get("/healthz").status_code == 503
    finally:
        app.extensions["srcore"].db.dispose()


def test_a_server_that_accepts_and_never_answers_is_a_503_not_a_hang(tmp_path: Path) -> None:
    """A firewall that drops packets, or a server stuck before its greeting: libpq would
    wait forever, holding the request until gunicorn kills its worker. srcore gives the
    connection a deadline (srcore.db.CONNECT_TIMEOUT) unless the URL sets its own."""
    import threading

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)  # accepted by the kernel, never answered
        port = listener.getsockname()[1]
        app = _app_on(tmp_path, f"postgresql+psycopg://root@127.0.0.1:{port}/nothing")
        answers: list[int] = []

        def ask() -> None:
            answers.append(app.test_client().get("/healthz").status_code)

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(timeout=60)  # a guard against hanging, far above the deadline
        try:
            assert not asking.is_alive(), "the request still waits for the database"
            assert answers == [503]
        finally:
            app.extensions["srcore"].db.dispose()
