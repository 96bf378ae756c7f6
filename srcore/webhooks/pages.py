"""The webhook pages under ``/webhooks``, for the logged-in web user, who holds every
scope of the service's events (the service's ``can_receive`` decides what they can see). A secret is
shown once, on the answer to the request that made it; afterwards only its end is.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from srcore.auth.web import current_user, login_required
from srcore.db import session as db_session
from srcore.errors import error_response
from srcore.pagination import InvalidCursor, paginate_pages
from srcore.service import state
from srcore.validation import Invalid, Validation
from srcore.webhooks import manage
from srcore.webhooks.models import Subscription
from srcore.webhooks.subscriptions import (
    Subscriber,
    SubscriptionInput,
    event_scope,
    events_scopes,
    read_overlap,
    read_resource,
    read_subscription,
    secret_hint,
)

__all__ = ["pages"]

pages = Blueprint("srcore_webhooks", __name__, url_prefix="/webhooks")

PER_PAGE = 25
#: The rotation overlaps the web form offers, in seconds.
OVERLAP_CHOICES = (
    ("0", "End the old secret now"),
    ("3600", "Keep signing with the old secret for 1 hour"),
    ("86400", "Keep signing with the old secret for 24 hours"),
    ("604800", "Keep signing with the old secret for 7 days"),
)


@pages.before_request
@login_required
def _logged_in() -> None:
    """Every page is for a logged-in, unsuspended user; others are sent to log in."""


@pages.errorhandler(InvalidCursor)
def _bad_cursor(exc: InvalidCursor) -> Response:
    return error_response(400, "Invalid address: the cursor is not valid.")


def _subscriber() -> Subscriber:
    user = current_user._get_current_object()
    if user is None:  # login_required guards every caller
        abort(401)
    return Subscriber(user_id=user.id, client_id=None, scopes=events_scopes(state().manifest))


def _mine(subscription_id: int) -> Subscription:
    return manage.find(db_session, _subscriber(), subscription_id)


def _form(build: Callable[[], Mapping[str, Any]] | None = None) -> Validation:
    """The posted form (a JSON body is refused: these are pages); with *build*, a
    failed validation shows the subscription form again (see :func:`_form_context`)."""
    valid = Validation.form("webhooks/form.html", build) if build else Validation(request)
    if valid.source == "json":
        valid.error("Send the form.")
    return valid


def _detail_url(sub: Subscription, **args: Any) -> str:
    return url_for("srcore_webhooks.detail", subscription_id=sub.id, **args)


def _back(sub: Subscription, message: str, category: str = "success") -> Response:
    """Back to *sub*'s page, with *message* shown there."""
    flash(message, category)
    return redirect(_detail_url(sub))


def _form_context(
    sub: Subscription | None, *, chosen: list[str], resource: str | None
) -> dict[str, Any]:
    """The subscription form's context, but ``valid``."""
    manifest = state().manifest
    events = [
        {"name": e.name, "description": e.description, "scope": str(event_scope(manifest, e.name))}
        for e in manifest.user_events
    ]
    return {"subscription": sub, "events": events, "chosen": chosen, "resource": resource}


def _form_page(sub: Subscription | None, *, chosen: list[str], resource: str | None) -> str:
    """The empty (new) or current (edit) subscription form."""
    context = _form_context(sub, chosen=chosen, resource=resource)
    return render_template("webhooks/form.html", valid=None, **context)


def _detail_page(sub: Subscription, *, secret: str | None = None, status: int = 200) -> Any:
    cursor = None
    if request.method == "GET":
        query = Validation(data=request.args, source="form")
        cursor = query.optional("cursor", max_length=1024)
        if query.errors:
            return _bad_cursor(InvalidCursor())
    rows, next_cursor = manage.deliveries(db_session, sub, cursor, manage.DEFAULT_LIMIT)
    page = render_template(
        "webhooks/detail.html",
        subscription=sub,
        secret=secret,
        secret_hint=secret_hint(sub.secret),
        overlap_until=manage.overlap_until(sub),
        deliveries=rows,
        next_url=_detail_url(sub, cursor=next_cursor) if next_cursor else None,
        first_url=_detail_url(sub) if cursor else None,
        descriptions={e.name: e.description for e in state().manifest.events},
        overlap_choices=OVERLAP_CHOICES,
        pretty=_pretty,
    )
    return page, status


def _pretty(text: str | None) -> str:
    """A JSON body indented for reading; anything else as it is."""
    if not text:
        return ""
    try:
        return json.dumps(json.loads(text), indent=2, ensure_ascii=False)
    except ValueError:
        return text


