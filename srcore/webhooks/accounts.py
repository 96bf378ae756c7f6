"""What meta's revocation events mean for webhook subscriptions.

A suspended (or deleted) account receives nothing until a newer ``unsuspend``. When all it
issued is revoked (a password change or reset), its subscriptions confirmed before then are
disabled and the owner told, so whoever subscribed with someone else's account keeps none.
Likewise when the token, grant or client that set a subscription up is revoked: an
application whose access the user ended stops receiving their events. A subscription
disabled so is its owner's alone from then on (no token sees it, no later revocation
names it), so hearing of the same revocation again (pushed, then pulled) changes nothing
once the owner has enabled it again."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from srcore.auth.revocation import RevocationUnavailable, rewind_checked
from srcore.identity.protocol import MAX_TIME, RevocationEvent
from srcore.oncommit import after_commit
from srcore.webhooks.delivery import cancel_pending, lock_subscriptions
from srcore.webhooks.models import Account, Delivery, Subscription
from srcore.webhooks.settings import MailNotifier

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "after_revocations",
    "after_rewind",
    "after_rewind_while_down",
    "apply_with_change",
    "newest_kept",
]

log = logging.getLogger("srcore.webhooks")

#: Why a subscription was disabled, as its owner is shown.
UNTRUSTED_REASON = (
    "Disabled because the account's password was changed or reset, or all of its "
    "sessions and tokens were revoked: check its URL and events, then enable it again."
)
REVOKED_REASON = (
    "Disabled because the access of the application or token that set it up was revoked "
    "(by the account's owner, or with a change or reset of its password). The application can "
    "set up a new one once it has access again; enabling this one makes it yours alone."
)


def _lock(
    session: Session, untrusted: list[ColumnElement[bool]], suspensions: list[int]
) -> dict[int, Account]:
    """Lock all a batch changes first, so batches naming accounts in any order wait for each
    other, never deadlock: by id (as every change does) the subscriptions *untrusted* selects
    and every other one of their owners and of *suspensions* (a transaction applying several
    batches about one account has them all from its first), then by user id
    the accounts of *suspensions*, made if new. On SQLite, the one write lock first."""
    if session.get_bind().dialect.name == "sqlite":  # the write lock before anything is read
        named = or_(Subscription.owner_id.in_(suspensions), *untrusted)
        hold = update(Subscription).where(named).values(updated=Subscription.updated)
        session.execute(hold.execution_options(synchronize_session=False))
    owners = set(suspensions)
    if untrusted:
        theirs = select(Subscription.owner_id).where(or_(*untrusted)).distinct()
        owners.update(owner for owner in session.scalars(theirs) if owner is not None)
    chosen = or_(Subscription.owner_id.in_(sorted(owners)), *untrusted)
    lock_subscriptions(session, chosen, Subscription.trusted.is_(False))
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


def _confirmed_before(not_before: int) -> ColumnElement[bool]:
    # not_before is in whole seconds: a subscription confirmed in that second was made
    # before the revocation as likely as after it.
    # The protocol's last second (MAX_TIME) has no next one a date can hold.
    cutoff = datetime.fromtimestamp(min(not_before + 1, MAX_TIME), UTC)
    return func.coalesce(Subscription.confirmed_at, Subscription.created) < cutoff


def _user_id(subject: object) -> int | None:
    """The user id *subject* names: up to ten ASCII digits (``int`` reads other scripts'
    digits too), else None."""
    text = str(subject)
    return int(text) if text.isascii() and text.isdecimal() and len(text) <= 10 else None


def _untrusted(event: Any) -> tuple[ColumnElement[bool], str] | None:
    """The subscriptions *event* takes trust from, and why; None for one that takes none."""
    subject = str(event.subject)
    if event.kind == "token":
        return Subscription.token_id == subject, REVOKED_REASON
    if event.kind == "grant":
        return Subscription.grant_id == subject, REVOKED_REASON
    if event.not_before is None:
        return None
    if event.kind == "client":
        theirs = (Subscription.client_id == subject) & _confirmed_before(event.not_before)
        return theirs, REVOKED_REASON
    if event.kind == "user" and (user := _user_id(subject)) is not None:
        mine = (Subscription.owner_id == user) & _confirmed_before(event.not_before)
        return mine, UNTRUSTED_REASON
    return None


def _untrust(session: Session, where: ColumnElement[bool], reason: str) -> list[Subscription]:
    """Disable the enabled subscriptions *where* selects for *reason*, their owners' alone."""
    mine = where, Subscription.enabled.is_(True), Subscription.trusted.is_(False)
    found = session.scalars(select(Subscription).where(*mine)).all()
    cancel_pending(session, Delivery.subscription_id.in_([sub.id for sub in found]))
    for sub in found:
        sub.enabled, sub.disabled_reason, sub.failing_since = False, reason, None
        sub.grant_id = sub.token_id = None
        if sub.owner_id is not None:  # a service subscriber's stays its own: nobody else sees it
            sub.client_id = None
    return list(found)


