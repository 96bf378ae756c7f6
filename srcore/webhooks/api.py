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
from typing import Any

from flask import Blueprint, Response, abort, g, request, url_for
from sqlalchemy import select

from srcore.app import state
from srcore.auth.scopes import Access, format_scopes
from srcore.db import session as db_session
from srcore.errors import error_response
from srcore.pagination import InvalidCursor, paginate_cursor
from srcore.validation import Invalid, Validation, parse_json_object
from srcore.webhooks import manage
from srcore.webhooks.catalog import PING, event_catalog
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, Subscription
from srcore.webhooks.subscriptions import (
    Subscriber,
    events_scopes,
    missing_scopes,
    read_overlap,
    read_subscription,
    secret_hint,
)

__all__ = ["api", "attempt_json", "delivery_json", "subscription_json"]

api = Blueprint("srcore_webhooks_api", __name__, url_prefix="/api/webhooks")

MAX_LIMIT = 50


# -- JSON shapes ---------------------------------------------------------------------------


def _json_object(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def subscription_json(sub: Subscription, *, secret: str | None = None) -> dict[str, Any]:
    """The API's shape of a subscription; *secret* is included only when just made."""
    body: dict[str, Any] = {
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


def attempt_json(attempt: Attempt) -> dict[str, Any]:
    """One HTTP request of a delivery, as the delivery log shows it."""
    return {
        "id": attempt.id,
        "created": attempt.created,
        "request": {
            "headers": _json_object(attempt.request_headers),
            "body": attempt.request_body,
        },
        "response": {
            "status": attempt.response_status,
            "headers": _json_object(attempt.response_headers),
            "body": attempt.response_body,
        },
        "duration_ms": attempt.duration_ms,
        "error": attempt.error,
    }


def delivery_json(delivery: Delivery, event: str, attempts: list[Attempt]) -> dict[str, Any]:
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


def _body() -> tuple[Validation, object, bool]:
    """The request's fields, the raw ``events`` value and whether it was sent."""
    valid = Validation(request)
    if not valid.ok:
        return valid, None, False
    if valid.source == "json":
        try:
            data = parse_json_object(request.get_data(cache=True))
        except Invalid:  # already recorded by Validation
            return valid, None, False
        return valid, data.get("events"), "events" in data
    return valid, request.form.getlist("events"), "events" in request.form


def _paging() -> tuple[str | None, int]:
    query = Validation(data=request.args, source="form")
    cursor = query.optional("cursor", max_length=1024)
    limit = query.optional("limit", int, min=1, max=MAX_LIMIT, default=manage.DEFAULT_LIMIT)
    if not query.ok or limit is None:
        abort(query.response())
    return cursor, limit


@api.get("/events")
def events() -> Any:
    return {"results": event_catalog(state().manifest)}


@api.get("")
def api_list() -> Any:
    cursor, limit = _paging()
    stmt = select(Subscription).where(manage.owned(_subscriber()))
    page = paginate_cursor(db_session, stmt, key=[Subscription.id], cursor=cursor, limit=limit)
    return {"results": [subscription_json(s) for s in page.items], "next": page.next_cursor}


@api.post("")
def api_create() -> Any:
    st = state()
    valid, raw_events, _given = _body()
    values = read_subscription(valid, raw_events, st.manifest) if valid.ok else None
    if values is None or not valid.ok:
        return valid.response()
    _check_scopes(values.events or (), write=True)
    made = manage.create_subscription(db_session, st, _subscriber(), values, valid)
    if made is None:
        return valid.response()
    sub, secret = made
    location = url_for("srcore_webhooks_api.api_get", subscription_id=sub.id)
    return subscription_json(sub, secret=secret), 201, {"Location": location}


@api.get(manage.SUBSCRIPTION)
def api_get(subscription_id: int) -> Any:
    return subscription_json(_own(subscription_id))


@api.patch(manage.SUBSCRIPTION)
def api_update(subscription_id: int) -> Any:
    st = state()
    sub = _subscription(subscription_id)
    valid, raw_events, given = _body()
    if not valid.ok:
        return valid.response()
    if "resource" in valid:
        valid.error("A webhook's resource cannot change; make a new webhook.", "resource")
    values = read_subscription(valid, raw_events, st.manifest, partial=True, events_given=given)
    if not valid.ok:
        return valid.response()
    _check_scopes(values.events if values.events is not None else sub.event_names, write=True)
    if not manage.update_subscription(db_session, st, _subscriber(), sub, values, valid):
        return valid.response()
    return subscription_json(sub)


@api.delete(manage.SUBSCRIPTION)
def api_delete(subscription_id: int) -> Any:
    db_session.delete(_subscription(subscription_id))
    db_session.commit()
    return "", 204


@api.post(f"{manage.SUBSCRIPTION}/rotate")
def api_rotate(subscription_id: int) -> Any:
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
def api_deliveries(subscription_id: int) -> Any:
    sub = _subscription(subscription_id, write=False)
    cursor, limit = _paging()
    rows, next_cursor = manage.deliveries(db_session, sub, cursor, limit)
    return {"results": [delivery_json(*row) for row in rows], "next": next_cursor}


@api.post(f"{manage.SUBSCRIPTION}/deliveries/{manage.DELIVERY}/redeliver")
def api_redeliver(subscription_id: int, delivery_id: int) -> Any:
    sub = _subscription(subscription_id)
    if not sub.enabled:
        return error_response(409, "This webhook is disabled; enable it before redelivering.")
    delivery = manage.redeliver(db_session, state(), sub, delivery_id)
    return delivery_json(delivery, delivery.outbox.event, []), 202


@api.post(f"{manage.SUBSCRIPTION}/ping")
def api_ping(subscription_id: int) -> Any:
    sub = _subscription(subscription_id)
    if not sub.enabled:
        return error_response(409, "This webhook is disabled; enable it before testing it.")
    sent = manage.send_ping(db_session, state(), sub)
    if isinstance(sent, timedelta):
        wait = int(sent.total_seconds()) + 1
        reason = f"A test event was sent moments ago; wait {wait} seconds before sending another."
        return error_response(429, reason, headers={"Retry-After": str(wait)})
    return delivery_json(sent, PING, []), 202
