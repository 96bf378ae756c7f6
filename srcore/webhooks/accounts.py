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

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from srcore.oncommit import after_commit
from srcore.webhooks.delivery import cancel_pending, lock_subscriptions
from srcore.webhooks.models import Account, Delivery, Subscription
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


def _lock(session: Session, users: list[int], suspensions: list[int]) -> dict[int, Account]:
    """Lock all a batch changes first, so batches naming accounts in any order wait for each
    other, never deadlock: *users*' subscriptions by id (as every change does), then by user id
    the accounts of *suspensions*, made if new (on SQLite, the write lock before any read)."""
    lock_subscriptions(session, Subscription.owner_id.in_(users), Subscription.trusted.is_(False))
    if not suspensions:
        return {}
    insert = (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert
    new = insert(Account).values([{"user_id": user_id} for user_id in suspensions])
    session.execute(new.on_conflict_do_nothing())
    query = select(Account).where(Account.user_id.in_(suspensions)).order_by(Account.user_id)
    query = query.with_for_update().execution_options(populate_existing=True)
    return {row.user_id: row for row in session.scalars(query)}


def _suspension(session: Session, account: Account, event: Any) -> None:
    if int(event.seq) < account.seq:  # an older event arriving late never undoes a newer one
        return
    account.suspended, account.seq = event.kind == "suspend", int(event.seq)
    mine = Subscription.owner_id == account.user_id, Subscription.trusted.is_(False)
    if account.suspended:
        cancel_pending(session, Delivery.subscription_id.in_(select(Subscription.id).where(*mine)))


def _untrust(session: Session, user_id: int, cutoff: datetime) -> list[Subscription]:
    confirmed = func.coalesce(Subscription.confirmed_at, Subscription.created)
    mine = Subscription.owner_id == user_id, Subscription.trusted.is_(False)
    query = select(Subscription).where(*mine, Subscription.enabled.is_(True), confirmed < cutoff)
    found = session.scalars(query).all()
    cancel_pending(session, Delivery.subscription_id.in_([sub.id for sub in found]))
    for sub in found:
        sub.enabled = False
        sub.disabled_reason = UNTRUSTED_REASON
        sub.failing_since = None
    return list(found)


def apply_with_change(app: Flask, session: Session, events: Sequence[Any]) -> None:
    """Apply meta's revocation *events* (``seq``, ``kind``, ``subject``, ``not_before``) in
    *session*'s transaction, idempotently: the owners of the subscriptions it disabled are
    told once it commits, and nobody if it rolls back."""
    about_users = ("suspend", "unsuspend", "user")  # the other kinds' subjects are no user ids
    events = [e for e in events if e.kind in about_users and str(e.subject).isdecimal()]
    events = [e for e in events if len(str(e.subject)) <= 10]
    suspends = sorted({int(e.subject) for e in events if e.kind in ("suspend", "unsuspend")})
    accounts = _lock(session, sorted({int(e.subject) for e in events}), suspends)
    disabled: list[Subscription] = []
    for event in events:
        if event.kind in ("suspend", "unsuspend"):
            _suspension(session, accounts[int(event.subject)], event)
        elif event.kind == "user" and event.not_before is not None:
            # not_before is in whole seconds: a subscription confirmed in that second was
            # made before the revocation as likely as after it.
            cutoff = datetime.fromtimestamp(int(event.not_before), UTC) + timedelta(seconds=1)
            disabled.extend(_untrust(session, int(event.subject), cutoff))
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
