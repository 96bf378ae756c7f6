"""``POST /_srcore/events``: where meta's webhook worker pushes its events to a service.

The request is a Standard Webhooks message signed with the secret both sides derive from
this service's OAuth client secret (:func:`srcore.webhooks.derive_secret`); what it
carries is :mod:`srcore.identity.protocol`'s wire format.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from srcore.auth.revocation.store import RevocationUnavailable
from srcore.identity.protocol import PROFILE_EVENT, REVOCATION_EVENT, parse_events

if TYPE_CHECKING:
    from srcore.auth.revocation.state import RevocationState

__all__ = ["apply_event", "events_secret", "receive_events"]

_MAX_BODY = 1024 * 1024


def _error(status: int, reason: str, headers: Sequence[tuple[str, str]] = ()) -> Any:
    """The standard JSON error body: these requests come from meta, never from a browser."""
    from flask import jsonify

    from srcore.validation import FieldError, error_body

    response = jsonify(error_body([FieldError(reason=reason)]))
    response.status_code = status
    response.headers.extend(headers)
    return response


def events_secret(link: Any) -> str | None:
    """The ``whsec_`` secret meta signs this service's events with (derived, not stored)."""
    from srcore.signatures import derive_secret

    client_secret = getattr(link.meta, "client_secret", None)
    if not client_secret:
        return None
    return derive_secret(str(client_secret), link.service_id)


def apply_event(link: Any, message: object, *, state: RevocationState | None = None) -> None:
    """Apply one verified message of meta's (``{"type", "timestamp", "data"}``).

    ``revocation:issued`` events go to the revocation store, to the service's other
    processes (*state*'s fan-out, if any) and to *state*'s listeners;
    ``profile:updated`` updates the local copy of the user (users this service has never
    seen are not created: they arrive when they first log in or call the API). Other
    types are ignored. Raises ValueError for a malformed message.
    """
    from srcore.auth.users import profile_values, upsert_user

    if not isinstance(message, Mapping):
        raise ValueError("the body must be an object")
    kind, data = message.get("type"), message.get("data")
    if not isinstance(data, Mapping):
        raise ValueError("the message has no data object")
    if kind == REVOCATION_EVENT:
        events = parse_events(data.get("events"))
        link.store.apply(events)
        if state is not None:
            if state.fanout is not None:
                state.fanout.publish(events)
            for listener in state.listeners:
                listener(events)
    elif kind == PROFILE_EVENT:
        upsert_user(profile_values(data), create=False)


def receive_events() -> Any:
    """Apply what meta's webhook worker delivered.

    401 when the signature, its headers or its timestamp do not check out, 400 for a body
    that is not an event, 413 for one too large, 415 for one not sent as JSON, 503 when
    the message cannot be recorded (meta retries), 204 once applied, and 204 without
    applying it again for a message id already applied (a replay, or meta retrying a
    delivery whose answer it did not get).
    """
    from flask import current_app, request

    from srcore.auth.revocation.state import state_of
    from srcore.signatures import WebhookVerificationError, verify

    state = state_of(current_app)
    link = state.link
    secret = events_secret(link)
    unauthorized = [("WWW-Authenticate", 'Bearer error="invalid_token"')]
    if secret is None:
        return _error(401, "This service has no OAuth client secret to check meta's events.")
    if request.mimetype != "application/json":
        # meta sends JSON; any other type may have been read as a form on the way, which
        # would leave no body to check and call a good signature bad.
        return _error(415, "meta's events are sent as application/json.")
    body = request.get_data(cache=False)
    if len(body) > _MAX_BODY:
        return _error(413, "The body is too large.")
    try:
        message = verify(secret, dict(request.headers), body)
    except WebhookVerificationError as exc:
        if str(exc) == "the body is not JSON":
            return _error(400, "The body must be a JSON webhook message.")
        return _error(401, f"The event's signature does not check out: {exc}.", unauthorized)
    message_id = str(request.headers.get("webhook-id", ""))
    try:
        if not state.seen.claim(message_id):
            return "", 204
    except RevocationUnavailable as exc:
        return _error(503, str(exc))
    try:
        apply_event(link, message, state=state)
    except RevocationUnavailable as exc:
        state.seen.release(message_id)
        return _error(503, str(exc))
    except ValueError as exc:
        state.seen.release(message_id)
        return _error(400, f"Bad event: {exc}")
    except BaseException:
        state.seen.release(message_id)
        raise
    return "", 204
