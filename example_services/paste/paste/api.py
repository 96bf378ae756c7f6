"""Paste's JSON API under ``/api/``: the caller's pastes, and any paste by its id.

Callers send a bearer token from meta: ``paste/pastes:RO`` to read, ``:RW`` to create.
Lists answer ``{"results": [...], "next": cursor-or-null}``; errors answer srcore's
standard body, ``{"errors": [{"field": ..., "reason": ...}]}``.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, abort, request, url_for
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from paste import logic
from paste.models import Paste, User
from paste.search import PASTES
from srcore.auth import current_user, oauth
from srcore.db import session
from srcore.errors import error_response
from srcore.pagination import InvalidCursor, paginate_cursor
from srcore.search import read_search
from srcore.validation import Validation

__all__ = ["api"]

api = Blueprint("api", __name__, url_prefix="/api")

MAX_LIMIT = 100


def _caller() -> User:
    """The token's user; a token issued to a client alone has no pastes."""
    user = cast("User | None", current_user._get_current_object())
    if user is None:
        abort(error_response(403, "This call acts for a user; use a token issued to a user."))
    return user


@api.get("/pastes")
@oauth("paste/pastes:RO")
def list_pastes() -> Any:
    """The caller's pastes, newest first, narrowed by ``?search=``."""
    user = _caller()
    query = Validation(data=request.args, source="form")
    cursor = query.optional("cursor", max_length=1024)
    limit = query.optional("limit", int, min=1, max=MAX_LIMIT, default=25)
    _, condition = read_search(query, PASTES)
    if not query.ok or limit is None:
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
def create_paste() -> Any:
    user = _caller()
    valid = Validation(request)
    created = logic.create_paste(session, valid, user)
    if created is None:
        return valid.response()
    location = url_for("api.get_paste", short_id=created.short_id)
    return logic.paste_json(created, user), 201, {"Location": location}


@api.get("/pastes/<short_id>")
@oauth("paste/pastes:RO")
def get_paste(short_id: str) -> Any:
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
