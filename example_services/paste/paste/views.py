"""Paste's pages: the public pastes, a new paste, one paste (edited and deleted by its
owner), your pastes.

An invalid form is shown again with the reasons beside the fields (status 400); a valid
one redirects to the new paste. srcore checks the CSRF token of every POST outside
``/api/``.
"""

from __future__ import annotations

from typing import Any, cast

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.sansio.blueprints import BlueprintSetupState
from sqlalchemy import Select, select
from sqlalchemy.orm import selectinload
from werkzeug.wrappers import Response

from paste import logic
from paste.models import Format, Paste, User, Visibility
from paste.search import PASTES
from srcore.auth import current_user, login_required, require_user
from srcore.db import session
from srcore.highlighting import language_choices, language_name
from srcore.pagination import page_number, paginate_pages
from srcore.search import read_search
from srcore.settings import settings
from srcore.validation import Validation

__all__ = ["views"]

views = Blueprint("paste", __name__)

FORMAT_OPTIONS = [
    (Format.plain.value, "Plain text"),
    (Format.markdown.value, "Markdown"),
]
VISIBILITY_OPTIONS = [
    (Visibility.public.value, "Public: listed on the front page"),
    (Visibility.unlisted.value, "Unlisted: only people with the link"),
]


@views.record_once
def _template_globals(state: BlueprintSetupState) -> None:
    # Globals rather than context: imported macros see globals only.
    state.app.jinja_env.globals.update(
        FORMAT_OPTIONS=FORMAT_OPTIONS,
        VISIBILITY_OPTIONS=VISIBILITY_OPTIONS,
        LANGUAGE_OPTIONS=[("", "Plain text"), *language_choices()],
        language_name=language_name,
        paste_version=logic.paste_version,
    )


def _viewer() -> User | None:
    return cast("User | None", current_user._get_current_object())


def _find(short_id: str) -> Paste:
    """A paste by its id; anyone with the link may see it (a malformed id is a plain 404)."""
    if not logic.SHORT_ID.fullmatch(short_id):
        abort(404)
    found = session.scalar(
        select(Paste).where(Paste.short_id == short_id).options(selectinload(Paste.owner))
    )
    if found is None:
        abort(404)
    return found


def _list_page(template: str, stmt: Select[Paste]) -> Any:
    """One page of *stmt* narrowed by ``?search=``; a bad search is the page with its
    reason beside the box (400), a bad ``?page=`` an error page."""
    query = Validation()
    page = page_number(query)
    search, condition = read_search(query, PASTES)
    error = query.error_for("search")
    per_page = max(settings(logic.Settings).pastes_per_page, 1)
    listing = paginate_pages(session, stmt.where(condition), page=page, per_page=per_page)
    html = render_template(template, listing=listing, search=search, search_error=error)
    return html, 400 if error else 200


@views.route("/")
def index() -> Any:
    """Everybody's public pastes, newest first, narrowed by ``?search=``."""
    stmt = (
        select(Paste)
        .where(Paste.visibility == Visibility.public)
        .order_by(Paste.id.desc())
        .options(selectinload(Paste.owner))
    )
    return _list_page("paste/index.html", stmt)


@views.route("/mine")
@login_required
def mine() -> Any:
    """Your pastes, public and unlisted, newest first, narrowed by ``?search=``."""
    user = require_user(User)
    stmt = select(Paste).where(Paste.owner_id == user.id).order_by(Paste.id.desc())
    return _list_page("paste/mine.html", stmt)


@views.route("/new", methods=["GET", "POST"])
@login_required
def new() -> Any:
    user = require_user(User)
    if request.method == "GET":
        return render_template("paste/new.html", valid=None)
    created = logic.create_paste(session, Validation.form("paste/new.html"), user)
    flash("Paste created. Share its link.", "success")
    return redirect(url_for("paste.show", short_id=created.short_id))


@views.route("/p/<short_id>")
def show(short_id: str) -> Any:
    """One paste: markdown rendered (and sanitized), code with numbered lines."""
    found = _find(short_id)
    viewer = _viewer()
    return render_template(
        "paste/paste.html", paste=found, is_owner=viewer is not None and viewer.id == found.owner_id
    )


def _own(short_id: str) -> Paste:
    """A paste its viewer owns, to change; anyone else gets 403 (the paste itself is no
    secret from someone who has its link)."""
    found = _find(short_id)
    if found.owner_id != require_user(User).id:
        abort(403)
    return found


@views.route("/p/<short_id>/edit", methods=["GET", "POST"])
@login_required
def edit(short_id: str) -> Any:
    """The owner changes a paste's title, text, format, language and visibility."""
    found = _own(short_id)
    if request.method == "GET":
        return render_template("paste/new.html", valid=None, paste=found)
    logic.update_paste(session, Validation.form("paste/new.html", paste=found), found)
    flash("Paste saved.", "success")
    return redirect(url_for("paste.show", short_id=found.short_id))


@views.route("/p/<short_id>/delete", methods=["GET", "POST"])
@login_required
def delete(short_id: str) -> Any:
    """The owner deletes a paste, after a page that asks to confirm."""
    found = _own(short_id)
    if request.method == "GET":
        return render_template("paste/delete.html", paste=found)
    logic.delete_paste(session, found)
    flash("Paste deleted.", "success")
    return redirect(url_for("paste.mine"))


@views.route("/p/<short_id>/raw")
def raw(short_id: str) -> Any:
    """The paste's text alone, as ``text/plain``."""
    found = _find(short_id)
    return Response(
        found.text,
        mimetype="text/plain",
        headers={"X-Content-Type-Options": "nosniff", "Content-Disposition": "inline"},
    )
