"""The JSON shapes of the webhook API: a subscription, a delivery and its attempts.

Each serializer returns a TypedDict: the one declaration of its shape, read by the type
checker and by the API description (``/api/openapi.json``). The event catalog's shape,
:class:`~srcore.webhooks.catalog.CatalogEntry`, lives beside the code that builds it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, NotRequired, TypedDict

from srcore.webhooks.catalog import CatalogEntry
from srcore.webhooks.manage import overlap_until
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, Subscription
from srcore.webhooks.subscriptions import secret_hint

__all__ = [
    "AttemptJSON",
    "DeliveryJSON",
    "EventsJSON",
    "SubscriptionJSON",
    "attempt_json",
    "delivery_json",
    "subscription_json",
]


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
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


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
        "previous_secret_expires": overlap_until(sub),
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
