"""What the subscription API and pages both do, over one subscriber's subscriptions
(anyone else's is a 404; the operator's trusted ones are never shown or changed here).
Functions that change rows commit; the dispatcher is nudged only after the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from flask import Flask, abort, current_app
from sqlalchemy import func, select
from sqlalchemy.orm import Session, lazyload

from srcore.auth.scopes import format_scopes
from srcore.db import utcnow
from srcore.outbound.targets import Resolver, lookup, target_problem
from srcore.pagination import paginate_cursor
from srcore.service import SrcoreState
from srcore.signatures import generate_secret
from srcore.validation import Validation
from srcore.webhooks.catalog import PING, PingData
from srcore.webhooks.models import Attempt, Delivery, OutboxRow, Subscription
from srcore.webhooks.outbox import dump_payload
from srcore.webhooks.state import webhooks_state
from srcore.webhooks.subscriptions import (
    Subscriber,
    SubscriptionInput,
    missing_scopes,
    subscription_scopes,
)

__all__ = [
    "MAX_SUBSCRIPTIONS",
    "PING_INTERVAL",
    "DeliveryRow",
    "create_subscription",
    "deliveries",
    "find",
    "overlap_until",
    "owned",
    "redeliver",
    "rotate_secret",
    "send_ping",
    "set_enabled",
    "set_resolver",
    "update_subscription",
]

log = logging.getLogger("srcore.webhooks")

#: The URL parts of a subscription and of one of its deliveries.
SUBSCRIPTION = "/<id:subscription_id>"
DELIVERY = "<id(max=9223372036854775807):delivery_id>"
#: Deliveries on one page of the log.
DEFAULT_LIMIT = 20
#: Subscriptions one subscriber may have on one service.
MAX_SUBSCRIPTIONS = 100
#: The least time between two test events to one subscription.
PING_INTERVAL = timedelta(seconds=30)
#: A delivery, its event's name and its attempts (newest first).
DeliveryRow = tuple[Delivery, str, list[Attempt]]
#: Where :func:`set_resolver` keeps an app's name lookup.
_RESOLVER = "srcore_webhook_resolver"


def set_resolver(app: Flask, resolve: Resolver) -> None:
    """Look the hosts of *app*'s new subscription URLs up with *resolve* instead of the
    system's resolver: tests give one that never leaves the machine."""
    app.extensions[_RESOLVER] = resolve


def _target_problem(url: str) -> str | None:
    """Why *url* may not be subscribed on this app (see :func:`set_resolver`), or None."""
    from srcore.webhooks.settings import policy_for

    resolve: Resolver = current_app.extensions.get(_RESOLVER, lookup)
    return target_problem(url, policy_for(current_app), resolve=resolve)


def owned(subscriber: Subscriber) -> Any:
    """The WHERE clause of the subscriptions *subscriber* owns (never a trusted one)."""
    visible = Subscription.trusted.is_(False)
    if subscriber.user_id is not None:
        return visible & (Subscription.owner_id == subscriber.user_id)
    return (
        visible
        & Subscription.owner_id.is_(None)
        & (Subscription.owner_client == subscriber.client_id)
    )


def find(session: Session, subscriber: Subscriber, subscription_id: int) -> Subscription:
    """*subscriber*'s subscription *subscription_id*; 404 if it has none such."""
    sub = session.scalar(
        select(Subscription).where(Subscription.id == subscription_id, owned(subscriber))
    )
    if sub is None:
        abort(404)
    return sub


def overlap_until(sub: Subscription) -> datetime | None:
    """Until when the previous secret still signs after a rotation (None: it does not)."""
    expires = sub.previous_secret_expires
    if sub.previous_secret is None or (expires is not None and expires <= utcnow()):
        return None
    return expires


