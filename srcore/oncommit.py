"""Work that must follow a transaction's fate: a nudge, a mail, a cache write about rows that
exist only once committed. Done inside the transaction, it would announce a change a later
rollback undoes; hooked to the session's next commit by hand, it would fire at some later,
unrelated commit. :func:`after_commit` runs it at this transaction's commit, and never if it
rolls back."""

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


def after_commit(session: Session, callback: Callable[[list[T]], None], *items: T) -> None:
    """Call ``callback(items)`` once *session*'s outermost transaction commits, with every item
    given for the same *callback* since it began (a burst of emits is one nudge); forget them
    if it rolls back. A callback that raises is logged: the commit stands either way."""
    real: Session = getattr(session, "_get_current_object", lambda: session)()  # under a proxy
    pending: dict[Callable[[list[Any]], None], list[Any]] = real.info.setdefault(_PENDING, {})
    pending.setdefault(callback, []).extend(items)
    if not event.contains(real, "after_commit", _committed):
        event.listen(real, "after_commit", _committed)
        event.listen(real, "after_soft_rollback", _rolled_back)


def _committed(session: Session) -> None:
    for callback, items in session.info.pop(_PENDING, {}).items():
        try:
            callback(items)
        except Exception:
            log.exception("after a commit, %r failed", callback)


def _rolled_back(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:  # the outermost one: what it did is gone
        session.info.pop(_PENDING, None)
