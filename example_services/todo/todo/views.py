"""Todo's HTML pages: trackers, tickets and comments.

Every form re-renders itself with the errors beside the fields (status 400) when its
input is invalid, and redirects after a successful POST. CSRF is checked by srcore on
every POST outside the API; the templates carry the token with ``forms.csrf()``.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.sansio.blueprints import BlueprintSetupState
from sqlalchemy import delete, select
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value
from werkzeug.wrappers import Response

import srcore
from srcore.auth import current_user, login_required
from srcore.db import session
from srcore.errors import error_response
from srcore.pagination import paginate_pages
from srcore.search import read_search
from srcore.validation import Validation
from todo import events, logic
from todo.models import Comment, Resolution, Ticket, TicketStatus, Tracker, User, Visibility
from todo.search import TICKETS

__all__ = ["views"]

views = Blueprint("todo", __name__)

#: The ticket number segment: out-of-range numbers never match, so they are a plain 404.
NUMBER = "<id:number>"
TRACKER = "/~<username>/<name>"

_MAX_PAGE = 1_000_000
_STATUS_FILTERS = ("open", "resolved", "all")

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
    )


def _viewer() -> User | None:
    return cast("User | None", current_user._get_current_object())


def _user() -> User:
    user = _viewer()
    if user is None:  # login_required guards every caller
        abort(401)
    return user


def _per_page(key: str) -> int:
    value = srcore.state().section.get(key)
    return value if isinstance(value, int) and value > 0 else 25


def _query() -> Validation:
    """Validate the query string (never the body, whatever the content type says)."""
    return Validation(data=request.args, source="form")


def _page(valid: Validation) -> int:
    return valid.integer("page", min=1, max=_MAX_PAGE, default=1) or 1


def _bad_query(valid: Validation) -> Response:
    reasons = "; ".join(f"{err.field}: {err.reason}" for err in valid.errors)
    return error_response(400, f"Invalid address: {reasons}")


def _tracker_url(tracker: Tracker, endpoint: str = "todo.tracker", **values: Any) -> str:
    return url_for(endpoint, username=tracker.owner.username, name=tracker.name, **values)


def _ticket_url(tracker: Tracker, ticket: Ticket) -> str:
    return _tracker_url(tracker, "todo.ticket", number=ticket.number)


def _own(username: str, name: str) -> Tracker:
    """A tracker the logged-in user owns; anyone else gets the same 404 as for a stranger's."""
    user = _user()
    tracker = logic.find_tracker(session, username, name, user)
    if tracker.owner_id != user.id:
        abort(404 if tracker.visibility == Visibility.private else 403)
    return tracker


# -- trackers ------------------------------------------------------------------------------


@views.route("/")
def index() -> Any:
    """The user's trackers and everybody's public ones, the user's own included.

    The public list is what anyone sees; leaving the viewer's own public trackers out of
    it would tell them that nobody can find their work.
    """
    query = _query()
    page = _page(query)
    if not query.ok:
        return _bad_query(query)
    user = _viewer()
    mine: list[Tracker] = []
    public = select(Tracker).where(Tracker.visibility == Visibility.public)
    if user is not None:
        mine = list(
            session.scalars(
                select(Tracker)
                .where(Tracker.owner_id == user.id)
                .order_by(Tracker.updated.desc(), Tracker.id.desc())
            )
        )
        for tracker in mine:
            set_committed_value(tracker, "owner", user)
    public = public.order_by(Tracker.id.desc()).options(selectinload(Tracker.owner))
    listing = paginate_pages(session, public, page=page, per_page=_per_page("trackers-per-page"))
    return render_template("todo/index.html", mine=mine, listing=listing)


@views.route("/create", methods=["GET", "POST"])
@login_required
def create_tracker() -> Any:
    user = _user()
    if request.method == "GET":
        return render_template("todo/tracker_form.html", valid=None, tracker=None)
    valid = Validation(request)
    values = logic.read_tracker(valid)
    tracker = logic.apply_tracker(session, valid, user, values, None)
    if tracker is None:
        return render_template("todo/tracker_form.html", valid=valid, tracker=None), 400
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
    query = _query()
    search, condition = read_search(query, TICKETS)
    search_error = query.error_for("search")
    default = "all" if search else "open"
    status = query.optional("status", "enum", choices=_STATUS_FILTERS) or default
    page = _page(query)
    if any(err.field != "search" for err in query.errors):
        return _bad_query(query)
    stmt = select(Ticket).where(Ticket.tracker_id == found.id, condition)
    if status != "all":
        stmt = stmt.where(Ticket.status == TicketStatus(status))
    stmt = stmt.order_by(Ticket.number.desc()).options(selectinload(Ticket.submitter))
    listing = paginate_pages(session, stmt, page=page, per_page=_per_page("tickets-per-page"))
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
    valid = Validation(request)
    values = logic.read_tracker(valid)
    if logic.apply_tracker(session, valid, found.owner, values, found) is None:
        return render_template("todo/tracker_form.html", valid=valid, tracker=found), 400
    flash("Tracker settings saved.", "success")
    return redirect(_tracker_url(found))


