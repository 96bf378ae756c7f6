"""What meta's revocation events about an account mean for its webhook subscriptions.

``suspend`` / ``unsuspend``: a suspended (or deleted) account receives nothing; its pending
deliveries are cancelled and the fan-out skips it (:class:`~.models.Account`) until a newer
``unsuspend``. ``user``: everything the account issued before ``not_before`` is revoked
(a password change or reset), subscriptions too: those last confirmed before then are
disabled, their deliveries cancelled and the owner told, so someone who subscribed with
another person's address keeps no webhook once the real owner resets the password.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from srcore.webhooks.models import Account, Delivery, DeliveryStatus, Subscription

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "UNTRUSTED_REASON",
    "after_revocations",
    "apply_revocations",
    "apply_with_change",
    "tell_owners",
]

log = logging.getLogger("srcore.webhooks")

#: Why :func:`apply_revocations` disabled a subscription (shown to its owner).
UNTRUSTED_REASON = (
    "Disabled because the account's password was changed or reset, or all of its "
    "sessions and tokens were revoked: check its URL and events, then enable it again."
)


def _cancel_pending(session: Session, subscription_ids: Sequence[int]) -> None:
    if not subscription_ids:
        return
    session.execute(
        update(Delivery)
        .where(
            Delivery.subscription_id.in_(subscription_ids),
            Delivery.status == DeliveryStatus.pending.value,
        )
        .values(status=DeliveryStatus.cancelled.value, claimed_until=None)
        .execution_options(synchronize_session=False)
    )


def _owned_ids(session: Session, user_id: int) -> list[int]:
    return list(
        session.scalars(
            select(Subscription.id).where(
                Subscription.owner_id == user_id, Subscription.trusted.is_(False)
            )
        )
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
        _cancel_pending(session, _owned_ids(session, user_id))


def _untrust(session: Session, user_id: int, cutoff: datetime) -> list[Subscription]:
    confirmed = func.coalesce(Subscription.confirmed_at, Subscription.created)
    found = list(
        session.scalars(
            select(Subscription).where(
                Subscription.owner_id == user_id,
                Subscription.trusted.is_(False),
                Subscription.enabled.is_(True),
                confirmed < cutoff,
            )
        )
    )
    for sub in found:
        sub.enabled = False
        sub.disabled_reason = UNTRUSTED_REASON
        sub.failing_since = None
    _cancel_pending(session, [sub.id for sub in found])
    return found


def apply_revocations(session: Session, events: Iterable[Any]) -> list[Subscription]:
    """Apply meta's revocation *events* (``seq``, ``kind``, ``subject``, ``not_before``)
    in *session*'s transaction; returns the subscriptions it disabled, whose owners are to
    be told once it commits. Idempotent."""
    disabled: list[Subscription] = []
    for event in events:
        subject = str(event.subject)
        if not subject.isdigit() or len(subject) > 10:
            continue
        user_id = int(subject)
        if event.kind in ("suspend", "unsuspend"):
            _suspension(session, user_id, event.kind == "suspend", int(event.seq))
        elif event.kind == "user" and event.not_before is not None:
            # not_before is in whole seconds: a subscription confirmed in that second was
            # made before the revocation as likely as after it.
            cutoff = datetime.fromtimestamp(int(event.not_before), UTC) + timedelta(seconds=1)
            disabled.extend(_untrust(session, user_id, cutoff))
    session.flush()
    return disabled


def tell_owners(app: Flask, session: Session, disabled: Iterable[Subscription]) -> None:
    """Mail the owners of *disabled* (after the commit that disabled them)."""
    from srcore.webhooks.settings import MailNotifier

    notify = MailNotifier(app)
    for sub in disabled:
        try:
            notify(session, sub, UNTRUSTED_REASON)
        except Exception:  # the subscription is disabled either way; the page says why
            log.exception("could not tell the owner of subscription %d", sub.id)


def after_revocations(app: Flask, events: Sequence[Any]) -> None:
    """Apply *events* to *app*'s webhook subscriptions, commit, and tell the owners."""
    if not any(e.kind in ("suspend", "unsuspend", "user") for e in events):
        return
    with app.extensions["srcore"].db.session() as session:
        disabled = apply_revocations(session, events)
        session.commit()
        for sub in disabled:
            log.info("webhook %d of user %s disabled: its trust was revoked", sub.id, sub.owner_id)
        tell_owners(app, session, disabled)


def apply_with_change(app: Flask, session: Session, events: Sequence[Any]) -> None:
    """Apply *events* in *session*'s transaction, the one revoking them (meta's own);
    the owners are told once it commits, and nothing happens if it rolls back."""
    from sqlalchemy import event as sa_event

    disabled = apply_revocations(session, events)
    if not disabled:
        return
    real = getattr(session, "_get_current_object", lambda: session)()

    def committed(done: Session) -> None:
        tell = app.extensions["srcore"].db.session()
        try:
            tell_owners(app, tell, [tell.merge(sub, load=True) for sub in disabled])
        finally:
            tell.close()

    sa_event.listen(real, "after_commit", committed, once=True)
