"""What todo does, shared by the HTML forms and the JSON API.

Reading input (with :class:`srcore.Validation`) and changing rows live here, so a form
and an API call that do the same thing accept exactly the same values and fail with the
same messages.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import abort
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, contains_eager
from sqlalchemy.orm.attributes import set_committed_value

from srcore.auth import hold_account
from srcore.conditional import form_version, opened_version_holds
from srcore.db import utcnow
from srcore.sqlrows import lock_row
from srcore.validation import Validation
from todo import events
from todo.models import (
    COMMENT_MAX,
    DESCRIPTION_MAX,
    TITLE_MAX,
    TRACKER_NAME,
    TRACKER_NAME_MAX,
    Comment,
    Resolution,
    Ticket,
    TicketStatus,
    Tracker,
    User,
    Visibility,
)

__all__ = [
    "MAX_ROW_ID",
    "add_comment",
    "apply_ticket",
    "apply_tracker",
    "can_change_status",
    "commit_or_conflict",
    "create_ticket",
    "find_tracker",
    "lock_tracker",
    "open_ticket",
    "read_comment",
    "read_ticket",
    "read_tracker",
    "save_ticket",
    "status_counts",
]

#: Ids and ticket numbers are 32-bit integer columns; larger ones cannot name a row.
MAX_ROW_ID = 2**31 - 1
#: Usernames are at most this long (``user.username``).
_USERNAME_MAX = 256

NAME_RULE = (
    "Use 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or a digit."
)
NAME_TAKEN = "You already have a tracker with this name."


def plausible_name(name: str) -> bool:
    """Whether *name* could be a tracker name at all (cheap check before any query)."""
    return TRACKER_NAME.fullmatch(name) is not None


def plausible_username(username: str) -> bool:
    """Whether *username* could be a stored username (no NUL, no lone surrogate, short)."""
    if not username or len(username) > _USERNAME_MAX or "\x00" in username:
        return False
    try:
        username.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# -- trackers ------------------------------------------------------------------------------


def read_tracker(valid: Validation, *, partial: bool = False) -> dict[str, Any]:
    """Read a tracker's fields. With ``partial`` (PATCH) only the fields present are read."""
    values: dict[str, Any] = {}
    if not partial or "name" in valid:
        name = valid.require("name", max_length=TRACKER_NAME_MAX)
        if name is not None and valid.expect(plausible_name(name), NAME_RULE, field="name"):
            values["name"] = name
    if not partial or "description" in valid:
        description = valid.optional("description", max_length=DESCRIPTION_MAX)
        values["description"] = description or None
    if not partial or "visibility" in valid:
        if partial:
            visibility = valid.require("visibility", Visibility)
        else:
            visibility = valid.optional("visibility", Visibility, default=Visibility.public)
        if visibility is not None:
            values["visibility"] = visibility
    return values


def tracker_version(tracker: Tracker) -> str:
    """A short digest of what the settings form changes, carried by the form as ``was``."""
    return form_version(tracker.name, tracker.description, tracker.visibility.value)


def name_taken(session: Session, owner: User, name: str, *, exclude: int | None = None) -> bool:
    """Whether *owner* already has a tracker called *name* (other than tracker *exclude*)."""
    stmt = select(Tracker.id).where(Tracker.owner_id == owner.id, Tracker.name == name)
    if exclude is not None:
        stmt = stmt.where(Tracker.id != exclude)
    return session.scalar(stmt.limit(1)) is not None


