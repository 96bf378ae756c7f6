"""Todo's JSON API under ``/api/``: the caller's trackers, their tickets and comments.

Callers authenticate with a bearer token; ``todo/trackers`` covers trackers and
``todo/tickets`` covers tickets and comments, each ``:RO`` to read and ``:RW`` to write.
Lists are ``{"results": [...], "next": cursor-or-null}``; pass ``?cursor=`` back to get
the next page. Errors use srcore's standard body, ``{"errors": [{"field", "reason"}]}``.
One tracker or ticket carries an ``ETag``; send it back in ``If-Match`` to change it only
if nobody did meanwhile (else 412), or in ``If-None-Match`` to a GET (304 if unchanged).
"""

from __future__ import annotations

import functools
from functools import partial
from typing import Any

from flask import Blueprint, abort, url_for
from sqlalchemy import Select, bindparam, select
from sqlalchemy.orm import aliased, selectinload

from srcore.auth import current_token, oauth, refuse_inactive_token_user, require_user
from srcore.conditional import conditional, if_match
from srcore.db import session
from srcore.errors import error_response
from srcore.openapi import Created, NoContent, created, no_content, operation
from srcore.pagination import CursorList, cursor_page, read_page
from srcore.search import read_search
from srcore.validation import Validation
from todo import events, logic
from todo.models import Comment, Ticket, TicketStatus, Tracker, User
from todo.search import TICKETS
from todo.shapes import (
    CommentJSON,
    TicketJSON,
    TrackerJSON,
    comment_json,
    ticket_json,
    tracker_json,
    user_json,
)

__all__ = ["api", "comment_json", "ticket_json", "tracker_json", "user_json"]

api = Blueprint("api", __name__, url_prefix="/api")

NUMBER = "<id:number>"


def _read_status_filter(query: Validation) -> TicketStatus | None:
    return query.optional("status", TicketStatus)


_read_ticket_search = partial(read_search, schema=TICKETS)


# -- trackers ------------------------------------------------------------------------------


@api.get("/trackers")
@oauth("todo/trackers:RO")
@operation(query=read_page)
def list_trackers() -> CursorList[TrackerJSON]:
    """The caller's trackers, newest first."""
    user = require_user(User)
    page = cursor_page(session, select(Tracker).where(Tracker.owner_id == user.id), key=Tracker.id)
    return page.listing(lambda t: tracker_json(t, user))


@api.post("/trackers")
@oauth("todo/trackers:RW")
@operation(body=logic.read_tracker, errors={409: logic.NAME_TAKEN})
def create_tracker() -> Created[TrackerJSON]:
    """Create a tracker."""
    user = require_user(User)
    valid = Validation()
    tracker = logic.apply_tracker(session, valid, user, logic.read_tracker(valid), None)
    location = url_for("api.get_tracker", name=tracker.name)
    return created(tracker_json(tracker, user), location=location)


@api.get("/trackers/<name>")
@oauth("todo/trackers:RO")
@conditional
def get_tracker(name: str) -> TrackerJSON:
    """One of the caller's trackers."""
    user = require_user(User)
    return tracker_json(logic.own_tracker(session, user, name), user)


@api.patch("/trackers/<name>")
@oauth("todo/trackers:RW")
@conditional
@operation(body=partial(logic.read_tracker, partial=True), errors={409: logic.NAME_TAKEN})
def update_tracker(name: str) -> TrackerJSON:
    """Change a tracker: only the fields sent change."""
    user = require_user(User)
    tracker = logic.own_tracker(session, user, name)
    logic.lock_tracker(session, tracker, user)
    if_match(tracker_json(tracker, user))
    valid = Validation()
    logic.apply_tracker(session, valid, user, logic.read_tracker(valid, partial=True), tracker)
    return tracker_json(tracker, user)


@api.delete("/trackers/<name>")
@oauth("todo/trackers:RW")
@conditional
def delete_tracker(name: str) -> NoContent:
    """Delete a tracker with its tickets and comments."""
    user = require_user(User)
    tracker = logic.own_tracker(session, user, name)
    logic.lock_tracker(session, tracker, user)
    if_match(tracker_json(tracker, user))
    events.tracker_changed(session, "tracker:deleted", tracker, user)
    session.delete(tracker)
    session.commit()
    return no_content()


# -- tickets -------------------------------------------------------------------------------


@api.get("/trackers/<name>/tickets")
@oauth("todo/tickets:RO")
@operation(query=(_read_status_filter, _read_ticket_search, read_page))
def list_tickets(name: str) -> CursorList[TicketJSON]:
    """A tracker's tickets, newest first, narrowed by ``?status=`` and ``?search=``."""
    user = require_user(User)
    tracker = logic.own_tracker(session, user, name)
    query = Validation()
    status = _read_status_filter(query)
    _, condition = read_search(query, TICKETS)
    stmt = select(Ticket).where(Ticket.tracker_id == tracker.id, condition)
    if status is not None:
        stmt = stmt.where(Ticket.status == status)
    stmt = stmt.options(selectinload(Ticket.submitter))
    page = cursor_page(session, stmt, key=Ticket.id, valid=query)
    return page.listing(lambda t: ticket_json(t, tracker, user, t.submitter))


