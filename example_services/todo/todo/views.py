"""Todo's HTML pages: trackers, tickets and comments.

Every form re-renders itself with the errors beside the fields (status 400) when its
input is invalid, and redirects after a successful POST. CSRF is checked by srcore on
every POST outside the API; the templates carry the token with ``forms.csrf()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, cast

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.sansio.blueprints import BlueprintSetupState
from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from srcore.auth import current_user, login_required, require_user
from srcore.db import session
from srcore.once import once_per_form
from srcore.pagination import CursorPage, cursor_page, page_number, paginate_pages
from srcore.search import read_search
from srcore.settings import settings
from srcore.validation import Validation
from todo import events, logic
from todo.models import Comment, Resolution, Ticket, TicketStatus, Tracker, User, Visibility
from todo.search import TICKETS

__all__ = ["Settings", "views"]

views = Blueprint("todo", __name__)

#: The ticket number segment: out-of-range numbers never match, so they are a plain 404.
NUMBER = "<id:number>"
TRACKER = "/~<username>/<name>"

_STATUS_FILTERS = ("open", "resolved", "all")


@dataclass(frozen=True)
class Settings:
    """Todo's ``[todo]`` keys (service.yaml), read once."""

    tickets_per_page: int
    trackers_per_page: int


VISIBILITY_OPTIONS = [
    (Visibility.public.value, "Public: listed on the front page"),
    (Visibility.unlisted.value, "Unlisted: anyone with the link"),
    (Visibility.private.value, "Private: only you"),
]
RESOLUTION_OPTIONS = [
    (Resolution.fixed.value, "Fixed"),
    (Resolution.implemented.value, "Implemented"),
    (Resolution.duplicate.value, "Duplicate"),
    (Resolution.wont_fix.value, "Won't fix"),
    (Resolution.invalid.value, "Invalid"),
]


@views.record_once
def _template_globals(state: BlueprintSetupState) -> None:
    # Globals rather than context: imported macros see globals only.
    state.app.jinja_env.globals.update(
        VISIBILITY_OPTIONS=VISIBILITY_OPTIONS,
        RESOLUTION_OPTIONS=RESOLUTION_OPTIONS,
        RESOLUTION_NAMES=dict(RESOLUTION_OPTIONS),
        ticket_version=logic.ticket_version,
        tracker_version=logic.tracker_version,
        status_version=logic.status_version,
    )


def _viewer() -> User | None:
    return cast("User | None", current_user._get_current_object())


def _tracker_url(tracker: Tracker, endpoint: str = "todo.tracker", **values: Any) -> str:
    return url_for(endpoint, username=tracker.owner.username, name=tracker.name, **values)


def _ticket_url(tracker: Tracker, ticket: Ticket) -> str:
    return _tracker_url(tracker, "todo.ticket", number=ticket.number)


def _own(username: str, name: str) -> Tracker:
    """A tracker the logged-in user owns; anyone else gets the same 404 as for a stranger's."""
    user = require_user(User)
    tracker = logic.find_tracker(session, username, name, user)
    if tracker.owner_id != user.id:
        abort(404 if tracker.visibility == Visibility.private else 403)
    return tracker


# -- trackers ------------------------------------------------------------------------------


@views.route("/")
def index() -> Any:
    """The user's trackers and everybody's public ones, the user's own included, a page
    of each at a time.

    The public list is what anyone sees; leaving the viewer's own public trackers out of
    it would tell them that nobody can find their work. The user's own are the most
    recently changed first, and ``?cursor=`` pages through them, ``?page=`` through the
    public ones.
    """
    query = Validation()
    page = page_number(query)
    user = _viewer()
    per_page = max(settings(Settings).trackers_per_page, 1)
    mine: CursorPage[Tracker] | None = None
    if user is not None:
        own = select(Tracker).where(Tracker.owner_id == user.id)
        key = [Tracker.updated, Tracker.id]
        mine = cursor_page(session, own, key=key, valid=query, per_page=per_page)
        for tracker in mine.items:
            set_committed_value(tracker, "owner", user)
    public = select(Tracker).where(Tracker.visibility == Visibility.public)
    public = public.order_by(Tracker.id.desc()).options(selectinload(Tracker.owner))
    listing = paginate_pages(session, public, page=page, per_page=per_page)
    return render_template("todo/index.html", mine=mine, listing=listing)