@views.route(f"{TRACKER}/delete", methods=["GET", "POST"])
@login_required
def delete_tracker(username: str, name: str) -> Any:
    found = _own(username, name)
    if request.method == "GET":
        return render_template("todo/tracker_delete.html", valid=None, tracker=found)
    valid = Validation(request)
    confirm = valid.require("confirm", max_length=256, label="The tracker's name")
    if confirm is not None:
        valid.expect(
            confirm == found.name, "Type the tracker's name exactly to confirm.", field="confirm"
        )
    if not valid.ok:
        return render_template("todo/tracker_delete.html", valid=valid, tracker=found), 400
    events.tracker_changed(session, "tracker:deleted", found, found.owner)
    session.execute(delete(Tracker).where(Tracker.id == found.id))
    session.commit()
    flash(f"Tracker {found.name} deleted, with its tickets.", "success")
    return redirect(url_for("todo.index"))


# -- tickets -------------------------------------------------------------------------------


@views.route(f"{TRACKER}/new", methods=["GET", "POST"])
@login_required
def new_ticket(username: str, name: str) -> Any:
    found = logic.find_tracker(session, username, name, _user())
    if request.method == "GET":
        return render_template("todo/ticket_form.html", valid=None, tracker=found)
    valid = Validation(request)
    values = logic.read_ticket(valid)
    if not valid.ok:
        return render_template("todo/ticket_form.html", valid=valid, tracker=found), 400
    ticket = logic.create_ticket(session, found, _user(), values)
    events.ticket_changed(session, "ticket:created", ticket, found, found.owner, _user())
    session.commit()
    flash(f"Ticket #{ticket.number} submitted.", "success")
    return redirect(_ticket_url(found, ticket))


def _ticket_page(
    found: Tracker, ticket: Ticket, *, valid: Validation | None = None, status: int = 200
) -> Any:
    comments = session.scalars(
        select(Comment)
        .where(Comment.ticket_id == ticket.id)
        .order_by(Comment.id)
        .options(selectinload(Comment.author))
    ).all()
    user = _viewer()
    page = render_template(
        "todo/ticket.html",
        tracker=found,
        ticket=ticket,
        comments=comments,
        valid=valid,
        can_change_status=logic.can_change_status(ticket, found, user),
    )
    return page, status


@views.route(f"{TRACKER}/{NUMBER}")
def ticket(username: str, name: str, number: int) -> Any:
    found = logic.find_tracker(session, username, name, _viewer())
    return _ticket_page(found, logic.find_ticket(session, found, number))


@views.route(f"{TRACKER}/{NUMBER}/edit", methods=["GET", "POST"])
@login_required
def edit_ticket(username: str, name: str, number: int) -> Any:
    """Change a ticket's title and description: its submitter and the tracker's owner may."""
    user = _user()
    found = logic.find_tracker(session, username, name, user)
    ticket = logic.find_ticket(session, found, number)
    if not logic.can_change_status(ticket, found, user):
        abort(403)
    if request.method == "GET":
        return render_template("todo/ticket_form.html", valid=None, tracker=found, ticket=ticket)
    valid = Validation(request)
    values = logic.read_ticket(valid)
    if not valid.ok:
        page = render_template("todo/ticket_form.html", valid=valid, tracker=found, ticket=ticket)
        return page, 400
    logic.apply_ticket(ticket, values)
    if session.is_modified(ticket):
        events.ticket_changed(
            session, "ticket:updated", ticket, found, found.owner, ticket.submitter
        )
    session.commit()
    flash(f"Ticket #{ticket.number} saved.", "success")
    return redirect(_ticket_url(found, ticket))


@views.route(f"{TRACKER}/{NUMBER}/comment", methods=["POST"])
@login_required
def comment(username: str, name: str, number: int) -> Any:
    user = _user()
    found = logic.find_tracker(session, username, name, user)
    ticket = logic.find_ticket(session, found, number)
    valid = Validation(request)
    text = logic.read_comment(valid)
    if text is None or not valid.ok:
        return _ticket_page(found, ticket, valid=valid, status=400)
    comment = logic.add_comment(session, ticket, user, text)
    events.comment_created(session, comment, ticket, found, user)
    session.commit()
    flash("Comment added.", "success")
    return redirect(_ticket_url(found, ticket) + "#comments")


@views.route(f"{TRACKER}/{NUMBER}/status", methods=["POST"])
@login_required
def ticket_status(username: str, name: str, number: int) -> Any:
    user = _user()
    found = logic.find_tracker(session, username, name, user)
    ticket = logic.find_ticket(session, found, number)
    if not logic.can_change_status(ticket, found, user):
        abort(403)
    valid = Validation(request)
    values = logic.read_status(valid, ticket)
    if not valid.ok:
        return _ticket_page(found, ticket, valid=valid, status=400)
    logic.apply_ticket(ticket, values)
    if session.is_modified(ticket):
        events.ticket_changed(
            session, "ticket:updated", ticket, found, found.owner, ticket.submitter
        )
    session.commit()
    flash(
        "Ticket reopened." if ticket.status == TicketStatus.open else "Ticket resolved.", "success"
    )
    return redirect(_ticket_url(found, ticket))
