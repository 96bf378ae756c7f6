"""The webhooks feature's per-app state, and the dispatchers a commit wakes.

:func:`srcore.webhooks.init_app` keeps a :class:`WebhooksState` in
``app.extensions["srcore.webhooks"]``: the modules that emit, claim and deliver read it
from there, so none of them imports the package that composes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from flask import Flask, current_app

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from srcore.webhooks.fanout import CanReceive

__all__ = [
    "EXTENSION_KEY",
    "Dispatcher",
    "LocalDispatcher",
    "WebhooksState",
    "webhooks_state",
]

#: Where an app keeps its :class:`WebhooksState`.
EXTENSION_KEY = "srcore.webhooks"


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


@dataclass
class WebhooksState:
    """What the webhooks feature keeps for one app."""

    #: Told after commit about emitted events (local worker or Celery, per webhooks-broker).
    dispatcher: Any
    #: Whether a subscriber may limit a subscription to a resource (a probe event about it).
    can_receive: CanReceive | None = None
    #: Called with a session once by each webhook worker (local or Celery) before its
    #: first fan-out, e.g. meta making its first-party subscriptions match the config.
    prepare: list[Callable[[Session], None]] = field(default_factory=list)


def webhooks_state(app: Flask | None = None) -> WebhooksState:
    """The webhooks state of *app*, or of the current app."""
    target = app if app is not None else current_app
    result: WebhooksState = target.extensions[EXTENSION_KEY]
    return result
