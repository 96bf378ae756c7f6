"""The webhook API under ``/api/webhooks``: the public event catalog, and subscriptions
managed with a bearer token, whose user (or client) is the subscriber; a token sees those its
own client set up. Receiving events needs their scopes read-only; changing a subscription, or
being handed its secret, read-write."""

from __future__ import annotations

from functools import partial
from typing import TypedDict

from flask import Blueprint, Response, g, request, url_for

from srcore.auth.api import bearer_token, insufficient_scope
from srcore.auth.scopes import format_scopes
from srcore.auth.web import current_user
from srcore.conditional import conditional
from srcore.openapi import Accepted, Created, NoContent, accepted, created, no_content, operation
from srcore.pagination import CursorList
from srcore.service import state
from srcore.validation import Validation
from srcore.webhooks import subscriptions as subs
from srcore.webhooks.catalog import CatalogEntry, event_catalog
from srcore.webhooks.shapes import DeliveryJSON, SubscriptionJSON

__all__ = ["api"]

api = Blueprint("srcore_webhooks_api", __name__, url_prefix="/api/webhooks")


class EventsJSON(TypedDict):
    """The events a subscription can name."""

    results: list[CatalogEntry]


@api.before_request
def _authenticate() -> Response | None:
    """Require a token holding a scope of this service (but for the catalog and preflights)."""
    if request.endpoint == "srcore_webhooks_api.events" or request.method == "OPTIONS":
        return None
    st = state()
    token = bearer_token()
    if isinstance(token, Response):
        return token
    own = frozenset(s for s in token.scopes if s.service == st.service_id)
    if not own:
        wanted = format_scopes(subs.events_scopes())
        reason = f"Webhooks of {st.manifest.name} need a token with one of: {wanted}."
        return insufficient_scope(reason, wanted)
    g.srcore_token = token
    g.pop("srcore_user", None)
    if token.subject is not None:
        # Loads (or copies from meta) the token's user; 401/403 if unknown or suspended.
        current_user._get_current_object()
    g.srcore_webhook_subscriber = subs.Subscriber(token.subject, own, token=token)
    return None


@api.get("/events")
def events() -> EventsJSON:
    """The events a webhook can receive, each with the JSON Schema of its data (public
    documentation: no token needed)."""
    return {"results": event_catalog(state().manifest)}


@api.get("")
@operation(query=subs.read_page, token=True)
def api_list() -> CursorList[SubscriptionJSON]:
    """The token's webhooks, newest first."""
    return subs.current.listing()


@api.post("")
@operation(body=subs.read_subscription, token=True)
def api_create() -> Created[SubscriptionJSON]:
    """Subscribe a URL to events; the answer holds the signing secret, shown only here."""
    body = subs.current.create(Validation())
    return created(body, location=url_for(".api_get", subscription_id=body["id"]))


@api.get(subs.SUBSCRIPTION)
@operation(token=True)
@conditional
def api_get(subscription_id: int) -> SubscriptionJSON:
    """One of the token's webhooks."""
    return subs.current.show(subscription_id)


@api.patch(subs.SUBSCRIPTION)
@operation(body=partial(subs.read_subscription, partial=True), token=True)
@conditional
def api_update(subscription_id: int) -> SubscriptionJSON:
    """Change a webhook's url, events or enabled (those sent); its resource is fixed."""
    return subs.current.update(subscription_id, Validation(), partial=True)


@api.delete(subs.SUBSCRIPTION)
@operation(token=True)
@conditional
def api_delete(subscription_id: int) -> NoContent:
    """Delete a webhook and its delivery log."""
    subs.current.delete(subscription_id, conditional=True)
    return no_content()


@api.post(f"{subs.SUBSCRIPTION}/rotate")
@operation(body=subs.read_overlap, token=True)
def api_rotate(subscription_id: int) -> SubscriptionJSON:
    """Give a webhook a new secret (in the answer); the old one keeps signing beside it
    for ``overlap`` seconds (a day unless sent), so receivers can switch over."""
    # Whether a body came is what was read (a form is parsed already, JSON not), never its
    # Content-Length: a body sent chunked has none, and its overlap (0: end a leaked secret
    # now) must not give way to the day's default.
    sent = request.form or request.get_data(cache=True).strip()
    return subs.current.rotate(subscription_id, Validation() if sent else Validation(data={}))


@api.get(f"{subs.SUBSCRIPTION}/deliveries")
@operation(query=subs.read_page, token=True)
def api_deliveries(subscription_id: int) -> CursorList[DeliveryJSON]:
    """A webhook's delivery log, newest first, with each delivery's attempts."""
    return subs.current.deliveries(subscription_id)


@api.post(f"{subs.SUBSCRIPTION}/deliveries/{subs.DELIVERY}/redeliver")
@operation(token=True, errors={409: "The webhook is disabled, or the delivery is being sent."})
def api_redeliver(subscription_id: int, delivery_id: int) -> Accepted[DeliveryJSON]:
    """Send a delivery again, now, with the same ``webhook-id``."""
    return accepted(subs.current.redeliver(subscription_id, delivery_id))


@api.post(f"{subs.SUBSCRIPTION}/ping")
@operation(
    token=True,
    errors={
        409: "The webhook is disabled.",
        429: "A test event was sent moments ago (see the Retry-After header).",
    },
)
def api_ping(subscription_id: int) -> Accepted[DeliveryJSON]:
    """Send the webhook (and no other) a ``ping`` test event."""
    return accepted(subs.current.ping(subscription_id))
