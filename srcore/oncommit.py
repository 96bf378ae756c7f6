"""Work that must follow a transaction's fate: a nudge, a mail, a cache write about rows that
exist only once committed. Done inside the transaction, it would announce a change a later
rollback undoes; hooked to the session's next commit by hand, it would fire at some later,
unrelated commit. :func:`after_commit` runs it at this transaction's commit, and never if it
rolls back.

The work runs once the transaction has ended and its connection is back in the pool: work
that waits on something else (a mail server that is slow to answer) holds no connection
the rest of the process may need."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

__all__ = ["after_commit"]

log = logging.getLogger("srcore.db")

T = TypeVar("T")
_PENDING = "srcore_after_commit"
#: The batches of a transaction that committed, run once it has ended.
_COMMITTED = "srcore_committed"
#: What waits for a commit: the savepoint it was given in (None: the transaction itself), the
#: callback and its items.
_Entry = tuple[SessionTransaction | None, Callable[[list[Any]], None], list[Any]]


def after_commit(session: Session, callback: Callable[[list[T]], None], *items: T) -> None:
    """Call ``callback(items)`` once *session*'s outermost transaction commits, with every item
    given for the same *callback* meanwhile (a burst of emits is one nudge). Items given in a
    savepoint are forgotten if it rolls back, and all of them if the transaction rolls back or
    the session closes without committing. A callback that raises is logged: the commit stands."""
    real: Session = getattr(session, "_get_current_object", lambda: session)()  # under a proxy
    if not real.in_transaction():  # begun now, so that a close or rollback ends it too
        real.begin()
    pending: list[_Entry] = real.info.setdefault(_PENDING, [])
    pending.append((real.get_nested_transaction(), callback, list(items)))
    if not event.contains(real, "after_commit", _committed):
        event.listen(real, "after_commit", _committed)
        event.listen(real, "after_transaction_end", _ended)


def _committed(session: Session) -> None:
    savepoint = session.get_nested_transaction()
    pending: list[_Entry] = session.info.get(_PENDING, [])
    if savepoint is not None:  # what it holds now waits for the savepoint around it, if any
        parent = savepoint.parent
        outer = parent if parent is not None and parent.nested else None
        pending[:] = [(outer if t is savepoint else t, c, i) for t, c, i in pending]
        return
    batches: dict[Callable[[list[Any]], None], list[Any]] = {}
    for _, callback, items in session.info.pop(_PENDING, []):
        batches.setdefault(callback, []).extend(items)
    # Run by _ended: the connection is still checked out while the commit's events run.
    session.info[_COMMITTED] = batches


def _ended(session: Session, transaction: SessionTransaction) -> None:
    """A transaction ended, its connection released; if it committed, run what
    :func:`_committed` took of its entries."""
    if transaction.nested:
        pending: list[_Entry] = session.info.get(_PENDING, [])
        pending[:] = [entry for entry in pending if entry[0] is not transaction]
        return
    if transaction.parent is not None:
        return
    session.info.pop(_PENDING, None)
    batches: dict[Callable[[list[Any]], None], list[Any]] = session.info.pop(_COMMITTED, {})
    for callback, items in batches.items():
        try:
            callback(items)
        except Exception:
            log.exception("after a commit, %r failed", callback)
