"""A database that refuses every write (a PostgreSQL standby or
``default_transaction_read_only``, an SQLite file this process may not write) answers a
write 503 with Retry-After and one log line naming the cause, never a 500; reads go on,
nothing is half-written, and writes are taken again once it accepts them, with no restart.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from sqlalchemy import event, text


@contextlib.contextmanager
def _read_only(app: Any, backend: str) -> Iterator[None]:
    database = app.extensions["srcore"].db
    engine = database.engine

    def query_only(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")

    name = engine.url.database
    if backend == "sqlite":
        event.listen(engine, "connect", query_only)
    else:
        with engine.connect() as connection:
            statement = f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
            connection.execute(text(statement))
            connection.commit()
    database.dispose()
    try:
        yield
    finally:
        if backend == "sqlite":
            event.remove(engine, "connect", query_only)
        else:
            autocommit = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
            with autocommit as connection:
                connection.execute(text("SET default_transaction_read_only = off"))
                statement = f'ALTER DATABASE "{name}" SET default_transaction_read_only = off'
                connection.execute(text(statement))
        database.dispose()


def test_writes_to_a_read_only_database_are_503s_and_reads_go_on(
    app: Any, client: Any, auth: Any, tracker: Any, make: Any, srcore_backend: str, caplog: Any
) -> None:
    from todo.models import Ticket

    headers = auth("todo/trackers:RW todo/tickets:RW")
    path = f"/api/trackers/{tracker.name}/tickets"
    caplog.set_level(logging.WARNING)
    with _read_only(app, srcore_backend):
        refused = client.post(path, json={"title": "Not now"}, headers=headers)
        assert refused.status_code == 503, refused.get_data(as_text=True)[:500]
        assert refused.headers["Retry-After"]
        assert "nothing was saved" in refused.get_json()["errors"][0]["reason"]
        assert client.get(path, headers=headers).status_code == 200
    lines = [r.getMessage() for r in caplog.records if "database read-only" in r.getMessage()]
    assert len(lines) == 1, [r.getMessage() for r in caplog.records]
    assert "rolled back" in lines[0]
    assert not any(r.exc_info for r in caplog.records if r.levelno >= logging.ERROR)
    assert make.count(Ticket) == 0
    taken = client.post(path, json={"title": "Now"}, headers=headers)
    assert taken.status_code == 201, taken.get_data(as_text=True)[:500]
    assert make.count(Ticket) == 1


def test_a_form_sent_to_a_read_only_database_comes_back_503(
    app: Any, user_client: Any, tracker: Any, make: Any, srcore_backend: str
) -> None:
    from todo.models import Ticket

    form_page = user_client.get(f"/~alice/{tracker.name}/new").get_data(as_text=True)
    token = form_page.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    with _read_only(app, srcore_backend):
        refused = user_client.post(
            f"/~alice/{tracker.name}/new", data={"csrf_token": token, "title": "Not now"}
        )
    assert refused.status_code == 503, refused.get_data(as_text=True)[:500]
    assert "nothing was saved" in refused.get_data(as_text=True)
    assert make.count(Ticket) == 0
