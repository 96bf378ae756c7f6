"""What paste does when meta deletes an account (:func:`srcore.auth.on_account_deleted`).

A paste belongs to the person who made it alone: nobody else wrote any of it, and an
unlisted one was shared only by its link. So the account's pastes go with it, public and
unlisted, each with the ``paste:deleted`` event a deletion by hand sends, so subscribers
learn of it as usual (a public paste's reaches every subscriber; an unlisted one's only
its owner, whose subscriptions srcore deletes in the same transaction, and the
operator's). srcore then drops the account's profile.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from paste.logic import emit_deleted
from paste.models import Paste, User
from srcore.sqlrows import lock_row

__all__ = ["forget_account"]


def forget_account(session: Session, user: User) -> None:
    """Delete every paste of *user*, an account meta deleted, in *session*'s transaction.

    Pastes are read one at a time (a paste holds up to ``max-paste-length`` characters,
    and an account may have many) and let go once deleted.
    """
    mine = select(Paste.id).where(Paste.owner_id == user.id).order_by(Paste.id)
    for paste_id in session.scalars(mine).all():
        paste = session.get(Paste, paste_id)
        if paste is None or not lock_row(session, paste):  # deleted meanwhile, by hand
            continue
        emit_deleted(session, paste, user)
        session.execute(delete(Paste).where(Paste.id == paste_id))
        session.expunge(paste)
