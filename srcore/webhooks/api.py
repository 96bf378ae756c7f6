"""The webhook API under ``/api/webhooks``: the public event catalog, and subscriptions
managed with a bearer token, whose user (or client) is the subscriber. Receiving events
needs their scopes read-only; changing a subscription, or being handed its secret, needs
them read-write."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from functools import partial
from typing import Annotated, Any, NotRequired, TypedDict

from flask import Blueprint, Response, abort, g, request, url_for
from sqlalchemy import select

from srcore.auth.scopes import Access, format_scopes
from srcore.db import session as db_session
from srcore.errors import error_response
from srcore.openapi import Accepted, Created, NoContent, accepted, created, no_content, operation
from srcore.pagination import CursorList, InvalidCursor, paginate_cursor, read_page
from srcore.service import state
from srcore.validation import Validation, ValidationFailed
from srcore.webhooks import manage
from srcore.webhooks.catalog import PING, CatalogEntry, event_catalog
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, Subscription
from srcore.webhooks.subscriptions import (
    Subscriber,
    SubscriptionInput,
    events_scopes,
    missing_scopes,
    read_overlap,
    read_subscription,
    secret_hint,
)

__all__ = [
    "AttemptJSON",
    "DeliveryJSON",
    "EventsJSON",
    "SubscriptionJSON",
    "api",
    "attempt_json",
    "delivery_json",
    "subscription_json",
]

api = Blueprint("srcore_webhooks_api", __name__, url_prefix="/api/webhooks")

MAX_LIMIT = 50


# -- the JSON shapes (TypedDicts: read by the type checker and the API description) -------


class SubscriptionJSON(TypedDict):
    """A webhook subscription. ``secret`` is there only in the answer that made it (a
    create or a rotation); afterwards ``secret_hint`` shows its end. ``resource`` limits
    it to events about one resource; ``scopes`` are those it was made with."""

    id: int
    url: str
    events: list[str]
    resource: str | None
    scopes: list[str]
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    secret_hint: str
    previous_secret_expires: datetime | None
    created: datetime
    updated: datetime
    secret: NotRequired[str]


class AttemptRequestJSON(TypedDict):
    """What an attempt sent (its signature left out)."""

    headers: dict[str, str]
    body: str


class AttemptResponseJSON(TypedDict):
    """What the receiver answered: no status when no answer came (see ``error``)."""

    status: int | None
    headers: dict[str, str]
    body: str


class AttemptJSON(TypedDict):
    """One HTTP request of a delivery."""

    id: int
    created: datetime
    request: AttemptRequestJSON
    response: AttemptResponseJSON
    duration_ms: int
    error: str | None


class DeliveryJSON(TypedDict):
    """One event sent to one subscription, with its attempts (newest first);
    ``next_attempt_at`` is set while it is pending."""

    id: int
    event: str
    message_id: str
    status: Annotated[str, DeliveryStatus]
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    created: datetime
    delivered_at: datetime | None
    attempts: list[AttemptJSON]


class EventsJSON(TypedDict):
    """The events a subscription can name."""

    results: list[CatalogEntry]


def _headers(text: str | None) -> dict[str, str]:
    """Logged headers (a JSON object of text), leaving out anything else."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    found = value.items() if isinstance(value, dict) else ()
    return {str(k): v for k, v in found if isinstance(v, str)}


def subscription_json(sub: Subscription, *, secret: str | None = None) -> SubscriptionJSON:
    """The API's shape of a subscription; *secret* is included only when just made."""
    body: SubscriptionJSON = {
        "id": sub.id,
        "url": sub.url,
        "events": sorted(sub.event_names),
        "resource": sub.resource,
        "scopes": sorted(sub.scopes.split()),
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "failing_since": sub.failing_since,
        "secret_hint": secret_hint(sub.secret),
        "previous_secret_expires": manage.overlap_until(sub),
        "created": sub.created,
        "updated": sub.updated,
    }
    if secret is not None:
        body["secret"] = secret
    return body


def attempt_json(attempt: Attempt) -> AttemptJSON:
    """One HTTP request of a delivery, as the delivery log shows it."""
    return {
        "id": attempt.id,
        "created": attempt.created,
        "request": {
            "headers": _headers(attempt.request_headers),
            "body": attempt.request_body,
        },
        "response": {
            "status": attempt.response_status,
            "headers": _headers(attempt.response_headers),
            "body": attempt.response_body,
        },
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
    }


def delivery_json(delivery: Delivery, event: str, attempts: list[Attempt]) -> DeliveryJSON:
    """One event sent to one subscription, with its attempts (newest first)."""
    pending = delivery.status == DeliveryStatus.pending
    return {
        "id": delivery.id,
        "event": event,
        "message_id": delivery.message_id,
        "status": delivery.status,
        "attempt_count": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at if pending else None,
        "last_status_code": delivery.last_status_code,
        "created": delivery.created,
        "delivered_at": delivery.delivered_at,
        "attempts": [attempt_json(a) for a in attempts],
    }


