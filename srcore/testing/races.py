"""Replaying a race without threads: another request's change, landing between what a
request reads and what it writes.

Two requests racing on real threads meet in the window that matters only now and then; a
test that waits for it is slow and still flaky. :func:`before_first_write` puts the other
change exactly there, every time: the view reads, the change commits, the view writes, and
the test checks what the view made of a row it read that is no longer so.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

__all__ = ["before_first_write"]


@contextmanager
def before_first_write(app: Any) -> Iterator[Callable[[Callable[[], None]], None]]:
    """Within the block, ``change_meanwhile(change)`` has *change* run once, just before
    the next INSERT, UPDATE, DELETE or flush of a session of *app*'s database.

    *change* runs in a transaction of its own (open one with ``db.transaction()``), so it
    commits first, as another request would. Its own writes start nothing more: it is
    taken off the list before it runs.
    """
    database = app.extensions["srcore"].db
    pending: list[Callable[[], None]] = []

    def run() -> None:
        if pending:
            pending.pop()()

    def on_flush(session: Any, _context: Any, _instances: Any) -> None:
        if session.new or session.dirty or session.deleted:
            run()

    def on_execute(state: Any) -> None:
        if state.is_insert or state.is_update or state.is_delete:
            run()

    event.listen(database.sessionmaker, "before_flush", on_flush)
    event.listen(database.sessionmaker, "do_orm_execute", on_execute)
    try:
        yield pending.append
    finally:
        event.remove(database.sessionmaker, "before_flush", on_flush)
        event.remove(database.sessionmaker, "do_orm_execute", on_execute)