def _check_new_values(
    st: SrcoreState,
    subscriber: Subscriber,
    values: SubscriptionInput,
    valid: Validation,
    *,
    resource: str | None,
) -> None:
    """Check the URL's target, the scopes and the resource (errors on *valid*)."""
    if values.url is not None:
        problem = _target_problem(values.url)
        if problem is not None:
            valid.error(f"Webhooks cannot be sent there: {problem}.", "url")
    if values.events is not None:
        missing = missing_scopes(st.manifest, values.events, subscriber.scopes)
        if missing:
            valid.error(
                "Receiving these events needs the scope "
                f"{format_scopes(missing)}, which you do not hold.",
                "events",
            )
    hook = webhooks_state().can_receive
    if not valid.errors and resource is not None and hook is not None and values.events:
        probe = _new(subscriber, st, url=values.url or "", events=values.events, secret="")
        probe.resource = resource
        event = OutboxRow(event=values.events[0], resource=resource, payload="{}")
        if not hook(probe, event):
            valid.error(f"There is no {resource} that you can see.", "resource")


def _new(
    subscriber: Subscriber, st: SrcoreState, *, url: str, events: Sequence[str], secret: str
) -> Subscription:
    return Subscription(
        owner_id=subscriber.user_id,
        owner_client=subscriber.client_id if subscriber.user_id is None else None,
        url=url,
        events=" ".join(events),
        scopes=subscription_scopes(subscriber, st.manifest),
        secret=secret,
        enabled=True,
    )


def create_subscription(
    session: Session,
    st: SrcoreState,
    subscriber: Subscriber,
    values: SubscriptionInput,
    valid: Validation,
) -> tuple[Subscription, str]:
    """Check and store a new subscription; return it and its secret. Bad input raises
    :class:`~srcore.validation.ValidationFailed` with every error on *valid*."""
    # Checked even when other fields are wrong, so a form shows every problem at once.
    _check_new_values(st, subscriber, values, valid, resource=values.resource)
    valid.raise_if_invalid()
    count = session.scalar(select(func.count()).where(owned(subscriber))) or 0
    if count >= MAX_SUBSCRIPTIONS:
        valid.fail(f"You already have {MAX_SUBSCRIPTIONS} webhooks here; delete one first.")
    assert values.url is not None and values.events is not None
    secret = generate_secret()
    sub = _new(subscriber, st, url=values.url, events=values.events, secret=secret)
    sub.resource = values.resource
    sub.confirmed_at = utcnow()
    session.add(sub)
    session.commit()
    who = (
        f"user {subscriber.user_id}"
        if subscriber.user_id is not None
        else f"client {subscriber.client_id}"
    )
    log.info("webhook %s subscribed to %s by %s", sub.id, sub.events, who)
    return sub, secret


def update_subscription(
    session: Session,
    st: SrcoreState,
    subscriber: Subscriber,
    sub: Subscription,
    values: SubscriptionInput,
    valid: Validation,
) -> None:
    """Apply an update (url, events, enabled). Bad input (errors already on *valid*
    included) raises :class:`~srcore.validation.ValidationFailed`."""
    valid.raise_if_invalid()
    events = values.events if values.events is not None else tuple(sorted(sub.event_names))
    check = SubscriptionInput(url=values.url if values.url != sub.url else None, events=events)
    _check_new_values(st, subscriber, check, valid, resource=None)
    valid.raise_if_invalid()
    if values.url is not None:
        sub.url = values.url
    if values.events is not None:
        sub.events = " ".join(values.events)
        # The subscription now receives what the subscriber holds today.
        sub.scopes = subscription_scopes(subscriber, st.manifest)
    if values.enabled is not None:
        set_enabled(sub, values.enabled)
    # Its owner has seen it as it is now: see srcore.webhooks.accounts.
    sub.confirmed_at = utcnow()
    session.commit()


def set_enabled(sub: Subscription, enabled: bool) -> None:
    """Enable or disable *sub* by its owner's wish (does not commit)."""
    if enabled == sub.enabled:
        return
    sub.enabled = enabled
    sub.disabled_reason = None if enabled else "Disabled by its owner."
    if enabled:
        sub.failing_since = None
        sub.confirmed_at = utcnow()


