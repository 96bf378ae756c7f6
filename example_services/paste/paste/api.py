"""Paste's JSON API under ``/api/``: the caller's pastes, and any paste by its id.

Callers send a bearer token from meta: ``paste/pastes:RO`` to read, ``:RW`` to create.
Lists answer ``{"results": [...], "next": cursor-or-null}``; errors answer srcore's
standard body, ``{"errors": [{"field": ..., "reason": ...}]}``.
"""

from __future__ import annotations

from typing import cast

from flask import Blueprint, Response, abort, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from paste import logic
from paste.logic import PasteJSON
from paste.models import Paste, User
from paste.search import PASTES
from srcore.auth import current_user, oauth
from srcore.db import session
from srcore.errors import error_response
from srcore.openapi import Created, created, operation
from srcore.pagination import CursorList, InvalidCursor, paginate_cursor, read_page
from srcore.search import read_search
from srcore.validation import Validation

__all__ = ["api"]

api = Blueprint("api", __name__, url_prefix="/api")



def _caller() -> User:
    """The token's user; a token issued to a client alone has no pastes."""
    user = cast("User | None", current_user._get_current_object())
    if user is None:
        abort(error_response(403, "This call acts for a user; use a token issued to a user."))
    return user


def _read_search(query: Validation) -> object:
    return read_search(query, PASTES)


@api.get("/pastes")
@oauth("paste/pastes:RO")
@operation(query=(read_page, _read_search))
def list_pastes() -> CursorList[PasteJSON] | Response:
    """The caller's pastes, newest first, narrowed by ``?search=``."""
    user = _caller()
    query = Validation(data=request.args, source="form")
    cursor, limit = read_page(query)
    _, condition = read_search(query, PASTES)
    if not query.ok:
        return query.response()
    stmt = select(Paste).where(Paste.owner_id == user.id, condition)
    try:
        page = paginate_cursor(session, stmt, key=[Paste.id], cursor=cursor, limit=limit)
    except InvalidCursor:
        query.error("This cursor was not made for this listing.", "cursor")
        return query.response()
    return {"results": [logic.paste_json(p, user) for p in page.items], "next": page.next_cursor}


@api.post("/pastes")
@oauth("paste/pastes:RW")
@operation(body=logic.read_paste)
def create_paste() -> Created[PasteJSON] | Response:
    """Create a paste."""
    user = _caller()
    valid = Validation(request)
    new = logic.create_paste(session, valid, user)
    if new is None:
        return valid.response()
    location = url_for("api.get_paste", short_id=new.short_id)
    return created(logic.paste_json(new, user), location=location)


@api.get("/pastes/<short_id>")
@oauth("paste/pastes:RO")
def get_paste(short_id: str) -> PasteJSON | Response:
    """Any paste, public or unlisted: its id is the link that shares it."""
    _caller()
    found = None
    if logic.SHORT_ID.fullmatch(short_id):
        found = session.scalar(
            select(Paste).where(Paste.short_id == short_id).options(selectinload(Paste.owner))
        )
    if found is None:
        return error_response(404, "No paste has this id.")
    return logic.paste_json(found, found.owner)
