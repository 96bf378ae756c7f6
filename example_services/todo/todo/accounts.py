"""What todo does when meta deletes an account (:func:`srcore.auth.on_account_deleted`).

The account's own trackers go, with their tickets and comments, each with the
``tracker:deleted`` event a deletion by hand sends, so subscribers learn of it as usual.
What the person wrote on other people's trackers stays: those tickets and comments are
part of someone else's record. srcore then drops the account's profile, so they show as
by a deleted user, with no name or address.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from srcore.sqlrows import lock_row
from todo import events
from todo.models import Tracker, User

__all__ = ["forget_account"]


def forget_account(session: Session, user: User) -> None:
    """Delete the trackers of *user*, an account meta deleted, in *session*'s transaction."""
    mine = select(Tracker).where(Tracker.owner_id == user.id).order_by(Tracker.id)
    for tracker in session.scalars(mine).all():
        if not lock_row(session, tracker):  # deleted meanwhile, its event sent then
            continue
        events.tracker_changed(session, "tracker:deleted", tracker, user)
        session.execute(delete(Tracker).where(Tracker.id == tracker.id))
