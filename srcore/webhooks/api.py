"""The webhook API under ``/api/webhooks``: the event catalog, and subscriptions managed
with a bearer token.

The subscriber is the token's user or, for a client-credentials token, its client. It may
subscribe only to events whose declared scope it holds, and to change a subscription (or
be handed its new secret, or send it a test event) it must hold their scopes read-write.
The catalog is public documentation: it needs no token.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import partial
from typing import Any

from flask import Blueprint, Response, abort, g, request, url_for
from sqlalchemy import select

from srcore.auth.scopes import Access, format_scopes
from srcore.db import session as db_session
from srcore.errors import error_response
from srcore.openapi import Accepted, Created, NoContent, accepted, created, no_content, operation
from srcore.pagination import CursorList, InvalidCursor, paginate_cursor, read_page
from srcore.service import state
from srcore.validation import Validation
from srcore.webhooks import manage
from srcore.webhooks.catalog import PING, event_catalog
from srcore.webhooks.models import Subscription
from srcore.webhooks.shapes import (
    DeliveryJSON,
    EventsJSON,
    SubscriptionJSON,
    attempt_json,
    delivery_json,
    subscription_json,
)
from srcore.webhooks.subscriptions import (
    Subscriber,
    SubscriptionInput,
    events_scopes,
    missing_scopes,
    read_overlap,
    read_subscription,
)

__all__ = ["api", "attempt_json", "delivery_json", "subscription_json"]

api = Blueprint("srcore_webhooks_api", __name__, url_prefix="/api/webhooks")

MAX_LIMIT = 50


# -- helpers -------------------------------------------------------------------------------


@api.errorhandler(InvalidCursor)
def _bad_cursor(exc: InvalidCursor) -> Response:
    valid = Validation(data={})
    valid.error("This cursor was not made for this listing.", "cursor")
    return valid.response()


@api.before_request
def _authenticate() -> Response | None:
    """Require a bearer token holding at least one scope of this service (but for the
    catalog, and CORS preflights).

    Which scopes are enough depends on the events asked for, so each view checks those;
    the subscriber (``g.srcore_webhook_subscriber``) is the token's user, or its client.
    """
    from srcore.auth.api import _challenge, bearer_token

    if request.endpoint == "srcore_webhooks_api.events" or request.method == "OPTIONS":
        return None
    st = state()
    token = bearer_token()
    if isinstance(token, Response):
        return token
    own = frozenset(s for s in token.scopes if s.service == st.service_id)
    if not own:
        wanted = format_scopes(events_scopes(st.manifest))
        reason = f"Webhooks of {st.manifest.name} need a token with one of: {wanted}."
        return _challenge(403, reason, error="insufficient_scope", scope=wanted)
    g.srcore_token = token
    g.pop("srcore_user", None)
    if token.subject is not None:
        from srcore.auth.web import current_user

        # Loads (or copies from meta) the token's user; 401/403 if unknown or suspended.
        current_user._get_current_object()
    g.srcore_webhook_subscriber = Subscriber(
        user_id=token.subject,
        client_id=token.client_id if token.subject is None else None,
        scopes=own,
    )
    return None


def _subscriber() -> Subscriber:
    subscriber: Subscriber = g.srcore_webhook_subscriber
    return subscriber


def _check_scopes(events: Any, *, write: bool) -> None:
    """403 unless the token may receive every declared one of *events* or, to manage
    subscriptions to them (*write*), holds their scopes read-write."""
    from srcore.auth.api import _challenge

    manifest = state().manifest
    known = [name for name in sorted(events) if manifest.event(name) is not None]
    access: Access = "RW" if write else "RO"
    missing = missing_scopes(manifest, known, _subscriber().scopes, access=access)
    if not missing:
        return
    wanted = format_scopes(missing)
    doing = "Managing webhooks of" if write else "Receiving"
    reason = f"{doing} these events needs the scope {wanted}, which this token does not hold."
    response = _challenge(403, reason, error="insufficient_scope", scope=wanted)
    response.set_data(json.dumps({"errors": [{"field": "events", "reason": reason}]}) + "\n")
    abort(response)


def _own(subscription_id: int) -> Subscription:
    return manage.find(db_session, _subscriber(), subscription_id)


def _subscription(subscription_id: int, *, write: bool = True) -> Subscription:
    """The token's subscription *subscription_id* (404 if not its own); 403 unless the
    token may receive its events (to read its log) or, to change it (*write*: update,
    rotate, redeliver, ping, delete), holds their scopes read-write: a read-only token
    must not re-point a subscription or be handed its new secret."""
    sub = _own(subscription_id)
    _check_scopes(sub.event_names, write=write)
    return sub


def _raw_events(valid: Validation) -> tuple[object, bool]:
    """The submitted ``events`` (a JSON array, or a form's values) and whether it was sent."""
    given = "events" in valid
    return valid.optional("events", list[str], max_length=256), given


def _read_new(valid: Validation) -> SubscriptionInput:
    """The body of a new subscription: url, events and an optional resource."""
    raw_events, _given = _raw_events(valid)
    return read_subscription(valid, raw_events, state().manifest)


def _read_change(valid: Validation) -> SubscriptionInput:
    """The body of a change: url, events and enabled, each only if sent."""
    if "resource" in valid:
        valid.error("A webhook's resource cannot change; make a new webhook.", "resource")
    raw_events, given = _raw_events(valid)
    return read_subscription(valid, raw_events, state().manifest, partial=True, events_given=given)


_read_paging = partial(read_page, max_limit=MAX_LIMIT, default_limit=manage.DEFAULT_LIMIT)


def _paging() -> tuple[str | None, int]:
    query = Validation(data=request.args, source="form")
    cursor, limit = _read_paging(query)
    if not query.ok:
        abort(query.response())
    return cursor, limit


@api.get("/events")
def events() -> EventsJSON:
    """The events a webhook can receive, each with the JSON Schema of its data.

    Public documentation: no token needed.
    """
    return {"results": event_catalog(state().manifest)}


@api.get("")
@operation(query=_read_paging, token=True)
def api_list() -> CursorList[SubscriptionJSON]:
    """The token's webhooks, oldest first."""
    cursor, limit = _paging()
    stmt = select(Subscription).where(manage.owned(_subscriber()))
    page = paginate_cursor(db_session, stmt, key=[Subscription.id], cursor=cursor, limit=limit)
    return {"results": [subscription_json(s) for s in page.items], "next": page.next_cursor}


@api.post("")
@operation(body=_read_new, token=True)
def api_create() -> Created[SubscriptionJSON] | Response:
    """Subscribe a URL to events; the answer holds the signing secret, shown only here."""
    st = state()
    valid = Validation(request)
    values = _read_new(valid) if valid.ok else None
    if values is None or not valid.ok:
        return valid.response()
    _check_scopes(values.events or (), write=True)
    made = manage.create_subscription(db_session, st, _subscriber(), values, valid)
    if made is None:
        return valid.response()
    sub, secret = made
    location = url_for("srcore_webhooks_api.api_get", subscription_id=sub.id)
    return created(subscription_json(sub, secret=secret), location=location)


@api.get(manage.SUBSCRIPTION)
@operation(token=True)
def api_get(subscription_id: int) -> SubscriptionJSON:
    """One of the token's webhooks."""
    return subscription_json(_own(subscription_id))


@api.patch(manage.SUBSCRIPTION)
@operation(body=_read_change, token=True)
def api_update(subscription_id: int) -> SubscriptionJSON | Response:
    """Change a webhook's url, events or enabled (those sent); its resource is fixed."""
    st = state()
    sub = _subscription(subscription_id)
    valid = Validation(request)
    values = _read_change(valid) if valid.ok else None
    if values is None or not valid.ok:
        return valid.response()
    _check_scopes(values.events if values.events is not None else sub.event_names, write=True)
    if not manage.update_subscription(db_session, st, _subscriber(), sub, values, valid):
        return valid.response()
    return subscription_json(sub)


@api.delete(manage.SUBSCRIPTION)
@operation(token=True)
def api_delete(subscription_id: int) -> NoContent:
    """Delete a webhook and its delivery log."""
    db_session.delete(_subscription(subscription_id))
    db_session.commit()
    return no_content()


@api.post(f"{manage.SUBSCRIPTION}/rotate")
@operation(body=read_overlap, token=True)
def api_rotate(subscription_id: int) -> SubscriptionJSON | Response:
    """Give a webhook a new secret (in the answer); the old one keeps signing beside it
    for ``overlap`` seconds (a day unless sent), so receivers can switch over."""
    sub = _subscription(subscription_id)
    valid = Validation(request)
    if request.content_length in (None, 0) and not request.form:
        valid = Validation(data={})
    overlap = read_overlap(valid) if valid.ok else None
    if overlap is None or not valid.ok:
        return valid.response()
    secret = manage.rotate_secret(db_session, sub, overlap)
    return subscription_json(sub, secret=secret)


@api.get(f"{manage.SUBSCRIPTION}/deliveries")
@operation(query=_read_paging, token=True)
def api_deliveries(subscription_id: int) -> CursorList[DeliveryJSON]:
    """A webhook's delivery log, newest first, with each delivery's attempts."""
    sub = _subscription(subscription_id, write=False)
    cursor, limit = _paging()
    rows, next_cursor = manage.deliveries(db_session, sub, cursor, limit)
    return {"results": [delivery_json(*row) for row in rows], "next": next_cursor}


@api.post(f"{manage.SUBSCRIPTION}/deliveries/{manage.DELIVERY}/redeliver")
@operation(token=True, errors={409: "The webhook is disabled."})
def api_redeliver(subscription_id: int, delivery_id: int) -> Accepted[DeliveryJSON] | Response:
    """Send a delivery again, now, with the same ``webhook-id``."""
    sub = _subscription(subscription_id)
    if not sub.enabled:
        return error_response(409, "This webhook is disabled; enable it before redelivering.")
    delivery = manage.redeliver(db_session, state(), sub, delivery_id)
    return accepted(delivery_json(delivery, delivery.outbox.event, []))


@api.post(f"{manage.SUBSCRIPTION}/ping")
@operation(
    token=True,
    errors={
        409: "The webhook is disabled.",
        429: "A test event was sent moments ago (see the Retry-After header).",
    },
)
def api_ping(subscription_id: int) -> Accepted[DeliveryJSON] | Response:
    """Send the webhook (and no other) a ``ping`` test event."""
    sub = _subscription(subscription_id)
    if not sub.enabled:
        return error_response(409, "This webhook is disabled; enable it before testing it.")
    sent = manage.send_ping(db_session, state(), sub)
    if isinstance(sent, timedelta):
        wait = int(sent.total_seconds()) + 1
        reason = f"A test event was sent moments ago; wait {wait} seconds before sending another."
        return error_response(429, reason, headers={"Retry-After": str(wait)})
    return accepted(delivery_json(sent, PING, []))
