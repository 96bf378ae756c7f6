"""``/admin/users``: find accounts, look at one, suspend and unsuspend it, reset its second
factors; ``/admin/audit``: everyone's audit log, filtered. Every action is audited.

Only admins see these pages; everyone else logged in gets a plain 404, as if they did not
exist.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import date
from typing import Any, cast

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select, update
from werkzeug.wrappers import Response

from meta import audit, logic, totp
from meta.audit import Kind
from meta.mails import send_mail
from meta.models import AuditEntry, User
from srcore.auth.web import current_user, login_required
from srcore.db import UserType
from srcore.db import session as db
from srcore.pagination import paginate_pages
from srcore.routing import ID_MAX
from srcore.search import SearchSchema, choice, read_search
from srcore.validation import Validation

__all__ = ["admin"]

admin = Blueprint("admin", __name__, url_prefix="/admin")

PER_PAGE = 50
NOTICE_MAX = 2048
#: The ``role-changed`` entry of an admin's suspension.
SUSPENDED_ADMIN = "no longer an admin: suspended"
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
#: emails, ``state:`` for the account's state. ``deleted`` is a state of the services'
#: copies only: meta deletes an account's row, so it is not offered here.
USERS = SearchSchema(
    text=[User.username, User.email],
    keys={"state": choice(User.user_type, {t.value: t for t in UserType if t != UserType.deleted})},
)


@admin.route("/users")
@admin_required
def users() -> Any:
    """Every account, newest first, narrowed by ``?q=``; a bad query shows why (400)."""
    query = Validation(data=request.args, source="form")
    q, condition = read_search(query, USERS, "q")
    search_error = query.error_for("q")
    page = query.optional("page", int, min=1, max=_MAX_PAGE, default=1) or 1
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


def _locked_target(user_id: int) -> tuple[User, User]:
    """The account an action changes, held until the request commits, and the admin acting.

    Two admins acting on one account at once take turns: the second reads what the first
    committed (already suspended: said so, nothing written twice), and an account deleted
    meanwhile is a 404 rather than a write that matches no row. The hold is an UPDATE that
    changes nothing: PostgreSQL's row lock, and SQLite's one write lock, taken before the
    account is read again. The admin's own row is held too, both in the order of their
    ids, and read again: a right removed since the request began counts, and two admins
    suspending each other at once take turns (the second is no admin any more) instead of
    each holding the other's row and suspending every admin there is.
    """
    for held in sorted({user_id, _admin().id}):
        db.execute(
            update(User)
            .where(User.id == held)
            # Both unchanged: naming ``updated`` keeps its onupdate from stamping a row
            # this request may not change at all (the acting admin's).
            .values(user_type=User.user_type, updated=User.updated)
            .execution_options(synchronize_session=False)
        )
    target = db.get(User, user_id, populate_existing=True)
    if target is None:
        abort(404)
    me = db.get(User, _admin().id, populate_existing=True)
    if me is None or not me.is_admin:
        abort(404)
    return target, me


@admin.route("/users/<id:user_id>")
@admin_required
def user(user_id: int) -> Any:
    return render_template("meta/admin/user.html", valid=None, **_user_context(_target(user_id)))


def _user_context(target: User) -> dict[str, Any]:
    """The user page's context, but ``valid``."""
    from meta import passkeys

    return {
        "user": target,
        # An admin's own page offers no suspension: it would only be refused.
        "is_self": target.id == _admin().id,
        "totp_enabled": totp.factor_of(db, target.id) is not None,
        "passkey_count": passkeys.count_of(db, target.id),
    }


@admin.route("/users/<id:user_id>/suspend", methods=["POST"])
@admin_required
def suspend(user_id: int) -> Any:
    """Suspend an account with a notice it is shown. An admin's suspension also ends their
    admin right (unsuspended, they are an ordinary account until the operator names them
    again), and the log records that role change beside the suspension."""
    target, me = _locked_target(user_id)
    valid = Validation.form("meta/admin/user.html", lambda: _user_context(target))
    notice = valid.require("notice", max_length=NOTICE_MAX, label="The notice")
    valid.expect(target.id != me.id, "You cannot suspend yourself.")
    valid.expect(not target.is_suspended, "This account is already suspended.")
    valid.raise_if_invalid()
    assert notice is not None  # require() recorded an error otherwise
    was_admin = target.is_admin
    logic.suspend(db, target, notice)
    audit.record(db, Kind.account_suspended, target.id, actor_id=me.id, detail=notice)
    if was_admin:
        audit.record(db, Kind.role_changed, target.id, actor_id=me.id, detail=SUSPENDED_ADMIN)
    db.commit()
    flash(f"{target.username} is suspended.", "success")
    return redirect(url_for("admin.user", user_id=target.id))


