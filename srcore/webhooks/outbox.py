"""``emit``: record an event in the outbox, inside the transaction of the change: one
INSERT however many subscribers, nothing if it rolls back. A worker fans it out later;
the app's dispatcher is nudged after the commit, never before."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Protocol, cast

from flask import Flask, current_app
from sqlalchemy import insert
from sqlalchemy.orm import Session

from srcore.db import as_utc, utcnow
from srcore.db import session as db_session
from srcore.oncommit import after_commit
from srcore.webhooks.models import VISIBILITY_LENGTH, OutboxRow, Subscription

__all__ = [
    "EXTENSION_KEY",
    "CanReceive",
    "Dispatcher",
    "LocalDispatcher",
    "WebhooksState",
    "dump_payload",
    "emit",
    "insert_event",
    "webhooks_state",
]

log = logging.getLogger("srcore.webhooks")

#: Where an app keeps its :class:`WebhooksState`.
EXTENSION_KEY = "srcore.webhooks"

#: ``can_receive(subscription, probe_event)``: may the subscription be limited to the
#: probe's resource (can its owner see it)? Asked when subscribing, never at fan-out.
CanReceive = Callable[[Subscription, OutboxRow], bool]


class Dispatcher(Protocol):
    """Told after a commit about new outbox rows or deliveries made due by hand (ids). Never
    raises: what it could not wake a worker for, the worker's next poll finds."""

    def nudge(self, ids: Sequence[int]) -> None: ...


class LocalDispatcher:
    """No broker: the local worker polls the database; a nudge wakes one in this process."""

    def __init__(self) -> None:
        self.wakeup = threading.Event()

    def __repr__(self) -> str:
        return "<LocalDispatcher>"

    def nudge(self, ids: Sequence[int]) -> None:
        if ids:
            self.wakeup.set()


@dataclass
class WebhooksState:
    """What the webhooks feature keeps for one app (``app.extensions[EXTENSION_KEY]``)."""

    dispatcher: Dispatcher
    can_receive: CanReceive | None = None
    #: Each worker calls these once before its first fan-out, e.g. meta syncing its subscriptions.
    prepare: list[Callable[[Session], None]] = field(default_factory=list)
    #: Each worker calls these with its session and the time when it prunes the delivery
    #: log (every hour): the service's own rows that outlived their use (meta's spent codes
    #: and tokens). Each returns how many rows it deleted and commits them.
    prune: list[Callable[[Session, datetime], int]] = field(default_factory=list)


def webhooks_state(app: Flask | None = None) -> WebhooksState:
    """The webhooks state of *app*, or of the current app."""
    return cast(WebhooksState, (app or current_app).extensions[EXTENSION_KEY])


def dump_payload(data: Mapping[str, Any]) -> str:
    """The JSON text stored for an event's data (ISO 8601 dates, and datetimes in UTC with
    their offset, as the API writes them: see :func:`srcore.db.as_utc`).

    Raises :class:`TypeError` for a value JSON cannot hold and :class:`ValueError` for a
    number it cannot (NaN, infinity), which Python's ``json`` would write as bare ``NaN``:
    every receiver's strict parser refuses that body, so every delivery would fail."""

    def default(value: Any) -> Any:
        if isinstance(value, datetime):  # as the event catalog's schemas say
            return as_utc(value).isoformat()
        if isinstance(value, date):
            return value.isoformat()
        raise TypeError(f"cannot put {type(value).__name__} in a webhook payload")

    try:
        return json.dumps(dict(data), default=default, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:  # NaN or infinity (JSON has no such numbers), or a cycle
        raise ValueError(f"a webhook payload must be JSON: {exc}") from None


def insert_event(
    session: Session,
    event: str,
    data: Mapping[str, Any],
    *,
    resource: str | None = None,
    owner_id: int | None = None,
    visibility: str | None = None,
    now: datetime | None = None,
) -> int:
    """Insert one outbox row in *session*'s transaction and return its id (no checks)."""
    row = dict(resource=resource, owner_id=owner_id, visibility=visibility, created=now or utcnow())
    statement = insert(OutboxRow).values(event=event, payload=dump_payload(data), **row)
    return int(session.execute(statement.returning(OutboxRow.id)).scalar_one())


def _checked_visibility(event: str, visibility: object) -> str | None:
    """*visibility* as recorded (a str-based Enum member as its value), or an error naming
    *event* for one the fan-out, which compares it with ``"public"``, would misread."""
    if visibility is None:
        return None
    if not isinstance(visibility, str):
        why = f"must be a string such as 'public', not {type(visibility).__name__}"
    elif (text := str.__str__(visibility)) != "public" and text.strip().lower() == "public":
        why = f"{text!r}: did you mean 'public'?"
    elif not 0 < len(text) <= VISIBILITY_LENGTH:
        why = f"{text[:40]!r} must be a word of at most {VISIBILITY_LENGTH} characters ('unlisted')"
    else:
        return text
    raise (ValueError if isinstance(visibility, str) else TypeError)(
        f"event {event!r}: visibility {why}"
    )


def emit(
    event: str,
    data: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    *,
    resource: str | Callable[[], str] | None = None,
    owner_id: int | None = None,
    visibility: str | None = None,
    session: Session | None = None,
) -> None:
    """Record the declared *event* with *data* in *session*'s transaction (by default
    :data:`srcore.db.session`'s, flushed first: *data* and *resource* may be functions reading a new
    row's id); deliver it after the commit.

    *resource* (``tracker:12``) serves subscriptions limited to one resource. The event's
    audience is judged from *owner_id* (needed by ``owner`` and ``readers`` events) and *visibility*
    as recorded, whatever becomes of the resource meantime: ``"public"`` reaches the readers
    of a ``readers`` event, any other word (``"unlisted"``, ``"private"``) does not; a value
    the fan-out would misread (``"Public"``, ``True``) is refused."""
    from srcore.service import state

    st = state()
    declared = st.manifest.event(event)
    if declared is None:
        names = ", ".join(e.name for e in st.manifest.events) or "none"
        where = f"{st.manifest.package}/service.yaml"
        raise ValueError(f"event {event!r} is not declared in {where} (declared: {names})")
    if declared.audience in ("owner", "readers") and owner_id is None:
        audience = f"{declared.audience!r} audience"
        raise ValueError(f"event {event!r} goes to its owner ({audience}): emit it with owner_id")
    visibility = _checked_visibility(event, visibility)
    session = db_session if session is None else session
    session.flush()
    values = data() if callable(data) else data
    named = resource() if callable(resource) else resource
    outbox_id = insert_event(
        session, event, values, resource=named, owner_id=owner_id, visibility=visibility
    )
    dispatcher = getattr(st.extensions.get(EXTENSION_KEY), "dispatcher", None)
    if dispatcher is not None:
        after_commit(session, dispatcher.nudge, outbox_id)
