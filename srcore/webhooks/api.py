"""The webhook API under ``/api/webhooks``: the public event catalog, and subscriptions
managed with a bearer token, whose user (or client) is the subscriber. Receiving events
needs their scopes read-only; changing a subscription, or being handed its secret, needs
them read-write."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import Annotated, NotRequired, TypedDict

from flask import Blueprint, Response, abort, g, request, url_for
from sqlalchemy import select

from srcore.auth.api import _challenge, bearer_token
from srcore.auth.scopes import Scope, format_scopes
from srcore.auth.web import current_user
from srcore.db import session as db_session
from srcore.errors import error_response
from srcore.openapi import Accepted, Created, NoContent, accepted, created, no_content, operation
from srcore.pagination import CursorList, cursor_page, read_page
from srcore.service import state
from srcore.validation import Validation
from srcore.webhooks import subscriptions
from srcore.webhooks.catalog import CatalogEntry, event_catalog
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, Subscription
from srcore.webhooks.subscriptions import DEFAULT_LIMIT, DELIVERY, MAX_LIMIT, SUBSCRIPTION, find

__all__ = ["api"]

api = Blueprint("srcore_webhooks_api", __name__, url_prefix="/api/webhooks")


class SubscriptionJSON(TypedDict):
    """A webhook. ``secret`` is there only in the answer that made it (a create or a
    rotation), ``secret_hint`` always; ``scopes`` are those it was made with."""

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
    """One event sent to one webhook, with its attempts (newest first)."""

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


def _subscription_json(sub: Subscription, secret: str | None = None) -> SubscriptionJSON:
    body: SubscriptionJSON = {
        "id": sub.id,
        "url": sub.url,
        "events": sorted(sub.event_names),
        "resource": sub.resource,
        "scopes": sorted(sub.scopes.split()),
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "failing_since": sub.failing_since,
        "secret_hint": subscriptions.secret_hint(sub.secret),
        "previous_secret_expires": subscriptions.overlap_until(sub),
        "created": sub.created,
        "updated": sub.updated,
    }
    if secret is not None:
        body["secret"] = secret
    return body


def _headers(text: str | None) -> dict[str, str]:
    """Logged headers (a JSON object of text), leaving out anything else."""
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    found = value.items() if isinstance(value, dict) else ()
    return {str(k): v for k, v in found if isinstance(v, str)}


def _attempt_json(attempt: Attempt) -> AttemptJSON:
    return {
        "id": attempt.id,
        "created": attempt.created,
        "request": {"headers": _headers(attempt.request_headers), "body": attempt.request_body},
        "response": {
            "status": attempt.response_status,
            "headers": _headers(attempt.response_headers),
            "body": attempt.response_body,
        },
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
    }


def _delivery_json(delivery: Delivery, attempts: list[Attempt]) -> DeliveryJSON:
    pending = delivery.status == DeliveryStatus.pending
    return {
        "id": delivery.id,
        "event": delivery.outbox.event,
        "message_id": delivery.message_id,
        "status": delivery.status,
        "attempt_count": delivery.attempts,
        "next_attempt_at": delivery.next_attempt_at if pending else None,
        "last_status_code": delivery.last_status_code,
        "created": delivery.created,
        "delivered_at": delivery.delivered_at,
        "attempts": [_attempt_json(a) for a in attempts],
    }


@api.errorhandler(subscriptions.Refused)
def _refused(exc: subscriptions.Refused) -> Response:
    retry = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
    return error_response(exc.status, exc.reason, headers=retry)


@api.before_request
def _authenticate() -> Response | None:
    """Require a token holding a scope of this service (but for the catalog and CORS
    preflights); each view checks the scopes of the events at hand."""
    if request.endpoint == "srcore_webhooks_api.events" or request.method == "OPTIONS":
        return None
    st = state()
    token = bearer_token()
    if isinstance(token, Response):
        return token
    own = frozenset(s for s in token.scopes if s.service == st.service_id)
    if not own:
        wanted = format_scopes(subscriptions.events_scopes())
        reason = f"Webhooks of {st.manifest.name} need a token with one of: {wanted}."
        return _challenge(403, reason, error="insufficient_scope", scope=wanted)
    g.srcore_token = token
    g.pop("srcore_user", None)
    if token.subject is not None:
        # Loads (or copies from meta) the token's user; 401/403 if unknown or suspended.
        current_user._get_current_object()
    client_id = token.client_id if token.subject is None else None
    g.srcore_webhook_subscriber = subscriptions.Subscriber(token.subject, client_id, own)
    return None


def _check_scopes(events: Iterable[str], *, write: bool) -> None:
    """403 unless the token may receive the declared ones of *events* or, to manage
    subscriptions to them (*write*), holds their scopes read-write."""
    manifest = state().manifest
    declared = [e for e in map(manifest.event, events) if e is not None]
    needed = {Scope(manifest.id, event.scope, "RW" if write else "RO") for event in declared}
    held = g.srcore_webhook_subscriber.scopes
    missing = format_scopes(s for s in needed if not any(h.satisfies(s) for h in held))
    if not missing:
        return
    doing = "Managing webhooks of" if write else "Receiving"
    reason = f"{doing} these events needs the scope {missing}, which this token does not hold."
    response = _challenge(403, reason, error="insufficient_scope", scope=missing)
    response.set_data(json.dumps({"errors": [{"field": "events", "reason": reason}]}) + "\n")
    abort(response)


def _subscription(subscription_id: int, *, write: bool = True) -> Subscription:
    """The token's webhook (404 if not its own), if it may receive or (*write*) manage it."""
    sub = find(subscription_id)
    _check_scopes(sub.event_names, write=write)
    return sub