@pages.route("")
def index() -> Any:
    query = Validation(data=request.args, source="form")
    page = query.optional("page", int, min=1, max=1_000_000, default=1) or 1
    if query.errors:
        return error_response(400, "Invalid address: page must be a whole number.")
    stmt = select(Subscription).where(manage.owned(_subscriber())).order_by(Subscription.id.desc())
    listing = paginate_pages(db_session, stmt, page=page, per_page=PER_PAGE)
    return render_template("webhooks/index.html", listing=listing, secret_hint=secret_hint)


@pages.route("/new", methods=["GET", "POST"])
def new() -> Any:
    st = state()
    if request.method == "GET":
        resource = None
        with contextlib.suppress(Invalid):
            resource = read_resource(request.args.get("resource", "")) or None
        chosen = request.args.getlist("events")
        return _form_page(None, chosen=chosen, resource=resource)
    values: SubscriptionInput | None = None

    def again() -> dict[str, Any]:
        posted = [e for e in request.form.getlist("events") if isinstance(e, str)]
        return _form_context(None, chosen=posted, resource=values.resource if values else None)

    valid = _form(again)
    valid.raise_if_invalid()
    values = read_subscription(valid, st.manifest)
    sub, secret = manage.create_subscription(db_session, st, _subscriber(), values, valid)
    return _detail_page(sub, secret=secret, status=201)


@pages.route(manage.SUBSCRIPTION)
def detail(subscription_id: int) -> Any:
    return _detail_page(_mine(subscription_id))


@pages.route(f"{manage.SUBSCRIPTION}/edit", methods=["GET", "POST"])
def edit(subscription_id: int) -> Any:
    st = state()
    sub = _mine(subscription_id)
    if request.method == "GET":
        return _form_page(sub, chosen=sorted(sub.event_names), resource=sub.resource)

    def again() -> dict[str, Any]:
        db_session.rollback()
        return _form_context(sub, chosen=request.form.getlist("events"), resource=sub.resource)

    valid = _form(again)
    valid.raise_if_invalid()
    values = read_subscription(valid, st.manifest)
    values.resource = None
    manage.update_subscription(db_session, st, _subscriber(), sub, values, valid)
    return _back(sub, "Webhook saved.")


@pages.route(f"{manage.SUBSCRIPTION}/rotate", methods=["POST"])
def rotate(subscription_id: int) -> Any:
    sub = _mine(subscription_id)
    valid = _form()
    overlap = read_overlap(valid) if not valid.errors else None
    if overlap is None or valid.errors:
        reasons = "; ".join(err.reason for err in valid.errors)
        return _back(sub, f"The secret was not rotated: {reasons}", "error")
    secret = manage.rotate_secret(db_session, sub, overlap)
    return _detail_page(sub, secret=secret)


@pages.route(f"{manage.SUBSCRIPTION}/enable", methods=["POST"])
def enable(subscription_id: int) -> Any:
    sub = _mine(subscription_id)
    manage.set_enabled(sub, True)
    db_session.commit()
    return _back(sub, "Webhook enabled.")


@pages.route(f"{manage.SUBSCRIPTION}/disable", methods=["POST"])
def disable(subscription_id: int) -> Any:
    sub = _mine(subscription_id)
    manage.set_enabled(sub, False)
    db_session.commit()
    return _back(sub, "Webhook disabled: no events are sent to it until you enable it.")


@pages.route(f"{manage.SUBSCRIPTION}/delete", methods=["POST"])
def delete(subscription_id: int) -> Any:
    db_session.delete(_mine(subscription_id))
    db_session.commit()
    flash("Webhook deleted.", "success")
    return redirect(url_for("srcore_webhooks.index"))


@pages.route(f"{manage.SUBSCRIPTION}/deliveries/{manage.DELIVERY}/redeliver", methods=["POST"])
def redeliver_page(subscription_id: int, delivery_id: int) -> Any:
    sub = _mine(subscription_id)
    if not sub.enabled:
        return _back(sub, "This webhook is disabled; enable it before redelivering.", "error")
    delivery = manage.redeliver(db_session, state(), sub, delivery_id)
    return _back(sub, f"Delivery {delivery.message_id} will be sent again shortly.")


@pages.route(f"{manage.SUBSCRIPTION}/ping", methods=["POST"])
def ping(subscription_id: int) -> Any:
    sub = _mine(subscription_id)
    if not sub.enabled:
        return _back(
            sub, "This webhook is disabled; enable it before sending a test event.", "error"
        )
    sent = manage.send_ping(db_session, state(), sub)
    if isinstance(sent, timedelta):
        wait = int(sent.total_seconds()) + 1
        return _back(sub, f"Wait {wait} seconds before sending another test event.", "error")
    return _back(sub, f"A test event ({sent.message_id}) will be sent shortly.")
