"""What the database was actually sent: round trips on PostgreSQL, statements on SQLite.

SQLAlchemy's events report what it asked the driver, which is not what reached the
database: a ``rollback`` event fires for a connection psycopg knows is idle (nothing is
sent), and ``begin`` fires although the BEGIN travels, if at all, with the first query.
Tests and benchmarks that count round trips read the wire instead: libpq's protocol trace
on PostgreSQL (one entry per message exchange, ended by the server's ReadyForQuery), and
on SQLite, which has no wire, the statements SQLite ran, including the BEGIN, COMMIT and
ROLLBACK the driver issues.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, event

__all__ = ["Wire", "watch"]


@dataclass
class Wire:
    """What an engine's connections sent during a :func:`watch` block."""

    backend: str
    #: One entry per round trip (PostgreSQL: the query, ``BEGIN``, the prepared
    #: statement's name...) or per statement SQLite ran.
    sent: list[str] = field(default_factory=list)

    @property
    def round_trips(self) -> int:
        """Exchanges with the server; SQLite runs in the process, so it has none."""
        return len(self.sent) if self.backend == "postgresql" else 0


def _exchanges(lines: Iterator[str]) -> Iterator[str]:
    """One label per exchange of a libpq trace (``F``/``B`` lines, no timestamps)."""
    label: str | None = None
    for line in lines:
        parts = line.rstrip("\n").split("\t", 3)
        if len(parts) < 3:
            continue
        direction, message = parts[0], parts[2]
        detail = parts[3].strip() if len(parts) > 3 else ""
        if direction == "F" and label is None and message in ("Query", "Parse", "Bind"):
            if message == "Parse":  # "name" "text" ...: the statement's text
                detail = detail.split('"', 3)[-1]
            label = detail.strip('" ') if message != "Bind" else f"Bind {detail}"
        elif direction == "B" and message == "ReadyForQuery":
            yield label or "?"
            label = None


@contextmanager
def watch(engine: Engine) -> Iterator[Wire]:
    """Record what the connections *engine* checks out inside the block send.

    The :class:`Wire` is complete when the block ends. Connections checked out before the
    block are not watched: run the code under test from its start (a whole request)
    inside it. A pre-ping happens before the checkout it precedes is seen, so it is not
    counted.
    """
    backend = engine.dialect.name
    wire = Wire(backend)
    watched: list[Any] = []
    if backend == "sqlite":

        def on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
            # Set anew on each checkout: the callback replaces any earlier one.
            dbapi_connection.set_trace_callback(wire.sent.append)
            watched.append(dbapi_connection)

        event.listen(engine, "checkout", on_checkout)
        try:
            yield wire
        finally:
            event.remove(engine, "checkout", on_checkout)
            for dbapi_connection in watched:
                dbapi_connection.set_trace_callback(None)
        return
    if engine.dialect.driver != "psycopg":
        raise ValueError(f"cannot watch {engine.dialect.name}+{engine.dialect.driver}")
    from psycopg import pq

    fd, path = tempfile.mkstemp(prefix="srcore-wire-")

    def on_trace_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        if any(dbapi_connection is seen for seen in watched):
            return  # traced already: a second trace stream would split the record
        dbapi_connection.pgconn.trace(fd)
        dbapi_connection.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        watched.append(dbapi_connection)

    event.listen(engine, "checkout", on_trace_checkout)
    try:
        yield wire
    finally:
        event.remove(engine, "checkout", on_trace_checkout)
        for dbapi_connection in watched:
            if not dbapi_connection.closed:
                dbapi_connection.pgconn.untrace()
        os.fsync(fd)
        with open(path, encoding="utf-8", errors="replace") as trace:
            wire.sent.extend(_exchanges(iter(trace)))
        os.close(fd)
        os.unlink(path)
