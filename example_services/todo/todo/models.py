"""Todo's tables: users (mirrored from meta), trackers, tickets and comments.

Relationships are ``lazy="raise"``: every view says what it loads, so no request pays for
a query nobody asked for.
"""

from __future__ import annotations

import enum
import re

from sqlalchemy import Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import srcore.db
from srcore.db import TimestampMixin, UserMixin

__all__ = [
    "TRACKER_NAME",
    "Base",
    "Comment",
    "Resolution",
    "Ticket",
    "TicketStatus",
    "Tracker",
    "User",
    "Visibility",
]

#: A tracker name: a slug that is safe as one URL path segment.
TRACKER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
TRACKER_NAME_MAX = 64
TITLE_MAX = 256
DESCRIPTION_MAX = 16_384
COMMENT_MAX = 16_384


class Base(DeclarativeBase):
    metadata = srcore.db.make_metadata()
    type_annotation_map = srcore.db.TYPE_ANNOTATION_MAP


class User(UserMixin, Base):
    __tablename__ = "user"


class Visibility(enum.StrEnum):
    """Who sees a tracker: everyone and the front page, anyone with the link, the owner."""

    public = "public"
    unlisted = "unlisted"
    private = "private"


class TicketStatus(enum.StrEnum):
    open = "open"
    resolved = "resolved"


class Resolution(enum.StrEnum):
    """Why a ticket was resolved."""

    fixed = "fixed"
    implemented = "implemented"
    duplicate = "duplicate"
    wont_fix = "wont_fix"
    invalid = "invalid"


def _enum(cls: type[enum.StrEnum], name: str) -> Enum:
    # Stored as plain strings: adding a member later needs no ALTER TYPE.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=False,
        length=16,
        values_callable=lambda members: [m.value for m in members],
    )


class Tracker(TimestampMixin, Base):
    __tablename__ = "tracker"
    __table_args__ = (
        UniqueConstraint("owner_id", "name"),
        Index("ix_tracker_visibility_id", "visibility", "id"),
        # Webhook subscriptions name a tracker by id (``tracker:12``): on SQLite a deleted
        # tracker's id must never go to a new one, or they would follow it.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(TRACKER_NAME_MAX))
    description: Mapped[str | None] = mapped_column(Text)
    visibility: Mapped[Visibility] = mapped_column(
        _enum(Visibility, "visibility"), default=Visibility.public
    )
    #: The number the last ticket got; bumped atomically to number the next one.
    ticket_count: Mapped[int] = mapped_column(default=0)

    owner: Mapped[User] = relationship(lazy="raise")

    def visible_to(self, user: User | None) -> bool:
        """Whether *user* (None: anonymous) may see this tracker when given its address."""
        return self.visibility != Visibility.private or (
            user is not None and user.id == self.owner_id
        )


class Ticket(TimestampMixin, Base):
    __tablename__ = "ticket"
    __table_args__ = (
        UniqueConstraint("tracker_id", "number"),
        Index("ix_ticket_tracker_id_status_number", "tracker_id", "status", "number"),
        # Events and the API name tickets and comments by id too: none is given again.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tracker_id: Mapped[int] = mapped_column(ForeignKey("tracker.id", ondelete="CASCADE"))
    number: Mapped[int]
    title: Mapped[str] = mapped_column(String(TITLE_MAX))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[TicketStatus] = mapped_column(
        _enum(TicketStatus, "ticket_status"), default=TicketStatus.open
    )
    resolution: Mapped[Resolution | None] = mapped_column(_enum(Resolution, "resolution"))
    submitter_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)

    tracker: Mapped[Tracker] = relationship(lazy="raise")
    submitter: Mapped[User] = relationship(lazy="raise")


class Comment(TimestampMixin, Base):
    __tablename__ = "comment"
    __table_args__ = (
        Index("ix_comment_ticket_id_id", "ticket_id", "id"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("ticket.id", ondelete="CASCADE"))
    author_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text)

    author: Mapped[User] = relationship(lazy="raise")