def apply_with_change(app: Flask, session: Session, events: Sequence[Any]) -> None:
    """Apply meta's revocation *events* (``seq``, ``kind``, ``subject``, ``not_before``) in
    *session*'s transaction, idempotently: the owners of the subscriptions it disabled are
    told once it commits, and nobody if it rolls back."""
    # Per account only its newest suspension event counts: a batch read again from the
    # start of meta's list (a rewind) must not cancel the deliveries of an account whose
    # old suspension it also holds the end of.
    newest: dict[int, Any] = {}
    for e in events:
        user = _user_id(e.subject) if e.kind in ("suspend", "unsuspend") else None
        if user is not None and (user not in newest or int(e.seq) > int(newest[user].seq)):
            newest[user] = e
    suspensions = sorted(newest.items())
    users = sorted({user for user, _ in suspensions})
    untrusted = [found for found in map(_untrusted, events) if found is not None]
    accounts = _lock(session, [where for where, _ in untrusted], users)
    for user, event in suspensions:
        _suspension(session, accounts[user], event)
    disabled: dict[int, tuple[Subscription, str]] = {}
    for where, reason in untrusted:
        disabled.update((sub.id, (sub, reason)) for sub in _untrust(session, where, reason))
    session.flush()
    if disabled:
        after_commit(session, partial(_tell, app), *disabled.values())


def _tell(app: Flask, disabled: list[tuple[Subscription, str]]) -> None:
    notify = MailNotifier(app)
    with app.extensions["srcore"].db.session() as session:
        for sub, reason in [(session.merge(sub, load=True), why) for sub, why in disabled]:
            log.info("webhook %d of user %s disabled: %s", sub.id, sub.owner_id, reason)
            try:
                notify(session, sub, reason)
            except Exception:  # it is disabled either way; its page says why
                log.exception("could not tell the owner of subscription %d", sub.id)


def after_revocations(app: Flask, events: Sequence[Any]) -> None:
    """Apply meta's revocation *events* to *app*'s subscriptions in a transaction of their own.

    Not before this process compared the seqs kept with meta (:func:`newest_kept`): a push
    of meta's new numbering could move them past what that check reads. A push refused so
    is sent again by meta; the pull reads it anyway.
    """
    if not rewind_checked(app):
        raise RevocationUnavailable(
            "meta's revocations are not applied to webhook subscriptions until this process"
            " has compared the seqs its database keeps with meta's"
        )
    with app.extensions["srcore"].db.session() as session:
        apply_with_change(app, session, events)
        session.commit()


def after_rewind(app: Flask) -> None:
    """meta's numbering went back (restored from a dump): the suspension states stand, but
    the next event about each account decides, whatever its seq."""
    with app.extensions["srcore"].db.session() as session:
        _lock_all(session)
        session.execute(update(Account).values(seq=0))
        session.commit()


def _lock_all(session: Session) -> set[tuple[int, int]]:
    """Lock every account row in user id order, as a batch of events locks its own (so
    neither deadlocks with the other on PostgreSQL); their (user id, seq)."""
    rows = select(Account.user_id, Account.seq).order_by(Account.user_id).with_for_update()
    return {(row.user_id, row.seq) for row in session.execute(rows)}


def newest_kept(app: Flask) -> RevocationEvent | None:
    """The event behind the account with the highest seq: the newest seq of meta's that
    *app*'s database keeps (None when it keeps none).

    Any account whose seq a restored meta lost is above the dump's last seq, and so is this
    one: if meta's event at its seq is still about that account and says what its row
    says, no account holds a seq of a lost numbering.
    """
    with app.extensions["srcore"].db.session() as session:
        newest = select(Account).where(Account.seq > 0).order_by(Account.seq.desc()).limit(1)
        row = session.scalars(newest).first()
        if row is None:
            return None
        kind = "suspend" if row.suspended else "unsuspend"
        return RevocationEvent(int(row.seq), kind, str(row.user_id))


def after_rewind_while_down(
    app: Flask, mine: RevocationEvent, theirs: RevocationEvent | None
) -> None:
    """At a process's first pull: if meta's event *theirs* at the seq of :func:`newest_kept`'s
    *mine* is not about that account, or does not say what its row says, meta was restored
    while every process of *app* was down: as :func:`after_rewind`, once. A process that
    finds the row moved on since (another one got here first) changes nothing; a normal
    restart changes nothing either."""
    user = int(mine.subject)
    if (
        theirs is not None
        and _user_id(theirs.subject) == user
        and (theirs.kind == "unsuspend") == (mine.kind == "unsuspend")
    ):
        return
    log.warning(
        "meta's revocation %d is not the one account %d's suspension state came from (meta"
        " restored from a dump while the service was down?): meta's next events decide",
        mine.seq,
        user,
    )
    with app.extensions["srcore"].db.session() as session:
        if session.get_bind().dialect.name == "sqlite":  # the write lock before reading
            hold = update(Account).where(Account.user_id == user).values(seq=Account.seq)
            session.execute(hold.execution_options(synchronize_session=False))
        if (user, mine.seq) not in _lock_all(session):
            return
        session.execute(update(Account).values(seq=0))
        session.commit()