def apply_tracker(
    session: Session,
    valid: Validation,
    owner: User,
    values: dict[str, Any],
    tracker: Tracker | None,
) -> Tracker:
    """Create a tracker (``tracker`` None) or update one, after checking the name is free.

    Bad input raises ``ValidationFailed``; a name already taken is a 409 to the API.
    """
    valid.raise_if_invalid()
    if tracker is None:
        # Its owner's deletion may be applied meanwhile: it must see this tracker, or
        # this tracker must see it (else it is made after the deletion dropped theirs).
        hold_account(session, owner)
    name = values.get("name")
    exclude = tracker.id if tracker is not None else None
    if name is not None and name_taken(session, owner, name, exclude=exclude):
        valid.fail(NAME_TAKEN, "name", status=409)
    event = "tracker:updated"
    if tracker is None:
        tracker = Tracker(owner_id=owner.id, **values)
        tracker.owner = owner
        session.add(tracker)
        event = "tracker:created"
    else:
        lock_tracker(session, tracker, owner)
        opened_version_holds(
            valid,
            tracker_version(tracker),
            "Someone changed this tracker's settings since you opened this form (the "
            "fields show yours, unsaved; see the tracker for its settings now): send "
            "them again to replace theirs.",
        )
        valid.raise_if_invalid()
        for key, value in values.items():
            setattr(tracker, key, value)
    changed = event == "tracker:created" or session.is_modified(tracker)
    done = tracker

    def announce() -> None:
        if changed:
            events.tracker_changed(session, event, done, owner)

    if not commit_or_conflict(session, valid, NAME_TAKEN, field="name", before_commit=announce):
        if tracker in session:  # the rollback expired it; keep what pages read from it
            set_committed_value(tracker, "owner", owner)
        valid.raise_if_invalid(status=409)
    return tracker


def commit_or_conflict(
    session: Session,
    valid: Validation,
    reason: str,
    *,
    field: str | None = None,
    before_commit: Callable[[], None] | None = None,
) -> bool:
    """Commit; a unique constraint lost to a concurrent request becomes a form error.

    *before_commit* runs inside the transaction (it may flush), e.g. to emit the change's
    webhook event, which a lost conflict then rolls back with the change.
    """
    try:
        if before_commit is not None:
            before_commit()
        session.commit()
    except IntegrityError:
        session.rollback()
        valid.error(reason, field)
        return False
    return True


def find_tracker(session: Session, username: str, name: str, viewer: User | None) -> Tracker:
    """The tracker ``~username/name`` with its owner loaded, or 404 if *viewer* cannot see it.

    A private tracker of someone else is a 404, not a 403: its existence is private too.
    """
    if not plausible_username(username) or not plausible_name(name):
        abort(404)
    stmt = (
        select(Tracker)
        .join(Tracker.owner)
        .where(User.username == username, Tracker.name == name)
        .options(contains_eager(Tracker.owner))
    )
    tracker = session.scalar(stmt)
    if tracker is None or not tracker.visible_to(viewer):
        abort(404)
    return tracker


def lock_tracker(session: Session, tracker: Tracker, viewer: User) -> None:
    """Hold *tracker*'s row until the transaction ends and read it again; a 404 if it was
    deleted, or hidden from *viewer*, since the request first read it.

    A write reads the tracker, checks who may see it, then writes; another request may
    delete the tracker or change its visibility in between. The write then failed on rows
    that were gone (a 500), or landed in a tracker its writer could no longer see, its
    event recorded with the visibility read before the change: a comment on a tracker just
    made private reached every subscriber. Call this before the first write
    (:func:`srcore.sqlrows.lock_row` says how the lock is taken on both databases).
    """
    if not lock_row(session, tracker):
        abort(404)
    if not tracker.visible_to(viewer):
        abort(404)


def own_tracker(session: Session, owner: User, name: str) -> Tracker:
    """*owner*'s tracker called *name*, or 404."""
    if not plausible_name(name):
        abort(404)
    tracker = session.scalar(
        select(Tracker).where(Tracker.owner_id == owner.id, Tracker.name == name)
    )
    if tracker is None:
        abort(404)
    set_committed_value(tracker, "owner", owner)
    return tracker


# -- tickets -------------------------------------------------------------------------------


def ticket_version(ticket: Ticket) -> str:
    """A short digest of what the edit form changes (title and description): the form
    carries the one it was opened with, so a save over someone's later edit is seen."""
    return form_version(ticket.title, ticket.description)