@api.post("/trackers/<name>/tickets")
@oauth("todo/tickets:RW")
@operation(body=logic.read_ticket)
def create_ticket(name: str) -> Created[TicketJSON]:
    """Open a ticket on a tracker."""
    user = require_user(User)
    tracker = logic.own_tracker(session, user, name)
    valid = Validation()
    ticket = logic.open_ticket(session, valid, tracker, user, logic.read_ticket(valid))
    location = url_for("api.get_ticket", name=tracker.name, number=ticket.number)
    return created(ticket_json(ticket, tracker, user, user), location=location)


def _ticket(user: User, name: str, number: int) -> tuple[Tracker, Ticket, User]:
    """Tracker, ticket and submitter in one query (the hot path of the API)."""
    if not logic.plausible_name(name):
        abort(404)
    row = session.execute(
        select(Tracker, Ticket, User)
        .join(Ticket, Ticket.tracker_id == Tracker.id)
        .join(User, Ticket.submitter_id == User.id)
        .where(Tracker.owner_id == user.id, Tracker.name == name, Ticket.number == number)
    ).first()
    if row is None:
        abort(404)
    tracker, ticket, submitter = row
    return tracker, ticket, submitter


@functools.cache
def _ticket_with_people() -> Select[Tracker, Ticket, User, User]:
    """Tracker, ticket, owner and submitter in one statement, built once per process."""
    owner, submitter = aliased(User, name="owner"), aliased(User, name="submitter")
    return (
        select(Tracker, Ticket, owner, submitter)
        .join(Ticket, Ticket.tracker_id == Tracker.id)
        .join(owner, Tracker.owner_id == owner.id)
        .join(submitter, Ticket.submitter_id == submitter.id)
        .where(
            Tracker.owner_id == bindparam("owner_id"),
            Tracker.name == bindparam("name"),
            Ticket.number == bindparam("number"),
        )
    )


@api.get(f"/trackers/<name>/tickets/{NUMBER}")
@oauth("todo/tickets:RO")
@conditional
def get_ticket(name: str, number: int) -> TicketJSON:
    """One ticket."""
    # The hot path: one query, joining the owner instead of loading current_user first.
    token = current_token()
    if token is None or token.subject is None:
        abort(error_response(403, "This call acts for a user; use a token issued to a user."))
    row = None
    if logic.plausible_name(name):
        row = session.execute(
            _ticket_with_people(), {"owner_id": token.subject, "name": name, "number": number}
        ).first()
    if row is None:
        # No row says nothing of the token's user: a suspended or unconfirmed account's
        # token is refused here as on every other call (403), not told what is not there.
        require_user(User)
        abort(404)
    tracker, ticket, tracker_owner, ticket_submitter = row
    refuse_inactive_token_user(tracker_owner)  # the token's user: what require_user refuses
    return ticket_json(ticket, tracker, tracker_owner, ticket_submitter)


@api.patch(f"/trackers/<name>/tickets/{NUMBER}")
@oauth("todo/tickets:RW")
@conditional
@operation(
    body=(
        partial(logic.read_ticket, partial=True),
        partial(logic.read_status, ticket=None, partial=True),
    )
)
def update_ticket(name: str, number: int) -> TicketJSON:
    """Change a ticket's title, description, status or resolution (those sent)."""
    user = require_user(User)
    tracker, ticket, submitter = _ticket(user, name, number)
    valid = Validation()

    def read() -> dict[str, Any]:  # the ticket as it is once its tracker is locked
        if_match(ticket_json(ticket, tracker, user, submitter))
        values = logic.read_ticket(valid, partial=True)
        values.update(logic.read_status(valid, ticket, partial=True))
        return values

    logic.save_ticket(session, valid, ticket, read, (tracker, user, submitter), editor=user)
    return ticket_json(ticket, tracker, user, submitter)


# -- comments ------------------------------------------------------------------------------


@api.get(f"/trackers/<name>/tickets/{NUMBER}/comments")
@oauth("todo/tickets:RO")
@operation(query=read_page)
def list_comments(name: str, number: int) -> CursorList[CommentJSON]:
    """A ticket's comments, oldest first."""
    user = require_user(User)
    _tracker, ticket, _submitter = _ticket(user, name, number)
    stmt = (
        select(Comment).where(Comment.ticket_id == ticket.id).options(selectinload(Comment.author))
    )
    page = cursor_page(session, stmt, key=Comment.id, descending=False)
    return page.listing(lambda c: comment_json(c, ticket, c.author))


@api.post(f"/trackers/<name>/tickets/{NUMBER}/comments")
@oauth("todo/tickets:RW")
@operation(body=logic.read_comment)
def create_comment(name: str, number: int) -> Created[CommentJSON]:
    """Comment on a ticket."""
    user = require_user(User)
    tracker, ticket, _submitter = _ticket(user, name, number)
    comment = logic.add_comment(session, Validation(), tracker, ticket, user)
    return created(comment_json(comment, ticket, user))