@views.route("/create", methods=["GET", "POST"])
@login_required
def create_tracker() -> Any:
    user = require_user(User)
    if request.method == "GET":
        return render_template("todo/tracker_form.html", valid=None, tracker=None)
    valid = Validation.form("todo/tracker_form.html", tracker=None)
    tracker = logic.apply_tracker(session, valid, user, logic.read_tracker(valid), None)
    flash(f"Tracker {tracker.name} created.", "success")
    return redirect(_tracker_url(tracker))


@views.route(TRACKER)
def tracker(username: str, name: str) -> Any:
    """A tracker's tickets, filtered by status and by a search, a page at a time.

    Without a search the tab shown is the open tickets; with one, all of them, so that the
    search's own ``status:`` terms are not contradicted by a tab nobody chose.
    """
    viewer = _viewer()
    found = logic.find_tracker(session, username, name, viewer)
    query = Validation()
    status = query.optional("status", "enum", choices=_STATUS_FILTERS)
    page = page_number(query)
    # A bad search is shown on the page, beside the box; other bad values are a 400.
    search, condition = read_search(query, TICKETS)
    search_error = query.error_for("search")
    status = status or ("all" if search else "open")
    stmt = select(Ticket).where(Ticket.tracker_id == found.id, condition)
    if status != "all":
        stmt = stmt.where(Ticket.status == TicketStatus(status))
    stmt = stmt.order_by(Ticket.number.desc()).options(selectinload(Ticket.submitter))
    per_page = max(settings(Settings).tickets_per_page, 1)
    listing = paginate_pages(session, stmt, page=page, per_page=per_page)
    page_html = render_template(
        "todo/tracker.html",
        tracker=found,
        listing=listing,
        status=status,
        search=search,
        search_error=search_error,
        counts=logic.status_counts(session, found),
        is_owner=viewer is not None and viewer.id == found.owner_id,
    )
    return page_html, 400 if search_error else 200


@views.route(f"{TRACKER}/settings", methods=["GET", "POST"])
@login_required
def tracker_settings(username: str, name: str) -> Any:
    found = _own(username, name)
    if request.method == "GET":
        return render_template("todo/tracker_form.html", valid=None, tracker=found)
    valid = Validation.form("todo/tracker_form.html", tracker=found)
    # A field the form leaves out keeps its value (not a new tracker's default: public).
    values = logic.read_tracker(valid, partial=True)
    logic.apply_tracker(session, valid, found.owner, values, found)
    flash("Tracker settings saved.", "success")
    return redirect(_tracker_url(found))


@views.route(f"{TRACKER}/delete", methods=["GET", "POST"])
@login_required
def delete_tracker(username: str, name: str) -> Any:
    found = _own(username, name)
    if request.method == "GET":
        return render_template("todo/tracker_delete.html", valid=None, tracker=found)
    valid = Validation.form("todo/tracker_delete.html", tracker=found)
    confirm = valid.require("confirm", max_length=256, label="The tracker's name")
    if confirm is not None and confirm != found.name:
        valid.error("Type the tracker's name exactly to confirm.", "confirm")
    valid.raise_if_invalid()
    logic.lock_tracker(session, found, found.owner)
    events.tracker_changed(session, "tracker:deleted", found, found.owner)
    session.execute(delete(Tracker).where(Tracker.id == found.id))
    session.commit()
    flash(f"Tracker {found.name} deleted, with its tickets.", "success")
    return redirect(url_for("todo.index"))


# -- tickets -------------------------------------------------------------------------------


@views.route(f"{TRACKER}/new", methods=["GET", "POST"])
@login_required
@once_per_form
def new_ticket(username: str, name: str) -> Any:
    user = require_user(User)
    found = logic.find_tracker(session, username, name, user)
    if request.method == "GET":
        return render_template("todo/ticket_form.html", valid=None, tracker=found)
    valid = Validation.form("todo/ticket_form.html", tracker=found)
    ticket = logic.open_ticket(session, valid, found, user, logic.read_ticket(valid))
    flash(f"Ticket #{ticket.number} submitted.", "success")
    return redirect(_ticket_url(found, ticket))


