"""Dispatchers: what happens after an event is committed.

Both kinds call the same functions (:func:`.fanout.fan_out_batch`,
:func:`.delivery.deliver_batch`).
:class:`LocalDispatcher` needs no broker: the local worker polls the outbox and the due
deliveries, and a nudge only wakes a worker running in the same process. With
``[global] webhooks-broker`` set, :func:`build_dispatcher` builds the Celery dispatcher
of :mod:`srcore.webhooks.celery` (imported only then).
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from srcore.extras import require

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["CELERY_DISPATCHER", "Dispatcher", "LocalDispatcher", "build_dispatcher"]

#: ``module:attribute`` of the Celery dispatcher class, imported when a broker is set.
CELERY_DISPATCHER = "srcore.webhooks.celery:CeleryDispatcher"


@runtime_checkable
class Dispatcher(Protocol):
    """Told after commit about new outbox rows and deliveries made due by hand."""

    def nudge(self, outbox_ids: Sequence[int]) -> None:
        """New outbox rows were committed."""

    def nudge_deliveries(self, delivery_ids: Sequence[int]) -> None:
        """Deliveries were made due (manual redelivery)."""


class LocalDispatcher:
    """No broker: the local worker finds the rows by polling; a nudge wakes it early."""

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


def _load(spec: str) -> Any:
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def build_dispatcher(app: Flask, *, celery_class: str = CELERY_DISPATCHER) -> Dispatcher:
    """The dispatcher ``[global] webhooks-broker`` selects for *app* (built without IO)."""
    broker = app.extensions["srcore"].config.global_.get("webhooks-broker")
    if not broker:
        return LocalDispatcher()
    if celery_class == CELERY_DISPATCHER:
        # Said when the app is built, not at the first commit in the middle of a request.
        require("celery", "[global] webhooks-broker (webhook delivery through Celery)")
    cls = _load(celery_class)
    dispatcher: Dispatcher = cls(app)
    return dispatcher
