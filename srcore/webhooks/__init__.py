"""Webhooks: declared events, subscriptions, signed and retried deliveries.

Inside a request a service calls :func:`emit`; a worker fans the event out to the
matching subscriptions and delivers it (:mod:`.worker` locally, or through :mod:`.celery`).
A receiver checks what it got with :func:`verify`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from srcore.webhooks.models import Subscription
from srcore.webhooks.outbox import emit
from srcore.webhooks.signing import (
    WebhookVerificationError,
    derive_secret,
    generate_secret,
    verify,
)

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "Dispatcher",
    "LocalDispatcher",
    "Subscription",
    "WebhookVerificationError",
    "build_dispatcher",
    "derive_secret",
    "emit",
    "generate_secret",
    "init_app",
    "verify",
]


@runtime_checkable
class Dispatcher(Protocol):
    """Told after a commit about new outbox rows and deliveries made due by hand."""

    def nudge(self, outbox_ids: Sequence[int]) -> None: ...

    def nudge_deliveries(self, delivery_ids: Sequence[int]) -> None: ...


class LocalDispatcher:
    """No broker: the local worker polls the database; a nudge wakes one in this process."""

    def __init__(self) -> None:
        self.wakeup = threading.Event()

    def __repr__(self) -> str:
        return "<LocalDispatcher>"

    def nudge(self, outbox_ids: Sequence[int]) -> None:
        if outbox_ids:
            self.wakeup.set()

    def nudge_deliveries(self, delivery_ids: Sequence[int]) -> None:
        if delivery_ids:
            self.wakeup.set()


def build_dispatcher(app: Flask) -> Dispatcher:
    """The dispatcher ``[global] webhooks-broker`` selects for *app* (built without IO)."""
    if not app.extensions["srcore"].config.global_.get("webhooks-broker"):
        return LocalDispatcher()
    from srcore.extras import require

    # Said when the app is built, not at the first commit in the middle of a request.
    require("celery", "[global] webhooks-broker (webhook delivery through Celery)")
    from srcore.webhooks.celery import CeleryDispatcher

    return CeleryDispatcher(app)


def init_app(app: Flask) -> None:
    """Add the webhook API and pages to *app*, when its service declares events users may
    subscribe to (``internal`` ones are for the operator's own subscriptions), and let
    subscriptions follow meta's revocations (:mod:`srcore.webhooks.accounts`)."""
    import functools

    from srcore.auth.revocation import on_revocations
    from srcore.webhooks.accounts import after_revocations

    on_revocations(app, functools.partial(after_revocations, app))
    if not app.extensions["srcore"].manifest.user_events:
        return
    from srcore.webhooks.api import api
    from srcore.webhooks.pages import pages

    app.register_blueprint(api)
    app.register_blueprint(pages)