def rotate_secret(session: Session, sub: Subscription, overlap: timedelta) -> str:
    """Give *sub* a new secret; the current one keeps signing for *overlap*. Returns it."""
    secret = generate_secret()
    keep = overlap > timedelta(0)
    sub.previous_secret = sub.secret if keep else None
    sub.previous_secret_expires = utcnow() + overlap if keep else None
    sub.secret = secret
    session.commit()
    return secret


def _nudge(st: SrcoreState, delivery_ids: list[int]) -> None:
    """Wake the dispatcher for deliveries made due by hand (committed already)."""
    nudge = getattr(webhooks_state().dispatcher, "nudge_deliveries", None)
    if callable(nudge):
        try:
            nudge(delivery_ids)
        except Exception:  # the rows are due; the worker's poll finds them
            log.exception("could not nudge the webhook dispatcher for %s", delivery_ids)


def redeliver(session: Session, st: SrcoreState, sub: Subscription, delivery_id: int) -> Delivery:
    """Send a delivery again, now, with the same ``webhook-id``; 404 if it is not *sub*'s."""
    from srcore.webhooks import delivery as delivery_module

    delivery = session.scalar(
        select(Delivery).where(Delivery.id == delivery_id, Delivery.subscription_id == sub.id)
    )
    if delivery is None or not delivery_module.redeliver(session, delivery.id, now=utcnow()):
        abort(404)
    session.commit()
    _nudge(st, [delivery.id])
    return delivery


def send_ping(session: Session, st: SrcoreState, sub: Subscription) -> Delivery | timedelta:
    """Send *sub* (and no other subscription) a ``ping`` event now; or, when one was sent
    less than :data:`PING_INTERVAL` ago, return how long to wait.

    The outbox row is written already fanned out, so the fan-out never offers it to
    anyone else; its one delivery shows in the log like any other.
    """
    now = utcnow()
    last = session.scalar(
        select(func.max(Delivery.created))
        .join(OutboxRow, Delivery.outbox_id == OutboxRow.id)
        .where(Delivery.subscription_id == sub.id, OutboxRow.event == PING)
    )
    if last is not None and now - last < PING_INTERVAL:
        return PING_INTERVAL - (now - last)
    data: PingData = {
        "subscription": sub.id,
        "message": f"A test event from {st.manifest.name}: this webhook receives events.",
    }
    row = OutboxRow(
        event=PING,
        payload=dump_payload(data),
        owner_id=sub.owner_id,
        created=now,
        fanned_out_at=now,
    )
    session.add(row)
    session.flush()
    delivery = Delivery(subscription_id=sub.id, outbox_id=row.id, next_attempt_at=now, created=now)
    session.add(delivery)
    session.commit()
    _nudge(st, [delivery.id])
    return delivery


def deliveries(
    session: Session, sub: Subscription, cursor: str | None, limit: int
) -> tuple[list[DeliveryRow], str | None]:
    """One page of *sub*'s deliveries (newest first) and the next page's cursor;
    :class:`~srcore.pagination.InvalidCursor` for a cursor of another listing."""
    stmt = (
        select(Delivery)
        .where(Delivery.subscription_id == sub.id)
        .options(lazyload(Delivery.subscription), lazyload(Delivery.outbox))
    )
    page = paginate_cursor(session, stmt, key=[Delivery.id], cursor=cursor, limit=limit)
    ids = [d.id for d in page.items]
    events: dict[int, str] = {}
    attempts: dict[int, list[Attempt]] = {i: [] for i in ids}
    if ids:
        outbox_ids = {d.outbox_id for d in page.items}
        query = select(OutboxRow.id, OutboxRow.event).where(OutboxRow.id.in_(outbox_ids))
        events.update((outbox_id, event) for outbox_id, event in session.execute(query))
        for attempt in session.scalars(
            select(Attempt).where(Attempt.delivery_id.in_(ids)).order_by(Attempt.id.desc())
        ):
            attempts[attempt.delivery_id].append(attempt)
    rows = [(d, events.get(d.outbox_id, "?"), attempts[d.id]) for d in page.items]
    return rows, page.next_cursor
