"""A database that refuses every write (a PostgreSQL standby or
``default_transaction_read_only``, an SQLite file this process may not write) answers a
write 503 with Retry-After and one log line naming the cause, never a 500; reads go on,
nothing is half-written, and writes are taken again once it accepts them, with no restart.
"""

from __future__ import annotations

import logging
from typing import Any


def test_writes_to_a_read_only_database_are_503s_and_reads_go_on(
    client: Any, auth: Any, tracker: Any, make: Any, read_only: Any, caplog: Any
) -> None:
    from todo.models import Ticket

    headers = auth("todo/trackers:RW todo/tickets:RW")
    path = f"/api/trackers/{tracker.name}/tickets"
    caplog.set_level(logging.WARNING)
    with read_only():
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
