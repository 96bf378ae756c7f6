"""Paste's JSON API under ``/api/``: the caller's pastes, and any paste by its id.

Callers send a bearer token from meta: ``paste/pastes:RO`` to read, ``:RW`` to create.
Lists answer ``{"results": [...], "next": cursor-or-null}``; errors answer srcore's
standard body, ``{"errors": [{"field": ..., "reason": ...}]}``.
"""

from __future__ import annotations

from flask import Blueprint, abort, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from paste import logic
from paste.logic import PasteJSON
from paste.models import Paste, User
from paste.search import PASTES
from srcore.auth import oauth, require_user
from srcore.db import session
from srcore.errors import error_response
from srcore.openapi import Created, created, operation
from srcore.pagination import CursorList, cursor_page, read_page
from srcore.search import read_search
from srcore.validation import Validation

__all__ = ["api"]

api = Blueprint("api", __name__, url_prefix="/api")


def _read_search(query: Validation) -> object:
    return read_search(query, PASTES)


@api.get("/pastes")
@oauth("paste/pastes:RO")
@operation(query=(read_page, _read_search))
def list_pastes() -> CursorList[PasteJSON]:
    """The caller's pastes, newest first, narrowed by ``?search=``."""
    user = require_user(User)
    query = Validation()
    _, condition = read_search(query, PASTES)
    stmt = select(Paste).where(Paste.owner_id == user.id, condition)
    page = cursor_page(session, stmt, key=Paste.id, valid=query)
    return page.listing(lambda p: logic.paste_json(p, user))


@api.post("/pastes")
@oauth("paste/pastes:RW")
@operation(body=logic.read_paste)
def create_paste() -> Created[PasteJSON]:
    """Create a paste."""
    user = require_user(User)
    new = logic.create_paste(session, Validation(), user)
    location = url_for("api.get_paste", short_id=new.short_id)
    return created(logic.paste_json(new, user), location=location)


@api.get("/pastes/<short_id>")
@oauth("paste/pastes:RO")
def get_paste(short_id: str) -> PasteJSON:
    """Any paste, public or unlisted: its id is the link that shares it."""
    require_user(User)
    found = None
    if logic.SHORT_ID.fullmatch(short_id):
        found = session.scalar(
            select(Paste).where(Paste.short_id == short_id).options(selectinload(Paste.owner))
        )
    if found is None:
        abort(error_response(404, "No paste has this id."))
    return logic.paste_json(found, found.owner)
