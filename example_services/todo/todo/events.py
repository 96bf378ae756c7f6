"""The webhook events todo emits, and who may receive them.

Every change writes its event with :func:`srcore.webhooks.emit` in the change's own
transaction, so a rolled-back change emits nothing; emit flushes first and builds the
payload after (a lambda), so a new row's id and timestamps are in it. The payload is the
same JSON shape the API answers with, and the resource is ``tracker:<id>``, so a
subscriber can follow one tracker. Every event records the tracker's owner and
visibility as they were at the change; their ``readers`` audience (service.yaml) then
sends a public tracker's events to every subscriber and an unlisted or private tracker's
to its owner only, whatever happens to the tracker before the worker fans them out.
:func:`can_receive` is the ``webhook_filter`` todo hands to srcore: it refuses
subscriptions limited to a tracker their owner cannot see.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session, object_session

from srcore.routing import ID_MAX
from srcore.webhooks import emit
from srcore.webhooks.models import OutboxRow, Subscription
from todo.models import Comment, Ticket, Tracker, User, Visibility
from todo.shapes import comment_json, ticket_json, tracker_json

__all__ = [
    "can_receive",
    "comment_created",
    "resource_of",
    "ticket_changed",
    "tracker_changed",
]


def resource_of(tracker: Tracker | int) -> str:
    """The webhook resource name of a tracker: ``tracker:<id>``."""
    ident = tracker if isinstance(tracker, int) else tracker.id
    return f"tracker:{ident}"


def _recorded(tracker: Tracker) -> dict[str, Any]:
    """Who owns *tracker* and who sees it now: recorded with each of its events."""
    return {"owner_id": tracker.owner_id, "visibility": Visibility(tracker.visibility).value}


def tracker_changed(session: Session, event: str, tracker: Tracker, owner: User) -> None:
    """Emit ``tracker:created``, ``tracker:updated`` or ``tracker:deleted`` (call before the
    delete is flushed, while the row can still be read)."""
    emit(
        event,
        lambda: tracker_json(tracker, owner),
        resource=lambda: resource_of(tracker),
        **_recorded(tracker),
        session=session,
    )


def ticket_changed(
    session: Session, event: str, ticket: Ticket, tracker: Tracker, owner: User, submitter: User
) -> None:
    """Emit ``ticket:created`` or ``ticket:updated``."""
    emit(
        event,
        lambda: ticket_json(ticket, tracker, owner, submitter),
        resource=resource_of(tracker),
        **_recorded(tracker),
        session=session,
    )


def comment_created(
    session: Session, comment: Comment, ticket: Ticket, tracker: Tracker, author: User
) -> None:
    """Emit ``comment:created``."""
    emit(
        "comment:created",
        lambda: comment_json(comment, ticket, author),
        resource=resource_of(tracker),
        **_recorded(tracker),
        session=session,
    )


def _tracker_id(resource: str | None) -> int | None:
    """The tracker id *resource* names, or None (not a tracker, past the id column, or not
    spelled as events spell it: ``tracker:012`` would never match ``tracker:12``)."""
    kind, _, ident = (resource or "").partition(":")
    if kind != "tracker" or not ident.isascii() or not ident.isdigit() or len(ident) > 10:
        return None
    number = int(ident)
    return number if 1 <= number <= ID_MAX and str(number) == ident else None


def can_receive(subscription: Subscription, outbox: OutboxRow) -> bool:
    """Whether the owner of *subscription* may limit it to the tracker *outbox* names.

    Asked when a subscription names a tracker: it must exist and be public, or be owned by
    the subscription's owner (a user who exists here and is not suspended). An unlisted
    tracker is not enough: its id is no link to it, so an answer would tell anyone which
    ids are unlisted trackers, and its events reach its owner only anyway. Emitted events
    are not judged here: their recorded owner and visibility decide (see the module's
    docstring).
    """
    tracker_id = _tracker_id(outbox.resource)
    if tracker_id is None:
        return False
    session = object_session(subscription)
    if session is None:
        from srcore.db import session as request_session

        session = request_session
    viewer: User | None = None
    if subscription.owner_id is not None:
        viewer = session.get(User, subscription.owner_id)
        if viewer is None or viewer.is_suspended:
            return False
    tracker = session.get(Tracker, tracker_id)
    if tracker is None:
        return False
    return tracker.visibility == Visibility.public or (
        viewer is not None and viewer.id == tracker.owner_id
    )