_read_page = partial(read_page, max_limit=MAX_LIMIT, default_limit=DEFAULT_LIMIT)
_read_change = partial(subscriptions.read_subscription, partial=True)


@api.get("/events")
def events() -> EventsJSON:
    """The events a webhook can receive, each with the JSON Schema of its data (public
    documentation: no token needed)."""
    return {"results": event_catalog(state().manifest)}


@api.get("")
@operation(query=_read_page, token=True)
def api_list() -> CursorList[SubscriptionJSON]:
    """The token's webhooks, newest first."""
    stmt = select(Subscription).where(subscriptions.owned())
    page = cursor_page(
        db_session, stmt, key=[Subscription.id], max_limit=MAX_LIMIT, default_limit=DEFAULT_LIMIT
    )
    return {"results": [_subscription_json(s) for s in page.items], "next": page.next_cursor}


@api.post("")
@operation(body=subscriptions.read_subscription, token=True)
def api_create() -> Created[SubscriptionJSON]:
    """Subscribe a URL to events; the answer holds the signing secret, shown only here."""
    valid = Validation()
    values = subscriptions.read_subscription(valid)
    valid.raise_if_invalid()
    _check_scopes(values.events or (), write=True)
    sub, secret = subscriptions.create_subscription(values, valid)
    location = url_for("srcore_webhooks_api.api_get", subscription_id=sub.id)
    return created(_subscription_json(sub, secret), location=location)


@api.get(SUBSCRIPTION)
@operation(token=True)
def api_get(subscription_id: int) -> SubscriptionJSON:
    """One of the token's webhooks."""
    return _subscription_json(find(subscription_id))


@api.patch(SUBSCRIPTION)
@operation(body=_read_change, token=True)
def api_update(subscription_id: int) -> SubscriptionJSON:
    """Change a webhook's url, events or enabled (those sent); its resource is fixed."""
    sub = _subscription(subscription_id)
    valid = Validation()
    values = _read_change(valid)
    valid.raise_if_invalid()
    _check_scopes(values.events or (), write=True)
    subscriptions.update_subscription(sub, values, valid)
    return _subscription_json(sub)


@api.delete(SUBSCRIPTION)
@operation(token=True)
def api_delete(subscription_id: int) -> NoContent:
    """Delete a webhook and its delivery log."""
    db_session.delete(_subscription(subscription_id))
    db_session.commit()
    return no_content()


@api.post(f"{SUBSCRIPTION}/rotate")
@operation(body=subscriptions.read_overlap, token=True)
def api_rotate(subscription_id: int) -> SubscriptionJSON:
    """Give a webhook a new secret (in the answer); the old one keeps signing beside it
    for ``overlap`` seconds (a day unless sent), so receivers can switch over."""
    sub = _subscription(subscription_id)
    valid = Validation() if request.content_length or request.form else Validation(data={})
    overlap = subscriptions.read_overlap(valid)
    valid.raise_if_invalid()
    return _subscription_json(sub, subscriptions.rotate_secret(sub, overlap))


@api.get(f"{SUBSCRIPTION}/deliveries")
@operation(query=_read_page, token=True)
def api_deliveries(subscription_id: int) -> CursorList[DeliveryJSON]:
    """A webhook's delivery log, newest first, with each delivery's attempts."""
    rows, next_cursor = subscriptions.deliveries(_subscription(subscription_id, write=False))
    return {"results": [_delivery_json(*row) for row in rows], "next": next_cursor}


@api.post(f"{SUBSCRIPTION}/deliveries/{DELIVERY}/redeliver")
@operation(token=True, errors={409: "The webhook is disabled."})
def api_redeliver(subscription_id: int, delivery_id: int) -> Accepted[DeliveryJSON]:
    """Send a delivery again, now, with the same ``webhook-id``."""
    delivery = subscriptions.redeliver(_subscription(subscription_id), delivery_id)
    return accepted(_delivery_json(delivery, []))


@api.post(f"{SUBSCRIPTION}/ping")
@operation(
    token=True,
    errors={
        409: "The webhook is disabled.",
        429: "A test event was sent moments ago (see the Retry-After header).",
    },
)
def api_ping(subscription_id: int) -> Accepted[DeliveryJSON]:
    """Send the webhook (and no other) a ``ping`` test event."""
    return accepted(_delivery_json(subscriptions.send_ping(_subscription(subscription_id)), []))
