"""Webhooks: declared events, subscriptions, signed and retried deliveries.

Inside a request a service calls :func:`emit`; a worker fans the event out to the
matching subscriptions and delivers it (:mod:`.worker` locally, or through :mod:`.celery`).
A receiver checks what it got with :func:`verify`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from srcore.signatures import (
    WebhookVerificationError,
    derive_secret,
    generate_secret,
    verify,
)
from srcore.webhooks.models import Subscription
from srcore.webhooks.outbox import emit
from srcore.webhooks.state import (
    EXTENSION_KEY,
    Dispatcher,
    LocalDispatcher,
    WebhooksState,
    webhooks_state,
)

if TYPE_CHECKING:
    from flask import Flask

    from srcore.webhooks.fanout import CanReceive

__all__ = [
    "Dispatcher",
    "LocalDispatcher",
    "Subscription",
    "WebhookVerificationError",
    "WebhooksState",
    "build_dispatcher",
    "derive_secret",
    "emit",
    "generate_secret",
    "init_app",
    "verify",
    "webhooks_state",
]


def build_dispatcher(app: Flask) -> Dispatcher:
    """The dispatcher ``[global] webhooks-broker`` selects for *app* (built without IO)."""
    if not app.extensions["srcore"].config.global_.get("webhooks-broker"):
        return LocalDispatcher()
    from srcore.extras import require

    # Said when the app is built, not at the first commit in the middle of a request.
    require("celery", "[global] webhooks-broker (webhook delivery through Celery)")
    from srcore.webhooks.celery import CeleryDispatcher

    return CeleryDispatcher(app)


def init_app(app: Flask, *, can_receive: CanReceive | None = None) -> None:
    """Give *app* its webhooks state (``app.extensions["srcore.webhooks"]``: the
    dispatcher ``webhooks-broker`` selects, *can_receive*, the workers' prepare hooks),
    the webhook API and pages when its service declares events users may subscribe to
    (``internal`` ones are for the operator's own subscriptions), and let subscriptions
    follow meta's revocations (:mod:`srcore.webhooks.accounts`).

    *can_receive* is called as ``can_receive(subscription, outbox_row)`` when a
    subscription is limited to one resource, with a probe event about it; returning False
    refuses the subscription (its owner cannot see that resource).
    """
    import functools

    app.extensions[EXTENSION_KEY] = WebhooksState(
        dispatcher=build_dispatcher(app), can_receive=can_receive
    )

    from srcore.auth.revocation import on_revocations
    from srcore.webhooks.accounts import after_revocations

    on_revocations(app, functools.partial(after_revocations, app))
    if not app.extensions["srcore"].manifest.user_events:
        return
    from srcore.webhooks.api import api
    from srcore.webhooks.pages import pages

    app.register_blueprint(api)
    app.register_blueprint(pages)
