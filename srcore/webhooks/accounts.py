"""What meta's revocation events about an account mean for its webhook subscriptions.

A suspended (or deleted) account receives nothing until a newer ``unsuspend``. When all it
issued is revoked (a password change or reset), its subscriptions confirmed before then are
disabled and the owner told, so whoever subscribed with someone else's account keeps none."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from srcore.oncommit import after_commit
from srcore.webhooks.delivery import lock_subscriptions
from srcore.webhooks.models import Account, Delivery, DeliveryStatus, Subscription
from srcore.webhooks.settings import MailNotifier

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["after_revocations", "apply_with_change"]

log = logging.getLogger("srcore.webhooks")

#: Why a subscription was disabled, as its owner is shown.
UNTRUSTED_REASON = (
    "Disabled because the account's password was changed or reset, or all of its "
    "sessions and tokens were revoked: check its URL and events, then enable it again."
)


def _cancel_pending(session: Session, *where: ColumnElement[bool]) -> None:
    lock_subscriptions(session, *where)
    session.execute(
        update(Delivery)
        .where(Delivery.subscription_id.in_(select(Subscription.id).where(*where)))
        .where(Delivery.status == DeliveryStatus.pending.value)
        .values(status=DeliveryStatus.cancelled.value, claimed_until=None)
        .execution_options(synchronize_session=False)
    )


def _suspension(session: Session, user_id: int, suspended: bool, seq: int) -> None:
    row = session.get(Account, user_id, with_for_update=True)
    if row is None:
        session.add(Account(user_id=user_id, suspended=suspended, seq=seq))
    elif seq >= row.seq:  # an older event arriving late never undoes a newer one
        row.suspended, row.seq = suspended, seq
    else:
        return
    if suspended:
        _cancel_pending(session, Subscription.owner_id == user_id, Subscription.trusted.is_(False))


def _untrust(session: Session, user_id: int, cutoff: datetime) -> list[Subscription]:
    confirmed = func.coalesce(Subscription.confirmed_at, Subscription.created)
    mine = Subscription.owner_id == user_id, Subscription.trusted.is_(False)
    query = select(Subscription).where(*mine, Subscription.enabled.is_(True), confirmed < cutoff)
    found = session.scalars(query).all()
    _cancel_pending(session, Subscription.id.in_([sub.id for sub in found]))
    for sub in found:
        sub.enabled = False
        sub.disabled_reason = UNTRUSTED_REASON
        sub.failing_since = None
    return list(found)


def apply_with_change(app: Flask, session: Session, events: Sequence[Any]) -> None:
    """Apply meta's revocation *events* (``seq``, ``kind``, ``subject``, ``not_before``) in
    *session*'s transaction, idempotently: the owners of the subscriptions it disabled are
    told once it commits, and nobody if it rolls back."""
    disabled: list[Subscription] = []
    for event in events:
        subject = str(event.subject)
        if not subject.isdigit() or len(subject) > 10:
            continue
        if event.kind in ("suspend", "unsuspend"):
            _suspension(session, int(subject), event.kind == "suspend", int(event.seq))
        elif event.kind == "user" and event.not_before is not None:
            # not_before is in whole seconds: a subscription confirmed in that second was
            # made before the revocation as likely as after it.
            cutoff = datetime.fromtimestamp(int(event.not_before), UTC) + timedelta(seconds=1)
            disabled.extend(_untrust(session, int(subject), cutoff))
    session.flush()
    if disabled:
        after_commit(session, partial(_tell, app), *disabled)


def _tell(app: Flask, disabled: list[Subscription]) -> None:
    notify = MailNotifier(app)
    with app.extensions["srcore"].db.session() as session:
        for sub in [session.merge(sub, load=True) for sub in disabled]:
            log.info("webhook %d of user %s disabled: its trust was revoked", sub.id, sub.owner_id)
            try:
                notify(session, sub, UNTRUSTED_REASON)
            except Exception:  # it is disabled either way; its page says why
                log.exception("could not tell the owner of subscription %d", sub.id)


def after_revocations(app: Flask, events: Sequence[Any]) -> None:
    """Apply meta's revocation *events* to *app*'s subscriptions in a transaction of their own."""
    with app.extensions["srcore"].db.session() as session:
        apply_with_change(app, session, events)
        session.commit()
