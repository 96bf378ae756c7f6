"""The JSON shapes of todo's rows: what the API answers and what webhook events carry.

Each serializer returns a TypedDict: the one declaration of its shape, read by the type
checker and by the API description (``/api/openapi.json``).
"""

from __future__ import annotations

from typing import Annotated, TypedDict

from srcore.openapi import Format
from todo.models import Comment, Resolution, Ticket, TicketStatus, Tracker, User, Visibility

__all__ = [
    "CommentJSON",
    "TicketJSON",
    "TrackerJSON",
    "UserJSON",
    "comment_json",
    "ticket_json",
    "tracker_json",
    "user_json",
]

#: An ISO 8601 time, as ``datetime.isoformat()`` writes it.
Timestamp = Annotated[str, Format("date-time")]


class UserJSON(TypedDict):
    """A user, by id and name."""

    id: int
    username: str


class TrackerJSON(TypedDict):
    """A tracker and its owner."""

    id: int
    name: str
    description: str | None
    visibility: Annotated[str, Visibility]
    owner: UserJSON
    created: Timestamp
    updated: Timestamp


class TicketTrackerJSON(TypedDict):
    """The tracker a ticket belongs to."""

    id: int
    name: str
    owner: UserJSON


class TicketJSON(TypedDict):
    """A ticket; ``resolution`` is set when it is resolved."""

    id: int
    number: int
    tracker: TicketTrackerJSON
    title: str
    description: str | None
    status: Annotated[str, TicketStatus]
    resolution: Annotated[str, Resolution] | None
    submitter: UserJSON
    created: Timestamp
    updated: Timestamp


class CommentJSON(TypedDict):
    """A comment on a ticket (``ticket`` is the ticket's number)."""

    id: int
    ticket: int
    author: UserJSON
    text: str
    created: Timestamp
    updated: Timestamp


def user_json(user: User) -> UserJSON:
    return {"id": user.id, "username": user.username}


def tracker_json(tracker: Tracker, owner: User) -> TrackerJSON:
    return {
        "id": tracker.id,
        "name": tracker.name,
        "description": tracker.description,
        "visibility": tracker.visibility.value,
        "owner": user_json(owner),
        "created": tracker.created.isoformat(),
        "updated": tracker.updated.isoformat(),
    }


def ticket_json(ticket: Ticket, tracker: Tracker, owner: User, submitter: User) -> TicketJSON:
    return {
        "id": ticket.id,
        "number": ticket.number,
        "tracker": {"id": tracker.id, "name": tracker.name, "owner": user_json(owner)},
        "title": ticket.title,
        "description": ticket.description,
        "status": ticket.status.value,
        "resolution": ticket.resolution.value if ticket.resolution is not None else None,
        "submitter": user_json(submitter),
        "created": ticket.created.isoformat(),
        "updated": ticket.updated.isoformat(),
    }


def comment_json(comment: Comment, ticket: Ticket, author: User) -> CommentJSON:
    return {
        "id": comment.id,
        "ticket": ticket.number,
        "author": user_json(author),
        "text": comment.text,
        "created": comment.created.isoformat(),
        "updated": comment.updated.isoformat(),
    }
