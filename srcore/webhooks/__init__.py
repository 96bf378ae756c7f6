"""Webhooks: declared events, subscriptions, signed and retried deliveries.

Inside a request a service calls :func:`emit`; a worker fans the event out to the
matching subscriptions and delivers it (:mod:`.worker` locally, or Celery). A receiver
checks what it got with :func:`verify`.
"""

from __future__ import annotations

from srcore.webhooks.models import Subscription
from srcore.webhooks.outbox import emit
from srcore.webhooks.signing import (
    WebhookVerificationError,
    derive_secret,
    generate_secret,
    verify,
)

__all__ = [
    "Subscription",
    "WebhookVerificationError",
    "derive_secret",
    "emit",
    "generate_secret",
    "verify",
]