def read_ticket_edit(valid: Validation, ticket: Ticket) -> dict[str, Any]:
    """The edit form's values, or an error when the ticket changed since the form was
    opened: the form comes back with the person's text and the ticket's current version
    (sending it again replaces the other edit, knowingly)."""
    opened_version_holds(
        valid,
        ticket_version(ticket),
        "Someone changed this ticket since you opened this form: its title is now "
        f"\u201c{ticket.title}\u201d (see the ticket for its description). Your text is "
        "below, unsaved: send it again to replace theirs.",
    )
    return read_ticket(valid, partial=True)


def read_ticket(valid: Validation, *, partial: bool = False) -> dict[str, Any]:
    """Read a ticket's title and description (and, with ``partial``, only those present)."""
    values: dict[str, Any] = {}
    if not partial or "title" in valid:
        title = valid.require("title", max_length=TITLE_MAX, text="line")
        if title is not None:
            values["title"] = title
    if not partial or "description" in valid:
        values["description"] = valid.optional("description", max_length=DESCRIPTION_MAX) or None
    return values


def read_status(
    valid: Validation, ticket: Ticket | None, *, partial: bool = False
) -> dict[str, Any]:
    """Read a status change of *ticket* (None: a new, open one): ``status`` (open or
    resolved) and, for resolved, ``resolution``.

    Resolving without a resolution means ``fixed``; reopening clears the resolution.
    """
    values: dict[str, Any] = {}
    status: TicketStatus | None = ticket.status if ticket is not None else TicketStatus.open
    if not partial or "status" in valid:
        status = valid.require("status", TicketStatus)
        if status is None:
            return values
        values["status"] = status
    resolution = valid.optional("resolution", Resolution)
    if resolution is not None and valid.expect(
        status == TicketStatus.resolved,
        "Only a resolved ticket has a resolution.",
        field="resolution",
    ):
        values["resolution"] = resolution
    if values.get("status") == TicketStatus.resolved:
        current = ticket.resolution if ticket is not None else None
        values.setdefault("resolution", current or Resolution.fixed)
    elif values.get("status") == TicketStatus.open:
        values["resolution"] = None
    return values


def status_version(ticket: Ticket) -> str:
    """A short digest of a ticket's status and resolution, carried by its status form."""
    return form_version(ticket.status.value, ticket.resolution and ticket.resolution.value)


def read_status_form(valid: Validation, ticket: Ticket) -> dict[str, Any]:
    """The status form's change, or an error when the status changed since the page was
    opened: a Resolve on a page that still showed the ticket open does not replace the
    resolution someone gave it meanwhile, nor does a Reopen undo a later decision."""
    resolution = ticket.resolution.value if ticket.resolution else ""
    now = f"resolved ({resolution.replace('_', ' ')})" if resolution else ticket.status.value
    if not opened_version_holds(
        valid,
        status_version(ticket),
        f"Someone changed this ticket's status since you opened this page: it is {now}. "
        "Nothing was changed; choose again below.",
        field="status",
    ):
        return {}
    return read_status(valid, ticket)


def apply_ticket(ticket: Ticket, values: dict[str, Any]) -> None:
    """Apply read values to *ticket* (its ``updated`` time moves with any change)."""
    for key, value in values.items():
        setattr(ticket, key, value)


#: What a ticket's events and pages show of it, read again under the tracker's lock.
_TICKET_FIELDS = ["title", "description", "status", "resolution", "updated"]


def save_ticket(
    session: Session,
    valid: Validation,
    ticket: Ticket,
    read: Callable[[], dict[str, Any]],
    people: tuple[Tracker, User, User],
    *,
    editor: User,
) -> None:
    """Apply the values *read* gets from *valid* (raising if it failed), emit
    ``ticket:updated`` if anything changed, and commit. *people*: the tracker, its owner,
    the submitter; *editor*: who changes it.

    The ticket is read again once its tracker is locked, and only then are the values
    read, since a status change is judged against the ticket's status: a change committed
    meanwhile stays (a resolution is not given to a ticket just reopened), and the event
    carries the ticket as it now is.
    """
    lock_tracker(session, people[0], editor)
    session.refresh(ticket, _TICKET_FIELDS)
    values = read()
    valid.raise_if_invalid()
    apply_ticket(ticket, values)
    if session.is_modified(ticket):
        events.ticket_changed(session, "ticket:updated", ticket, *people)
    session.commit()