@api.errorhandler(InvalidCursor)
def _bad_cursor(exc: InvalidCursor) -> Response:
    valid = Validation(data={})
    valid.error("This cursor was not made for this listing.", "cursor")
    return ValidationFailed(valid).response()


@api.before_request
def _authenticate() -> Response | None:
    """Require a token holding a scope of this service (but for the catalog and CORS
    preflights); each view checks the scopes of the events at hand."""
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


def _check_scopes(events: Any, *, write: bool) -> None:
    """403 unless the token may receive every declared one of *events* or, to manage
    subscriptions to them (*write*), holds their scopes read-write."""
    from srcore.auth.api import _challenge

    manifest = state().manifest
    known = [name for name in sorted(events) if manifest.event(name) is not None]
    access: Access = "RW" if write else "RO"
    missing = missing_scopes(manifest, known, g.srcore_webhook_subscriber.scopes, access=access)
    if not missing:
        return
    wanted = format_scopes(missing)
    doing = "Managing webhooks of" if write else "Receiving"
    reason = f"{doing} these events needs the scope {wanted}, which this token does not hold."
    response = _challenge(403, reason, error="insufficient_scope", scope=wanted)
    response.set_data(json.dumps({"errors": [{"field": "events", "reason": reason}]}) + "\n")
    abort(response)


def _subscription(subscription_id: int, *, write: bool = True) -> Subscription:
    """The token's subscription (404 if not its own); 403 unless the token may receive
    its events or, to change it (*write*), holds their scopes read-write."""
    sub = manage.find(db_session, g.srcore_webhook_subscriber, subscription_id)
    _check_scopes(sub.event_names, write=write)
    return sub


def _read_new(valid: Validation) -> SubscriptionInput:
    """The body of a new subscription: url, events and an optional resource."""
    return read_subscription(valid, state().manifest)


def _read_change(valid: Validation) -> SubscriptionInput:
    """The body of a change: url, events and enabled, each only if sent."""
    if "resource" in valid:
        valid.error("A webhook's resource cannot change; make a new webhook.", "resource")
    return read_subscription(valid, state().manifest, partial=True)


_read_paging = partial(read_page, max_limit=MAX_LIMIT, default_limit=manage.DEFAULT_LIMIT)


def _paging() -> tuple[str | None, int]:
    query = Validation(data=request.args, source="form")
    cursor, limit = _read_paging(query)
    query.raise_if_invalid()
    return cursor, limit


@api.get("/events")
def events() -> EventsJSON:
    """The events a webhook can receive, each with the JSON Schema of its data (public
    documentation: no token needed)."""
    return {"results": event_catalog(state().manifest)}


@api.get("")
@operation(query=_read_paging, token=True)
def api_list() -> CursorList[SubscriptionJSON]:
    """The token's webhooks, oldest first."""
    cursor, limit = _paging()
    stmt = select(Subscription).where(manage.owned(g.srcore_webhook_subscriber))
    page = paginate_cursor(db_session, stmt, key=[Subscription.id], cursor=cursor, limit=limit)
    return {"results": [subscription_json(s) for s in page.items], "next": page.next_cursor}


@api.post("")
@operation(body=_read_new, token=True)
def api_create() -> Created[SubscriptionJSON]:
    """Subscribe a URL to events; the answer holds the signing secret, shown only here."""
    valid = Validation(request)
    valid.raise_if_invalid()
    values = _read_new(valid)
    valid.raise_if_invalid()
    _check_scopes(values.events or (), write=True)
    subscriber = g.srcore_webhook_subscriber
    sub, secret = manage.create_subscription(db_session, state(), subscriber, values, valid)
    location = url_for("srcore_webhooks_api.api_get", subscription_id=sub.id)
    return created(subscription_json(sub, secret=secret), location=location)


@api.get(manage.SUBSCRIPTION)
@operation(token=True)
def api_get(subscription_id: int) -> SubscriptionJSON:
    """One of the token's webhooks."""
    return subscription_json(manage.find(db_session, g.srcore_webhook_subscriber, subscription_id))


@api.patch(manage.SUBSCRIPTION)
@operation(body=_read_change, token=True)
def api_update(subscription_id: int) -> SubscriptionJSON:
    """Change a webhook's url, events or enabled (those sent); its resource is fixed."""
    sub = _subscription(subscription_id)
    valid = Validation(request)
    valid.raise_if_invalid()
    values = _read_change(valid)
    valid.raise_if_invalid()
    _check_scopes(values.events if values.events is not None else sub.event_names, write=True)
    subscriber = g.srcore_webhook_subscriber
    manage.update_subscription(db_session, state(), subscriber, sub, values, valid)
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
def api_rotate(subscription_id: int) -> SubscriptionJSON:
    """Give a webhook a new secret (in the answer); the old one keeps signing beside it
    for ``overlap`` seconds (a day unless sent), so receivers can switch over."""
    sub = _subscription(subscription_id)
    valid = Validation(request)
    if request.content_length in (None, 0) and not request.form:
        valid = Validation(data={})
    valid.raise_if_invalid()
    overlap = read_overlap(valid)
    valid.raise_if_invalid()
    assert overlap is not None  # read_overlap gives None only with an error recorded
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
