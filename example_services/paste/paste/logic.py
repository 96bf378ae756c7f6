"""What paste does, shared by the pages and the API.

A form and an API call that create a paste read their input with the same
:class:`~srcore.validation.Validation` calls, so they accept the same values and fail with
the same messages.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, TypedDict

from flask import abort, url_for
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session

from paste.models import LANGUAGE_MAX, SHORT_ID_LENGTH, TITLE_MAX, Format, Paste, User, Visibility
from srcore.auth import hold_account
from srcore.conditional import form_version, opened_version_holds
from srcore.highlighting import canonical_language
from srcore.settings import settings
from srcore.sqlrows import lock_row
from srcore.validation import Validation
from srcore.webhooks import emit
from srcore.webhooks.models import OutboxRow, Subscription

__all__ = [
    "SHORT_ID",
    "PasteJSON",
    "Settings",
    "can_receive",
    "create_paste",
    "delete_paste",
    "emit_deleted",
    "new_short_id",
    "paste_json",
    "read_paste",
    "update_paste",
]

#: Lower-case letters and digits, without the look-alikes 0/o and 1/l.
ALPHABET = "abcdefghijkmnpqrstuvwxyz23456789"
SHORT_ID = re.compile(rf"[{ALPHABET}]{{{SHORT_ID_LENGTH}}}")


@dataclass(frozen=True)
class Settings:
    """Paste's ``[paste]`` keys (service.yaml), read once."""

    pastes_per_page: int
    max_paste_length: int


def new_short_id() -> str:
    """A fresh random paste id (about 50 bits: not guessable, short enough to share)."""
    return "".join(secrets.choice(ALPHABET) for _ in range(SHORT_ID_LENGTH))


class OwnerJSON(TypedDict):
    """Who made a paste."""

    id: int
    username: str


class PasteJSON(TypedDict):
    """A paste, with its text; ``url`` is its page."""

    id: str
    title: str | None
    text: str
    format: Annotated[str, Format]
    language: str | None
    visibility: Annotated[str, Visibility]
    owner: OwnerJSON
    url: str
    created: datetime
    updated: datetime


def paste_json(paste: Paste, owner: User) -> PasteJSON:
    """A paste as the API answers it and as the ``paste:*`` events carry it
    (service.yaml names :class:`PasteJSON` as the event's payload)."""
    return {
        "id": paste.short_id,
        "title": paste.title,
        "text": paste.text,
        "format": paste.format.value,
        "language": paste.language,
        "visibility": paste.visibility.value,
        "owner": {"id": owner.id, "username": owner.username},
        "url": url_for("paste.show", short_id=paste.short_id, _external=True),
        "created": paste.created,
        "updated": paste.updated,
    }


def read_paste(valid: Validation) -> dict[str, Any]:
    """Read a new paste's fields: text (required), title, format, language and visibility.

    The language is any name or alias Pygments knows, in any case, and is stored as the
    lexer's canonical alias; empty or missing means plain text.
    """
    values: dict[str, Any] = {}
    title = valid.optional("title", max_length=TITLE_MAX, text="line")
    values["title"] = title or None
    # Leading and trailing blanks of a paste are part of it (indented code, say).
    limit = max(settings(Settings).max_paste_length, 1)
    text = valid.require("text", max_length=limit, strip=False)
    if text is not None and valid.expect(text.strip(), "The paste is empty.", field="text"):
        values["text"] = text
    values["format"] = valid.optional("format", Format, default=Format.plain)
    language = valid.optional("language", max_length=LANGUAGE_MAX)
    values["language"] = canonical_language(language)
    if language:
        valid.expect(
            values["language"] is not None,
            "Unknown language; choose one from the list, or plain text.",
            field="language",
        )
    values["visibility"] = valid.optional("visibility", Visibility, default=Visibility.public)
    return values


def _free_short_id(session: Session) -> str:
    for _ in range(5):
        candidate = new_short_id()
        taken = session.scalar(select(Paste.id).where(Paste.short_id == candidate))
        if taken is None:
            return candidate
    raise RuntimeError("no free paste id after 5 tries")  # about 2^-250: a broken RNG


