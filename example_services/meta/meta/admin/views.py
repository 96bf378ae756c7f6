"""``/admin/users``: find accounts, look at one, suspend and unsuspend it.

Only admins see these pages; everyone else logged in gets a plain 404, as if they did not
exist.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, cast

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from meta import logic
from meta.models import User
from srcore.auth.web import current_user, login_required
from srcore.db import UserType
from srcore.db import session as db
from srcore.pagination import paginate_pages
from srcore.search import SearchSchema, choice, read_search
from srcore.validation import Validation

__all__ = ["admin"]

admin = Blueprint("admin", __name__, url_prefix="/admin")

PER_PAGE = 50
NOTICE_MAX = 2048
_MAX_PAGE = 1_000_000


def _admin() -> User:
    user = cast("User | None", current_user._get_current_object())
    if user is None or not user.is_admin:
        abort(404)
    return user


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _admin()
        return view(*args, **kwargs)

    return login_required(wrapper)


#: What ``/admin/users?q=`` searches, in srcore's search grammar: words over usernames and
#: emails, ``state:`` for the account's state.
USERS = SearchSchema(
    text=[User.username, User.email],
    keys={"state": choice(User.user_type, UserType)},
)


@admin.route("/users")
@admin_required
def users() -> Any:
    """Every account, newest first, narrowed by ``?q=``; a bad query shows why (400)."""
    query = Validation(data=request.args, source="form")
    q, condition = read_search(query, USERS, "q")
    search_error = query.error_for("q")
    page = query.integer("page", min=1, max=_MAX_PAGE, default=1) or 1
    if any(err.field != "q" for err in query.errors):
        abort(400)
    stmt = select(User).where(condition).order_by(User.id.desc())
    listing = paginate_pages(db, stmt, page=page, per_page=PER_PAGE)
    html = render_template("meta/admin/users.html", listing=listing, q=q, search_error=search_error)
    return html, 400 if search_error else 200


def _target(user_id: int) -> User:
    user = db.get(User, user_id)
    if user is None:
        abort(404)
    return user


@admin.route("/users/<id:user_id>")
@admin_required
def user(user_id: int) -> Any:
    return render_template("meta/admin/user.html", user=_target(user_id), valid=None)


@admin.route("/users/<id:user_id>/suspend", methods=["POST"])
@admin_required
def suspend(user_id: int) -> Any:
    me = _admin()
    target = _target(user_id)
    valid = Validation(request)
    notice = valid.require("notice", max_length=NOTICE_MAX, label="The notice")
    valid.expect(target.id != me.id, "You cannot suspend yourself.")
    valid.expect(not target.is_suspended, "This account is already suspended.")
    if not valid.ok or notice is None:
        return render_template("meta/admin/user.html", user=target, valid=valid), 400
    logic.suspend(db, target, notice)
    db.commit()
    flash(f"{target.username} is suspended.", "success")
    return redirect(url_for("admin.user", user_id=target.id))


@admin.route("/users/<id:user_id>/unsuspend", methods=["POST"])
@admin_required
def unsuspend(user_id: int) -> Response:
    target = _target(user_id)
    if target.is_suspended:
        logic.unsuspend(db, target)
        db.commit()
        flash(f"{target.username} is no longer suspended.", "success")
    return redirect(url_for("admin.user", user_id=target.id))
