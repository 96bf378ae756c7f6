"""``emit``: record an event in the outbox, inside the transaction of the change.

Emitting costs one INSERT, however many subscribers there are: the fan-out to
subscriptions and every HTTP request happen later, in a worker. Because the row is in the
caller's transaction, a rolled-back change emits nothing and a committed one is never
lost. After the commit the configured dispatcher is nudged (Celery: enqueue the fan-out;
local worker: it polls), never before.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert
from sqlalchemy.orm import Session

from srcore.db import utcnow
from srcore.webhooks.models import OutboxRow
from srcore.webhooks.state import EXTENSION_KEY

__all__ = ["dump_payload", "emit", "insert_event"]

log = logging.getLogger("srcore.webhooks")

_PENDING_KEY = "srcore_webhooks_emitted"


def dump_payload(data: Mapping[str, Any]) -> str:
    """The JSON text stored for an event's data (ISO 8601 datetimes)."""

    def default(value: Any) -> Any:
        if isinstance(value, datetime):
            return value.isoformat()
        raise TypeError(f"cannot put {type(value).__name__} in a webhook payload")

    return json.dumps(dict(data), default=default, separators=(",", ":"), sort_keys=False)


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
    statement = (
        insert(OutboxRow)
        .values(
            event=event,
            resource=resource,
            owner_id=owner_id,
            visibility=visibility,
            payload=dump_payload(data),
            created=now or utcnow(),
        )
        .returning(OutboxRow.id)
    )
    outbox_id: int = session.execute(statement).scalar_one()
    return outbox_id


def _after_commit(session: Session) -> None:
    emitted: list[int] = session.info.pop(_PENDING_KEY, [])
    nudge: Callable[[list[int]], None] | None = session.info.get("srcore_webhooks_nudge")
    if emitted and nudge is not None:
        try:
            nudge(emitted)
        except Exception:  # the rows are committed; the worker's poll will find them
            log.exception("could not nudge the webhook dispatcher; the outbox poll will")


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def _remember(session: Session, outbox_id: int, nudge: Callable[[list[int]], None]) -> None:
    # The request's session is a proxy; events are listened for on the real object.
    session = getattr(session, "_get_current_object", lambda: session)()
    session.info.setdefault(_PENDING_KEY, []).append(outbox_id)
    session.info["srcore_webhooks_nudge"] = nudge
    if not sa_event.contains(session, "after_commit", _after_commit):
        sa_event.listen(session, "after_commit", _after_commit)
        sa_event.listen(session, "after_soft_rollback", _after_soft_rollback)


def _after_soft_rollback(session: Session, previous_transaction: Any) -> None:
    if previous_transaction.parent is None:  # the outermost transaction was rolled back
        _after_rollback(session)


def emit(
    event: str,
    data: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
    *,
    resource: str | Callable[[], str] | None = None,
    owner_id: int | None = None,
    visibility: str | None = None,
    session: Session | None = None,
) -> None:
    """Record *event* with *data* in the current transaction; deliver after it commits.

    The event must be declared in the current service's manifest (``ValueError`` if not).
    *resource* names what the event is about (``tracker:12``) for subscriptions limited to
    one resource. *owner_id* is the user who owns that resource and *visibility* how
    visible it is now (``public``, or anything else for "not to everyone"): they are
    recorded with the event, and its declared audience is judged from them when it is
    fanned out, however the resource changes meantime. An ``owner`` or ``readers`` event
    needs *owner_id* (``ValueError`` if missing). *session* defaults to the request's
    :data:`srcore.db.session`.

    The session is flushed first, and *data* and *resource* may be functions called after
    it: a payload built from a new row's id and timestamps needs no flush of its own.
    """
    from srcore.service import state

    st = state()
    declared = st.manifest.event(event)
    if declared is None:
        names = ", ".join(e.name for e in st.manifest.events) or "none"
        raise ValueError(
            f"event {event!r} is not declared in {st.manifest.package}/service.yaml "
            f"(declared: {names})"
        )
    if declared.audience in ("owner", "readers") and owner_id is None:
        raise ValueError(
            f"event {event!r} goes to its owner ({declared.audience!r} audience): "
            "emit it with owner_id"
        )
    if session is None:
        from srcore.db import session as request_session

        session = request_session
    session.flush()
    outbox_id = insert_event(
        session,
        event,
        data() if callable(data) else data,
        resource=resource() if callable(resource) else resource,
        owner_id=owner_id,
        visibility=visibility,
    )
    feature = st.extensions.get(EXTENSION_KEY)
    dispatcher = getattr(feature, "dispatcher", None)
    if dispatcher is not None:
        _remember(session, outbox_id, dispatcher.nudge)
