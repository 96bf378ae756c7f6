"""The webhook pages under ``/webhooks``, for the logged-in web user, who may receive every
event open to users (the service's ``can_receive`` decides which resources they can see). A
secret is shown once, on the answer to the request that made it (never stored by the
browser); afterwards only its end. That answer is to a POST, which a reload or Back sends
again: the forms that make a secret carry what tells a repeat from a new request."""

from __future__ import annotations

import json
import secrets
from typing import Any

from flask import Blueprint, flash, g, redirect, render_template, request, session, url_for
from werkzeug.exceptions import Conflict, HTTPException, TooManyRequests
from werkzeug.wrappers import Response

from srcore.auth.web import current_user, login_required
from srcore.errors import error_response
from srcore.service import state
from srcore.validation import Validation, ValidationFailed
from srcore.webhooks import subscriptions as subs
from srcore.webhooks.shapes import SubscriptionJSON

__all__ = ["pages"]

pages = Blueprint("srcore_webhooks", __name__, url_prefix="/webhooks")

FORM = "webhooks/form.html"
#: The session's record of the new-webhook forms that made a webhook: form token to its id.
MADE = "srcore_webhooks_made"
#: How many of those it keeps: enough for the forms a person has open at once.
MADE_KEPT = 8


@pages.before_request
@login_required
def _subscriber() -> Response | None:
    """Every page is for a logged-in, unsuspended user; what they post is a form."""
    if request.is_json:
        return error_response(400, "These pages take forms; the API is under /api/webhooks.")
    g.srcore_webhook_subscriber = subs.Subscriber(current_user.id, subs.events_scopes())
    return None


pages.context_processor(
    lambda: {
        "manifest": state().manifest,
        "pretty": _pretty,
        "subscription_version": subs.subscription_version,
    }
)


@pages.errorhandler(Conflict)
@pages.errorhandler(TooManyRequests)
def _refused(exc: HTTPException) -> Response:
    return _back(str(exc.description), "error")


def _pretty(value: object) -> str:
    """JSON (or JSON text) indented for reading; other text as it is."""
    try:
        value = json.loads(value) if isinstance(value, str) else value
    except ValueError:
        return str(value)
    return json.dumps(value, indent=2, ensure_ascii=False)


def _back(message: str, category: str = "success") -> Response:
    """Back to the webhook's page, with *message* shown there."""
    flash(message, category)
    sid = (request.view_args or {}).get("subscription_id")
    return redirect(url_for(".index") if sid is None else url_for(".detail", subscription_id=sid))


def _detail(sub: SubscriptionJSON, status: int = 200) -> tuple[str, int, dict[str, str]]:
    """*sub*'s page, and its delivery log at ``?cursor=`` (on a GET). A page showing the
    secret is kept in no cache: Back must not show it again."""
    log = subs.current.deliveries(sub["id"], first=request.method != "GET")
    headers = {"Cache-Control": "no-store"} if sub.get("secret") else {}
    return render_template("webhooks/detail.html", subscription=sub, log=log), status, headers


def _form_token() -> str:
    """The new-webhook form's token: the one sent (a form shown again with its errors
    keeps it), or a fresh one."""
    sent = request.form.get("form_token", "")
    return sent if 0 < len(sent) <= 64 else secrets.token_urlsafe(16)


def _made_by(token: str) -> int | None:
    """The webhook this form already made (it is being sent again), if any."""
    made = session.get(MADE)
    found = made.get(token) if isinstance(made, dict) else None
    return found if isinstance(found, int) else None


def _remember(token: str, subscription_id: int) -> None:
    made = session.get(MADE)
    kept = list(made.items())[-(MADE_KEPT - 1) :] if isinstance(made, dict) else []
    session[MADE] = dict([*kept, (token, subscription_id)])


@pages.route("")
def index() -> str:
    return render_template("webhooks/index.html", listing=subs.current.listing())


@pages.route("/new", methods=["GET", "POST"], endpoint="new")
@pages.route(f"{subs.SUBSCRIPTION}/edit", methods=["GET", "POST"], endpoint="edit")
def form(subscription_id: int | None = None) -> Any:
    """A new webhook's form (``?events=`` and ``?resource=`` fill it in), or an edit's."""
    sub = None if subscription_id is None else subs.current.show(subscription_id)
    token = _form_token()
    if request.method == "GET":  # never from a cache: Back must not bring an old token back
        page = render_template(FORM, subscription=sub, form_token=token)
        return page, {"Cache-Control": "no-store"}
    if sub is None:
        valid = Validation.form(FORM, subscription=sub, form_token=token)
    else:  # shown again as the webhook now is: its version is the one a resend replaces
        sid = sub["id"]
        valid = Validation.form(FORM, lambda: {"subscription": subs.current.show(sid)})
    if sub is None:
        made = _made_by(token)
        if made is not None:  # a reload of the page that showed the secret, or Back
            message = "This webhook was created already; its secret is not shown again."
            flash(f"{message} Rotate it to get a new one.", "info")
            return redirect(url_for(".detail", subscription_id=made), 303)
        created = subs.current.create(valid)
        _remember(token, created["id"])
        return _detail(created, status=201)
    subs.current.update(sub["id"], valid)
    return _back("Webhook saved.")


@pages.route(subs.SUBSCRIPTION)
def detail(subscription_id: int) -> tuple[str, int, dict[str, str]]:
    return _detail(subs.current.show(subscription_id))


@pages.post(f"{subs.SUBSCRIPTION}/rotate")
def rotate(subscription_id: int) -> Any:
    """Rotate, unless the secret the form was shown with (its hint) is gone already: the
    form was sent again (a reload of the new secret's page, or another tab)."""
    shown = request.form.get("secret_hint")
    if shown is not None and shown != subs.current.show(subscription_id)["secret_hint"]:
        return _back("The secret was rotated since that page was shown; not again now.", "info")
    try:
        return _detail(subs.current.rotate(subscription_id, Validation()))
    except ValidationFailed as exc:  # its message is every reason
        return _back(f"The secret was not rotated: {exc}", "error")


@pages.post(f"{subs.SUBSCRIPTION}/enable", endpoint="enable")
@pages.post(f"{subs.SUBSCRIPTION}/disable", endpoint="disable")
def enable(subscription_id: int) -> Response:
    enabled = request.endpoint == "srcore_webhooks.enable"
    subs.current.update(subscription_id, Validation(data={"enabled": enabled}), partial=True)
    if enabled:
        return _back("Webhook enabled.")
    return _back("Webhook disabled: no events are sent to it until you enable it.")


@pages.post(f"{subs.SUBSCRIPTION}/delete")
def delete(subscription_id: int) -> Response:
    subs.current.delete(subscription_id)
    flash("Webhook deleted.", "success")
    return redirect(url_for(".index"))


@pages.post(f"{subs.SUBSCRIPTION}/deliveries/{subs.DELIVERY}/redeliver")
def redeliver_page(subscription_id: int, delivery_id: int) -> Response:
    sent = subs.current.redeliver(subscription_id, delivery_id)
    return _back(f"Delivery {sent['message_id']} will be sent again shortly.")


@pages.post(f"{subs.SUBSCRIPTION}/ping")
def ping(subscription_id: int) -> Response:
    sent = subs.current.ping(subscription_id)
    return _back(f"A test event ({sent['message_id']}) will be sent shortly.")