#: Comments on one page of a ticket.
COMMENTS_PER_PAGE = 50


def _ticket_page(found: Tracker, ticket: Ticket, *, first: bool = False) -> dict[str, Any]:
    """What the ticket's page shows (its comment and status forms shown again too).

    The comments are the newest ones, read in the order they were written; ``?cursor=``
    goes back to older ones. So the page stays one page long however long the discussion,
    and a new comment (the page a comment form leads back to) is on the first page.
    *first*: the first page whatever the query string says (a form shown again).
    """
    stmt = (
        select(Comment).where(Comment.ticket_id == ticket.id).options(selectinload(Comment.author))
    )
    valid = Validation(data={}) if first else None
    comments = cursor_page(session, stmt, key=Comment.id, valid=valid, per_page=COMMENTS_PER_PAGE)
    return {
        "tracker": found,
        "ticket": ticket,
        "comments": comments.items[::-1],
        "older_comments": comments.next_cursor,
        "can_change_status": logic.can_change_status(ticket, found, _viewer()),
    }


@views.route(f"{TRACKER}/{NUMBER}")
def ticket(username: str, name: str, number: int) -> Any:
    found = logic.find_tracker(session, username, name, _viewer())
    context = _ticket_page(found, logic.find_ticket(session, found, number))
    return render_template("todo/ticket.html", valid=None, **context)


@views.route(f"{TRACKER}/{NUMBER}/edit", methods=["GET", "POST"])
@login_required
def edit_ticket(username: str, name: str, number: int) -> Any:
    """Change a ticket's title and description: its submitter and the tracker's owner may."""
    user = require_user(User)
    found = logic.find_tracker(session, username, name, user)
    ticket = logic.find_ticket(session, found, number)
    if not logic.can_change_status(ticket, found, user):
        abort(403)
    if request.method == "GET":
        return render_template("todo/ticket_form.html", valid=None, tracker=found, ticket=ticket)
    valid = Validation.form("todo/ticket_form.html", tracker=found, ticket=ticket)
    people = (found, found.owner, ticket.submitter)
    # A field the form leaves out keeps its value; one changed since the form was opened
    # is not overwritten unseen.
    read = partial(logic.read_ticket_edit, valid, ticket)
    logic.save_ticket(session, valid, ticket, read, people, editor=user)
    flash(f"Ticket #{ticket.number} saved.", "success")
    return redirect(_ticket_url(found, ticket))


@views.route(f"{TRACKER}/{NUMBER}/comment", methods=["POST"])
@login_required
@once_per_form
def comment(username: str, name: str, number: int) -> Any:
    user = require_user(User)
    found = logic.find_tracker(session, username, name, user)
    ticket = logic.find_ticket(session, found, number)
    valid = Validation.form("todo/ticket.html", lambda: _ticket_page(found, ticket, first=True))
    logic.add_comment(session, valid, found, ticket, user)
    flash("Comment added.", "success")
    return redirect(_ticket_url(found, ticket) + "#comments")


@views.route(f"{TRACKER}/{NUMBER}/status", methods=["POST"])
@login_required
def ticket_status(username: str, name: str, number: int) -> Any:
    user = require_user(User)
    found = logic.find_tracker(session, username, name, user)
    ticket = logic.find_ticket(session, found, number)
    if not logic.can_change_status(ticket, found, user):
        abort(403)
    valid = Validation.form("todo/ticket.html", lambda: _ticket_page(found, ticket, first=True))
    people = (found, found.owner, ticket.submitter)
    read = partial(logic.read_status_form, valid, ticket)
    logic.save_ticket(session, valid, ticket, read, people, editor=user)
    flash(
        "Ticket reopened." if ticket.status == TicketStatus.open else "Ticket resolved.", "success"
    )
    return redirect(_ticket_url(found, ticket))
