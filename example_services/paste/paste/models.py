"""Paste's tables: users (mirrored from meta) and their pastes.

The ``user`` table's columns belong to srcore's own migration lineage; this service's
lineage (``migrations/versions/``) creates everything else.
"""

from __future__ import annotations

import enum

from sqlalchemy import Enum, ForeignKey, Index, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

import srcore.db
from srcore.db import TimestampMixin, UserMixin

__all__ = [
    "LANGUAGE_MAX",
    "SHORT_ID_LENGTH",
    "TITLE_MAX",
    "Base",
    "Format",
    "Paste",
    "User",
    "Visibility",
]

TITLE_MAX = 256
#: Room for a Pygments lexer alias (the longest today has about 30 characters).
LANGUAGE_MAX = 64
#: Pastes are addressed by a short random id: ``/p/<short_id>``.
SHORT_ID_LENGTH = 10


class Base(DeclarativeBase):
    metadata = srcore.db.make_metadata()
    type_annotation_map = srcore.db.TYPE_ANNOTATION_MAP


class User(UserMixin, Base):
    """A user of the network; the id is the account's id at meta."""

    __tablename__ = "user"


class Format(enum.StrEnum):
    """How a paste is shown: rendered as markdown, or as it is, in a ``<pre>``."""

    markdown = "markdown"
    plain = "plain"


class Visibility(enum.StrEnum):
    """Public pastes are listed on the front page; unlisted ones only by their link."""

    public = "public"
    unlisted = "unlisted"


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


class Paste(TimestampMixin, Base):
    """One paste: some text, its format and who may find it."""

    __tablename__ = "paste"
    __table_args__ = (
        Index("ix_paste_owner_id_id", "owner_id", "id"),
        Index("ix_paste_visibility_id", "visibility", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    short_id: Mapped[str] = mapped_column(String(SHORT_ID_LENGTH), unique=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("user.id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(String(TITLE_MAX))
    text: Mapped[str] = mapped_column(Text)
    format: Mapped[Format] = mapped_column(_enum(Format, "paste_format"), default=Format.plain)
    #: The Pygments alias a plain paste is highlighted as; ``None`` is plain text. Kept as
    #: a string, not checked by the database: the list of languages grows with Pygments.
    language: Mapped[str | None] = mapped_column(String(LANGUAGE_MAX))
    visibility: Mapped[Visibility] = mapped_column(
        _enum(Visibility, "paste_visibility"), default=Visibility.public
    )

    owner: Mapped[User] = relationship(lazy="raise")

    @property
    def display_title(self) -> str:
        return self.title or f"Paste {self.short_id}"