def open_ticket(
    session: Session, valid: Validation, tracker: Tracker, submitter: User, values: dict[str, Any]
) -> Ticket:
    """Create a ticket from *values* read by *valid* (raising if it failed), emit
    ``ticket:created`` and commit."""
    valid.raise_if_invalid()
    ticket = create_ticket(session, tracker, submitter, values)
    events.ticket_changed(session, "ticket:created", ticket, tracker, tracker.owner, submitter)
    session.commit()
    return ticket


def create_ticket(
    session: Session, tracker: Tracker, submitter: User, values: dict[str, Any]
) -> Ticket:
    """Add a ticket with the tracker's next number; the caller commits.

    The number comes from an atomic ``UPDATE ... RETURNING`` on the tracker row, which
    also serialises concurrent submissions to one tracker without a table lock, and
    holds the row as :func:`lock_tracker` does: a tracker deleted, or hidden from
    *submitter*, since it was read is a 404.
    """
    row = session.execute(
        update(Tracker)
        .where(Tracker.id == tracker.id)
        .values(ticket_count=Tracker.ticket_count + 1, updated=utcnow())
        .returning(Tracker.ticket_count, Tracker.updated, Tracker.name, Tracker.visibility)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        abort(404)
    for key, value in row._mapping.items():
        set_committed_value(tracker, key, value)
    number = tracker.ticket_count
    if not tracker.visible_to(submitter):
        abort(404)
    ticket = Ticket(tracker_id=tracker.id, number=number, submitter_id=submitter.id, **values)
    ticket.tracker = tracker
    ticket.submitter = submitter
    session.add(ticket)
    return ticket


def find_ticket(session: Session, tracker: Tracker, number: int) -> Ticket:
    """Ticket *number* of *tracker*, with its submitter loaded, or 404."""
    if not 1 <= number <= MAX_ROW_ID:
        abort(404)
    # At most one row ((tracker_id, number) is unique), which the planner does not know:
    # for a big tracker it guesses many, and hashed the whole user table to join them.
    row = session.execute(
        select(Ticket, User)
        .join(User, Ticket.submitter_id == User.id)
        .where(Ticket.tracker_id == tracker.id, Ticket.number == number)
        .limit(1)
    ).first()
    if row is None:
        abort(404)
    ticket, submitter = row
    set_committed_value(ticket, "tracker", tracker)
    set_committed_value(ticket, "submitter", submitter)
    return ticket


def can_change_status(ticket: Ticket, tracker: Tracker, user: User | None) -> bool:
    """The tracker's owner and the ticket's submitter may edit, resolve and reopen it."""
    return user is not None and user.id in (tracker.owner_id, ticket.submitter_id)


def status_counts(session: Session, tracker: Tracker) -> dict[TicketStatus, int]:
    """How many tickets of *tracker* are open and resolved (one grouped query)."""
    counts = dict.fromkeys(TicketStatus, 0)
    rows = session.execute(
        select(Ticket.status, func.count())
        .where(Ticket.tracker_id == tracker.id)
        .group_by(Ticket.status)
    )
    for status, count in rows:
        counts[TicketStatus(status)] = count
    return counts


# -- comments ------------------------------------------------------------------------------


def read_comment(valid: Validation) -> str | None:
    """Read a comment's text (markdown)."""
    return valid.require("text", max_length=COMMENT_MAX, label="Comment")


def add_comment(
    session: Session, valid: Validation, tracker: Tracker, ticket: Ticket, author: User
) -> Comment:
    """Add the comment *valid* reads (raising if it fails) to *ticket*, emit
    ``comment:created`` and commit."""
    text = read_comment(valid)
    valid.raise_if_invalid()
    lock_tracker(session, tracker, author)
    comment = Comment(ticket_id=ticket.id, author_id=author.id, text=text)
    comment.author = author
    ticket.updated = utcnow()
    session.add(comment)
    events.comment_created(session, comment, ticket, tracker, author)
    session.commit()
    return comment
