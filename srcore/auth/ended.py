"""Web sessions ended at this service: a logged-out cookie counts nowhere it is replayed.

A session lives in its signed cookie, so clearing the cookie at logout ends it only in
the browser that logged out: a copy taken earlier (a shared computer, a stolen cookie)
signs as well as ever. Each login therefore names its session with a random id, and
logging out records that id here, in the service's database, which every process and
host of the service reads. The check adds no round trip: it rides on the query that
loads the session's user row (:func:`ended_clause`), which a logged-in page makes anyway.
Only that session ends; the user's other browsers keep theirs.

A row is kept for as long as a copy of the cookie could still be accepted: the session
lifetime from the logout (a copy is at most as fresh as the last answer before it).
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, String, delete, exists
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from srcore.db import TYPE_ANNOTATION_MAP, make_metadata, utcnow

__all__ = [
    "EndedSession",
    "EndedSessionBase",
    "ended_clause",
    "new_session_id",
    "prune_ended",
    "record_end",
]


class EndedSessionBase(DeclarativeBase):
    """The declarative base of the ended-session table (copied into the core metadata)."""

    metadata = make_metadata()
    type_annotation_map = TYPE_ANNOTATION_MAP


class EndedSession(EndedSessionBase):
    """A web session logged out at this service: its cookie no longer logs anyone in."""

    __tablename__ = "srcore_ended_session"

    #: The session's id, as its cookie carries it.
    sid: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: When no copy of the cookie can be accepted any more; the row may go then.
    expires_at: Mapped[datetime] = mapped_column(index=True)


def new_session_id() -> str:
    """A fresh session id: 128 random bits, URL-safe."""
    return secrets.token_urlsafe(16)


def ended_clause(sid: str) -> ColumnElement[bool]:
    """True when the session *sid* was logged out: a column to select beside the user row."""
    return exists().where(EndedSession.sid == sid)


def record_end(db_session: Session, sid: str, *, lifetime: timedelta) -> None:
    """Record that the session *sid* ended now, in *db_session*'s transaction; rows whose
    cookies can no longer be accepted go on the way (a logout is rare, a page view not)."""
    from sqlalchemy.dialects import postgresql, sqlite

    now = utcnow()
    db_session.execute(delete(EndedSession).where(EndedSession.expires_at < now))
    # One statement that a row of the same id leaves alone: two logouts of one session
    # at once (a double click, the person and whoever holds a copy) both record it, where
    # a read then an insert made the second fail on the key and log a logout not recorded.
    dialect = postgresql if db_session.get_bind().dialect.name == "postgresql" else sqlite
    values = {"sid": sid, "expires_at": now + lifetime}
    db_session.execute(dialect.insert(EndedSession).values(values).on_conflict_do_nothing())


def prune_ended(session: Session, now: datetime) -> int:
    """Delete the ended sessions no copy of whose cookie can be accepted any more; commit;
    return how many went. The webhook worker runs it every hour, so that the last
    logouts' rows do not wait for the next logout (which deletes them on the way)."""
    result = session.execute(delete(EndedSession).where(EndedSession.expires_at < now))
    session.commit()
    return int(getattr(result, "rowcount", 0) or 0)