def _emit(session: Session, event: str, paste: Paste, owner: User) -> None:
    """Record *event* about *paste* (emit flushes first: the payload has its id and times).

    A public paste's event reaches every subscriber, an unlisted one's only its owner
    (audience: readers): its link is the secret that shares it.
    """
    emit(
        event,
        lambda: paste_json(paste, owner),
        resource=f"paste:{paste.short_id}",
        owner_id=owner.id,
        visibility=Visibility(paste.visibility).value,
        session=session,
    )


def create_paste(session: Session, valid: Validation, owner: User) -> Paste:
    """Create a paste for *owner* from the input, emit ``paste:created`` and commit.

    Bad input raises ``ValidationFailed``. The event is written in the same transaction
    as the paste: both are committed, or neither.
    """
    values = read_paste(valid)
    valid.raise_if_invalid()
    # Its owner's deletion may be applied meanwhile: it must see this paste, or this paste
    # must see it (else the paste is made after the deletion dropped theirs, for good).
    hold_account(session, owner)
    paste = Paste(owner_id=owner.id, short_id=_free_short_id(session), **values)
    session.add(paste)
    _emit(session, "paste:created", paste, owner)
    session.commit()
    return paste


def _lock(session: Session, paste: Paste) -> None:
    """Hold *paste*'s row and read it again before changing it (404 if it is gone): an
    edit from another tab may have changed its visibility, which the event records, or
    deleted it."""
    if not lock_row(session, paste):
        abort(404)


def paste_version(paste: Paste) -> str:
    """A short digest of what the edit form changes, carried by the form as ``was``: a
    save from a form opened before another change is stopped, not laid over it."""
    return form_version(
        paste.title, paste.text, paste.format.value, paste.language, paste.visibility.value
    )


def update_paste(session: Session, valid: Validation, paste: Paste) -> None:
    """Set *paste*'s fields the input holds (read as a new paste's), emit ``paste:updated``
    if anything changed, and commit.

    A field left out keeps its value, not a new paste's default: an edit that says nothing
    of ``visibility`` must not publish an unlisted paste on the front page. Bad input raises
    ``ValidationFailed`` with nothing changed. The short id stays: links already shared keep
    pointing at the paste.
    """
    values = read_paste(valid)
    valid.raise_if_invalid()
    _lock(session, paste)
    opened_version_holds(
        valid,
        paste_version(paste),
        "This paste was changed (in another tab, say) since you opened this form. Your "
        "text is below, unsaved: send it again to replace the other change.",
    )
    valid.raise_if_invalid()
    for key, value in values.items():
        if key in valid:
            setattr(paste, key, value)
    if session.is_modified(paste):
        _emit(session, "paste:updated", paste, paste.owner)
    session.commit()


def emit_deleted(session: Session, paste: Paste, owner: User) -> None:
    """Emit ``paste:deleted`` for *paste*, still in the database, as it was: by its owner's
    hand or with their account (:mod:`paste.accounts`)."""
    _emit(session, "paste:deleted", paste, owner)


def delete_paste(session: Session, paste: Paste) -> None:
    """Delete *paste* for good, emit ``paste:deleted`` (with the paste as it was) and
    commit; its link answers 404 from now on."""
    _lock(session, paste)
    emit_deleted(session, paste, paste.owner)
    session.delete(paste)
    session.commit()


def can_receive(subscription: Subscription, outbox: OutboxRow) -> bool:
    """Whether *subscription*'s owner may limit it to the paste *outbox* names: asked when
    subscribing, the paste must exist and be public, or theirs.

    Emitted events are not judged here: the owner and visibility recorded with each one
    decide (the ``readers`` audience), so an unlisted paste's events reach its owner only.
    """
    session = object_session(subscription)
    if session is None:
        from srcore.db import session as request_session

        session = request_session
    short_id = (outbox.resource or "").removeprefix("paste:")
    paste = session.scalar(select(Paste).where(Paste.short_id == short_id))
    if paste is None:
        return False
    mine = subscription.owner_id is not None and subscription.owner_id == paste.owner_id
    return mine or Visibility(paste.visibility) == Visibility.public
