"""The JSON shapes of a subscription and of a delivery with its attempts: what the API
answers (its OpenAPI description is read from these TypedDicts) and the pages render."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, NotRequired, TypedDict

from srcore.db import utcnow
from srcore.webhooks.models import Attempt, Delivery, DeliveryStatus, Subscription

__all__ = ["DeliveryJSON", "SubscriptionJSON", "delivery_json", "subscription_json"]


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
    """One event sent to one webhook, with its newest attempts (newest first; ``attempts_logged``
    says how many the log holds, redeliveries by hand included)."""

    id: int
    event: str
    message_id: str
    status: Annotated[str, DeliveryStatus]
    attempt_count: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    created: datetime
    delivered_at: datetime | None
    attempts_logged: int
    attempts: list[AttemptJSON]


def subscription_json(sub: Subscription, *, secret: bool = False) -> SubscriptionJSON:
    expires = sub.previous_secret_expires
    overlap = sub.previous_secret is not None and expires is not None and expires > utcnow()
    body: SubscriptionJSON = {
        "id": sub.id,
        "url": sub.url,
        "events": sorted(sub.event_names),
        "resource": sub.resource,
        "scopes": sorted(sub.scopes.split()),
        "enabled": sub.enabled,
        "disabled_reason": sub.disabled_reason,
        "failing_since": sub.failing_since,
        # The end of the secret, for recognising it without revealing it.
        "secret_hint": "whsec_…" + sub.secret[-4:],
        "previous_secret_expires": expires if overlap else None,
        "created": sub.created,
        "updated": sub.updated,
    }
    if secret:
        body["secret"] = sub.secret
    return body


def delivery_json(
    delivery: Delivery, attempts: Sequence[Attempt] = (), logged: int = 0
) -> DeliveryJSON:
    # The logged headers are JSON objects of text, as srcore.webhooks.delivery writes them.
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
        "attempts_logged": logged,
        "attempts": [
            {
                "id": a.id,
                "created": a.created,
                "request": {"headers": json.loads(a.request_headers), "body": a.request_body},
                "response": {
                    "status": a.response_status,
                    "headers": json.loads(a.response_headers),
                    "body": a.response_body,
                },
                "duration_ms": a.duration_ms,
                "error": a.error,
            }
            for a in attempts
        ],
    }
