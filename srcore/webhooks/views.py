"""Webhook subscriptions for every service: the API under ``/api/webhooks``
(:mod:`.api`, with the event catalog) and the pages under ``/webhooks`` (:mod:`.pages`),
both over the shared logic of :mod:`.manage`."""

from __future__ import annotations

from flask import Flask

from srcore.service import state

__all__ = ["init_app"]


def init_app(app: Flask) -> None:
    """Add the webhook API and pages to *app* (when its service declares events that users
    may subscribe to: ``internal`` ones are for the operator's own subscriptions)."""
    if not state(app).manifest.user_events:
        return
    from srcore.webhooks.api import api
    from srcore.webhooks.pages import pages

    app.register_blueprint(api)
    app.register_blueprint(pages)
