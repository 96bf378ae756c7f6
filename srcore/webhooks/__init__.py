"""Webhooks: a service calls :func:`emit` inside its transaction; a worker (:mod:`.worker`,
woken locally or through :mod:`.celery`) fans the event out and delivers it, signed and
retried; a receiver checks what it got with :func:`verify`."""

from __future__ import annotations

import functools

from flask import Flask

from srcore.extras import require
from srcore.signatures import WebhookVerificationError, derive_secret, generate_secret, verify
from srcore.webhooks.models import Subscription
from srcore.webhooks.outbox import (
    EXTENSION_KEY,
    CanReceive,
    Dispatcher,
    LocalDispatcher,
    WebhooksState,
    emit,
    webhooks_state,
)

__all__ = [
    "LocalDispatcher",
    "Subscription",
    "WebhookVerificationError",
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
    # Said when the app is built, not at the first commit in the middle of a request.
    require("celery", "[global] webhooks-broker (webhook delivery through Celery)")
    from srcore.webhooks.celery import CeleryDispatcher

    return CeleryDispatcher(app)


def init_app(app: Flask, *, can_receive: CanReceive | None = None) -> None:
    """Give *app* its :class:`WebhooksState`, let subscriptions follow meta's revocations, and add
    the webhook API and pages if its service has events users may subscribe to. *can_receive* judges
    a subscription limited to one resource (:data:`.outbox.CanReceive`)."""
    app.extensions[EXTENSION_KEY] = WebhooksState(build_dispatcher(app), can_receive)
    from srcore.auth.revocation import on_revocations, on_rewind, on_rewind_while_down
    from srcore.webhooks import accounts

    on_revocations(app, functools.partial(accounts.after_revocations, app))
    on_rewind(app, functools.partial(accounts.after_rewind, app))
    kept = functools.partial(accounts.newest_kept, app)
    on_rewind_while_down(app, kept, functools.partial(accounts.after_rewind_while_down, app))
    if not app.extensions["srcore"].manifest.user_events:
        return
    from srcore.webhooks.api import api
    from srcore.webhooks.pages import pages

    app.register_blueprint(api)
    app.register_blueprint(pages)