@admin.route("/users/<id:user_id>/unsuspend", methods=["POST"])
@admin_required
def unsuspend(user_id: int) -> Response:
    target, me = _locked_target(user_id)
    if target.is_suspended:
        logic.unsuspend(db, target)
        audit.record(db, Kind.account_unsuspended, target.id, actor_id=me.id)
        db.commit()
        flash(f"{target.username} is no longer suspended.", "success")
    else:
        # Another admin's unsuspension went first (or the page was old): say so, rather
        # than come back to the page as if this one had done it.
        flash(f"{target.username} was not suspended: nothing changed.", "warning")
    return redirect(url_for("admin.user", user_id=target.id))


@admin.route("/users/<id:user_id>/factors/reset", methods=["POST"])
@admin_required
def reset_factors(user_id: int) -> Response:
    """Turn off the second factors of a locked-out account (who lost their device and codes);
    its owner is mailed, and the log says which admin did it."""
    from meta import passkeys

    target, me = _locked_target(user_id)
    had_totp = totp.remove_factors(db, target.id)
    keys = passkeys.remove_all(db, target.id)
    if had_totp or keys:
        removed = (["authenticator app"] if had_totp else []) + (
            [f"{keys} passkey{'s' if keys != 1 else ''}"] if keys else []
        )
        audit.record(db, Kind.factors_reset, target.id, actor_id=me.id, detail=", ".join(removed))
        db.commit()
        send_mail("factors-reset", target.email, user=target)
        flash(f"The second factors of {target.username} are reset.", "success")
    else:
        flash(f"{target.username} had no second factor left to reset: nothing changed.", "warning")
    return redirect(url_for("admin.user", user_id=target.id))


@admin.route("/audit")
@admin_required
def audit_log() -> Any:
    """Everyone's audit log, newest first, by account, kind and date range (UTC days)."""
    query = Validation(data=request.args, source="form")
    username = query.optional("user", max_length=64, label="Account")
    kind = query.optional("kind", max_length=32, label="Event")
    since = _day(query, "since")
    until = _day(query, "until")
    page = query.optional("page", int, min=1, max=_MAX_PAGE, default=1) or 1
    account_id: int | None = None
    if username:
        by_id = _ACCOUNT_ID.fullmatch(username.strip())
        if by_id is not None:
            # "#12": the entries of account 12, also once it is deleted (its username is
            # gone with it, and may be someone else's now); the log shows it as "#12".
            account_id = int(by_id.group(1))
            query.expect(account_id <= ID_MAX, "No account has this id.", field="user")
        else:
            who = db.scalar(select(User).where(User.username == username.strip().lower()))
            query.expect(
                who is not None,
                "No account has this username (a deleted one: give its #id).",
                field="user",
            )
            account_id = who.id if who is not None else None
    chosen: Kind | None = None
    if kind:
        chosen = next((k for k in Kind if k.value == kind), None)
        query.expect(chosen is not None, "Choose an event from the list.", field="kind")
    if since and until:
        query.expect(since <= until, "The range ends before it starts.", field="until")
    filters = audit.AuditFilter(user_id=account_id, kind=chosen, since=since, until=until)
    listing = None
    if query.ok:
        listing = paginate_pages(db, filters.statement(), page=page, per_page=PER_PAGE)
    names = _usernames(listing.items if listing else [])
    html = render_template(
        "meta/admin/audit.html",
        listing=listing,
        valid=query,
        kind_choices=[(k.value, k.label) for k in Kind],
        kind_label=audit.kind_label,
        names=names,
        # Only the filters: other parameters (url_for's own _scheme, _anchor...) are not
        # carried to the page links.
        args={k: v for k, v in request.args.items() if k in _AUDIT_FILTERS and v},
    )
    return html, 200 if query.ok else 400


_AUDIT_FILTERS = ("user", "kind", "since", "until")
#: An account named by its id in the audit log's filter: ``#12``.
_ACCOUNT_ID = re.compile(r"#([1-9][0-9]{0,18})")


def _day(query: Validation, field: str) -> date | None:
    raw = query.optional(field, max_length=10)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw)
    except ValueError:
        query.error("Give a date as YYYY-MM-DD.", field)
        return None


def _usernames(entries: list[AuditEntry]) -> dict[int, str]:
    """The usernames of the accounts and admins *entries* name (deleted ones are missing)."""
    ids = {e.user_id for e in entries if e.user_id} | {e.actor_id for e in entries if e.actor_id}
    if not ids:
        return {}
    rows = db.execute(select(User.id, User.username).where(User.id.in_(ids))).all()
    return {row.id: row.username for row in rows}
