"""The webhook pages under ``/webhooks``, for the logged-in web user, who may receive every
event open to users (the service's ``can_receive`` decides which resources they can see). A
secret is shown once, on the answer to the request that made it; afterwards only its end.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, url_for
from sqlalchemy import select
from werkzeug.wrappers import Response

from srcore.auth.scopes import Scope
from srcore.auth.web import current_user, login_required
from srcore.db import session as db_session
from srcore.errors import error_response
from srcore.pagination import page_number, paginate_pages
from srcore.service import state
from srcore.validation import Validation
from srcore.webhooks import subscriptions
from srcore.webhooks.models import Subscription
from srcore.webhooks.subscriptions import DELIVERY, SUBSCRIPTION, Refused, find

__all__ = ["pages"]

pages = Blueprint("srcore_webhooks", __name__, url_prefix="/webhooks")

FORM = "webhooks/form.html"


@pages.before_request
@login_required
def _subscriber() -> Response | None:
    """Every page is for a logged-in, unsuspended user; what they post is a form."""
    if request.is_json:
        return error_response(400, "These pages take forms; the API is under /api/webhooks.")
    scopes = subscriptions.events_scopes()
    g.srcore_webhook_subscriber = subscriptions.Subscriber(current_user.id, None, scopes)
    return None


@pages.context_processor
def _template_helpers() -> dict[str, Any]:
    """What the webhook templates call besides srcore's helpers."""
    return {
        "secret_hint": subscriptions.secret_hint,
        "overlap_until": subscriptions.overlap_until,
        "pretty": _pretty,
    }


@pages.errorhandler(Refused)
def _refused(exc: Refused) -> Response:
    return _back((request.view_args or {})["subscription_id"], exc.reason, "error")


def _pretty(text: str | None) -> str:
    """A JSON body indented for reading; anything else as it is."""
    try:
        return json.dumps(json.loads(text or ""), indent=2, ensure_ascii=False)
    except ValueError:
        return text or ""


def _back(subscription_id: int, message: str, category: str = "success") -> Response:
    """Back to the webhook's page, with *message* shown there."""
    flash(message, category)
    return redirect(url_for("srcore_webhooks.detail", subscription_id=subscription_id))


def _form(sub: Subscription | None, chosen: list[str], **context: Any) -> dict[str, Any]:
    """The subscription form's context: every event open to users, and its scope."""
    manifest = state().manifest
    events = [(e, Scope(manifest.id, e.scope, "RO")) for e in manifest.user_events]
    return {"subscription": sub, "events": events, "chosen": chosen, **context}


def _detail(sub: Subscription, secret: str | None = None, status: int = 200) -> tuple[str, int]:
    """*sub*'s page, its delivery log at ``?cursor=`` (on a GET), and a *secret* just made."""
    rows, next_cursor = subscriptions.deliveries(sub, first_page=request.method != "GET")
    descriptions = {event.name: event.description for event in state().manifest.events}
    page = render_template(
        "webhooks/detail.html",
        subscription=sub,
        secret=secret,
        deliveries=rows,
        next_cursor=next_cursor,
        descriptions=descriptions,
    )
    return page, status


@pages.route("")
def index() -> str:
    stmt = select(Subscription).where(subscriptions.owned()).order_by(Subscription.id.desc())
    listing = paginate_pages(db_session, stmt, page=page_number(), per_page=25)
    return render_template("webhooks/index.html", listing=listing)


@pages.route("/new", methods=["GET", "POST"], endpoint="new")
@pages.route(f"{SUBSCRIPTION}/edit", methods=["GET", "POST"], endpoint="edit")
def form(subscription_id: int | None = None) -> Any:
    """A new webhook's form (``?events=`` and ``?resource=`` fill it in), or an edit's."""
    sub = None if subscription_id is None else find(subscription_id)
    if request.method == "GET":
        chosen = request.args.getlist("events") if sub is None else sorted(sub.event_names)
        resource = subscriptions.read_resource(Validation())
        return render_template(FORM, **_form(sub, chosen, resource=resource))
    valid = Validation.form(FORM, lambda: _form(sub, request.form.getlist("events")))
    values = subscriptions.read_subscription(valid)
    if sub is not None:
        subscriptions.update_subscription(sub, values, valid)
        return _back(sub.id, "Webhook saved.")
    sub, secret = subscriptions.create_subscription(values, valid)
    return _detail(sub, secret, status=201)


@pages.route(SUBSCRIPTION)
def detail(subscription_id: int) -> tuple[str, int]:
    return _detail(find(subscription_id))


@pages.post(f"{SUBSCRIPTION}/rotate")
def rotate(subscription_id: int) -> Any:
    sub = find(subscription_id)
    valid = Validation()
    overlap = subscriptions.read_overlap(valid)
    if not valid.ok:
        reasons = "; ".join(err.reason for err in valid.errors)
        return _back(subscription_id, f"The secret was not rotated: {reasons}", "error")
    return _detail(sub, subscriptions.rotate_secret(sub, overlap))


@pages.post(f"{SUBSCRIPTION}/enable")
def enable(subscription_id: int) -> Response:
    subscriptions.set_enabled(find(subscription_id), True)
    return _back(subscription_id, "Webhook enabled.")


@pages.post(f"{SUBSCRIPTION}/disable")
def disable(subscription_id: int) -> Response:
    subscriptions.set_enabled(find(subscription_id), False)
    return _back(subscription_id, "Webhook disabled: no events are sent to it until you enable it.")


@pages.post(f"{SUBSCRIPTION}/delete")
def delete(subscription_id: int) -> Response:
    db_session.delete(find(subscription_id))
    db_session.commit()
    flash("Webhook deleted.", "success")
    return redirect(url_for("srcore_webhooks.index"))


@pages.post(f"{SUBSCRIPTION}/deliveries/{DELIVERY}/redeliver")
def redeliver_page(subscription_id: int, delivery_id: int) -> Response:
    delivery = subscriptions.redeliver(find(subscription_id), delivery_id)
    return _back(subscription_id, f"Delivery {delivery.message_id} will be sent again shortly.")


@pages.post(f"{SUBSCRIPTION}/ping")
def ping(subscription_id: int) -> Response:
    sent = subscriptions.send_ping(find(subscription_id))
    return _back(subscription_id, f"A test event ({sent.message_id}) will be sent shortly.")
