"""The JSON shapes of todo's rows: what the API answers and what webhook events carry."""

from __future__ import annotations

from typing import Any

from todo.models import Comment, Ticket, Tracker, User

__all__ = ["comment_json", "ticket_json", "tracker_json", "user_json"]


def user_json(user: User) -> dict[str, Any]:
    return {"id": user.id, "username": user.username}


def tracker_json(tracker: Tracker, owner: User) -> dict[str, Any]:
    return {
        "id": tracker.id,
        "name": tracker.name,
        "description": tracker.description,
        "visibility": tracker.visibility.value,
        "owner": user_json(owner),
        "created": tracker.created.isoformat(),
        "updated": tracker.updated.isoformat(),
    }


def ticket_json(ticket: Ticket, tracker: Tracker, owner: User, submitter: User) -> dict[str, Any]:
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


def comment_json(comment: Comment, ticket: Ticket, author: User) -> dict[str, Any]:
    return {
        "id": comment.id,
        "ticket": ticket.number,
        "author": user_json(author),
        "text": comment.text,
        "created": comment.created.isoformat(),
        "updated": comment.updated.isoformat(),
    }
