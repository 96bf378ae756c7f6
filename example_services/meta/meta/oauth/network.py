"""meta's events to the network's services, over srcore's webhooks.

Revocations (``revocation:issued``) and profile changes (``profile:updated``) are written
to srcore's outbox in the transaction of the change, so a crash after the commit delays
them but never drops them; meta's webhook worker (``srcore worker meta``) fans them out
and delivers them, retrying, to every configured service's ``/_srcore/events``. Each
service also pulls ``/oauth/revocations`` as a catch-up. The event names, the path and
the wire format are :mod:`srcore.identity.protocol`'s, shared with the services.

The subscriptions are meta's own, one per configured service (``owner_client`` = its
id), made to match the config file by :func:`ensure_subscriptions` before the first emit
of a process and when a worker starts, never at import or app build. Their secret is
derived from the service's OAuth client secret (:func:`srcore.webhooks.derive_secret`),
which meta and that service both have and no other service has: nothing is stored by
hand or copied, and no secret is shared across services. They are *trusted*: their URLs
are the operator's own (internal) origins, which the SSRF guard would refuse.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import event as sa_event
from sqlalchemy import select, text
from sqlalchemy.orm import Session, SessionTransaction

from srcore.identity.protocol import EVENTS_PATH, PROFILE_EVENT, REVOCATION_EVENT, parse_events

if TYPE_CHECKING:
    from flask import Flask

    from srcore.config import Config

__all__ = [
    "AUDIT_EVENT",
    "EVENTS",
    "INFO_KEY",
    "PROFILE_EVENT",
    "REVOCATION_EVENT",
    "SCOPES",
    "Network",
    "Target",
    "ensure_subscriptions",
    "targets_from_config",
]

log = logging.getLogger("meta.oauth.network")

#: The audit log's export (:mod:`meta.audit`), for the services the operator names.
AUDIT_EVENT = "audit:recorded"
#: The events of every first-party subscription, and the scope they were declared with.
EVENTS = f"{REVOCATION_EVENT} {PROFILE_EVENT}"
SCOPES = "meta/profile:RO"
#: How long the secret derived from a replaced client secret still signs (both sign).
SECRET_OVERLAP = timedelta(hours=1)
_LOCK_KEY = zlib.crc32(b"meta first-party webhook subscriptions")
_ENSURED = "meta_network_ensured"
#: The key of the :class:`Network` in the ``info`` of every session of meta's database.
INFO_KEY = "meta.oauth.network"
#: The ``info`` key of the revocations a session's transaction emitted and has not applied.
_PENDING = "meta.oauth.network.pending"
#: A revocation waiting for its transaction's commit: the savepoint it was emitted in (None:
#: the transaction itself), the app whose subscriptions it is applied to, and its events.
_Pending = tuple[SessionTransaction | None, "Flask", list[Any]]


@dataclass(frozen=True)
class Target:
    """One configured service and how meta's events reach it."""

    service_id: str
    url: str
    secret: str
    #: The events its subscription lists (``audit:recorded`` too for the services named
    #: in ``[meta] audit-subscribers``).
    events: str = EVENTS


def targets_from_config(config: Config, *, audit_subscribers: Sequence[str] = ()) -> list[Target]:
    """Every configured service but meta that has an OAuth client secret to derive from;
    those in *audit_subscribers* (``[meta] audit-subscribers``) also get audit entries.
    """
    from srcore.signatures import derive_secret

    audit = set(audit_subscribers)
    found: list[Target] = []
    for service_id in config.services:
        if service_id == "meta":
            continue
        section = config.section(service_id)
        client_secret = str(section.get("oauth-client-secret") or "")
        if not client_secret:
            log.warning(
                "[%s] has no oauth-client-secret: it gets no revocation events (pull only)",
                service_id,
            )
            continue
        base = str(section.get("internal-origin") or section["origin"]).rstrip("/")
        events = f"{EVENTS} {AUDIT_EVENT}" if service_id in audit else EVENTS
        found.append(
            Target(
                service_id,
                base + EVENTS_PATH,
                derive_secret(client_secret, service_id),
                events=events,
            )
        )
    return found


def ensure_subscriptions(session: Session, targets: Sequence[Target], *, now: datetime) -> None:
    """Make meta's trusted subscriptions match *targets*, in *session*'s transaction.

    Idempotent: a missing one is created, one that differs is updated (a new secret keeps
    the old one signing for :data:`SECRET_OVERLAP`), a disabled one is enabled again, and
    trusted subscriptions of services no longer configured (or duplicates) are disabled.
    Flushes, does not commit; what changed is logged once the transaction commits.
    """
    from srcore.oncommit import after_commit
    from srcore.webhooks.models import Subscription

    if session.get_bind().dialect.name == "postgresql":
        # Two processes ensuring at once must not both create a service's subscription.
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
    wanted = {t.service_id: t for t in targets}
    rows = session.scalars(
        select(Subscription).where(Subscription.trusted.is_(True)).order_by(Subscription.id)
    ).all()
    kept: dict[str, Subscription] = {}
    done: list[str] = []  # what changed, logged only if it is committed
    for row in rows:
        client = row.owner_client or ""
        if client in wanted and client not in kept:
            kept[client] = row
        elif row.enabled:
            row.enabled = False
            row.disabled_reason = "no longer a configured service"
            done.append(f"disabled meta's subscription {row.id} of {client!r}: not configured")
    for target in targets:
        row = kept.get(target.service_id)
        if row is None:
            session.add(
                Subscription(
                    owner_id=None,
                    owner_client=target.service_id,
                    url=target.url,
                    events=target.events,
                    resource=None,
                    scopes=SCOPES,
                    secret=target.secret,
                    enabled=True,
                    trusted=True,
                    created=now,
                    updated=now,
                )
            )
            done.append(f"subscribed {target.service_id} to meta's events at {target.url}")
            continue
        values: dict[str, Any] = {"url": target.url, "events": target.events, "scopes": SCOPES}
        changed = {k: v for k, v in values.items() if getattr(row, k) != v}
        if row.resource is not None:
            changed["resource"] = None
        if row.owner_id is not None:
            changed["owner_id"] = None
        if not row.enabled:
            changed.update(enabled=True, disabled_reason=None, failing_since=None)
        if row.secret != target.secret:
            changed.update(
                secret=target.secret,
                previous_secret=row.secret,
                previous_secret_expires=now + SECRET_OVERLAP,
            )
        for key, value in changed.items():
            setattr(row, key, value)
        if changed:
            row.updated = now
            done.append(f"updated meta's subscription of {target.service_id}: {sorted(changed)}")
    session.flush()
    if done:
        after_commit(session, _log_changes, *done)


def _log_changes(changes: list[str]) -> None:
    for change in changes:
        log.info("%s", change)


class Network:
    """The services meta sends events to; ensures the subscriptions once per process."""

    def __init__(self, targets: Sequence[Target], *, app: Flask | None = None) -> None:
        self.targets = list(targets)
        self.app = app
        self._ensured_pid: int | None = None

    def wants(self, event: str) -> bool:
        """Whether some service's subscription lists *event*."""
        return any(event in target.events.split() for target in self.targets)

    @classmethod
    def of(cls, session: Session) -> Network:
        """The network of the app whose database *session* talks to."""
        network = session.info.get(INFO_KEY)
        if not isinstance(network, Network):
            from flask import current_app

            network = current_app.extensions["meta.oauth"].network
        assert isinstance(network, Network)
        return network

    def ensure(self, session: Session) -> None:
        """Ensure the subscriptions in *session*'s transaction unless this process did."""
        if self._ensured_pid == os.getpid() or session.info.get(_ENSURED):
            return
        from srcore.db import utcnow

        ensure_subscriptions(session, self.targets, now=utcnow())
        session.info[_ENSURED] = self

    def committed(self, session: Session) -> None:
        """After a commit: the subscriptions ensured in *session* are there for good."""
        if session.info.pop(_ENSURED, None) is self:
            self._ensured_pid = os.getpid()

    def rolled_back(self, session: Session) -> None:
        session.info.pop(_ENSURED, None)

    def prepare(self, session: Session) -> None:
        """A webhook worker's start: ensure in a transaction of its own and commit it."""
        from srcore.db import utcnow

        ensure_subscriptions(session, self.targets, now=utcnow())
        session.commit()
        self._ensured_pid = os.getpid()

    def emit(
        self,
        session: Session,
        event: str,
        data: Mapping[str, Any],
        *,
        owner_id: int | None = None,
    ) -> None:
        """Write *event* to srcore's outbox in *session*'s transaction; *owner_id* is the
        account it is about, for events whose audience is their owner."""
        from flask import current_app, has_app_context

        from srcore.webhooks import emit

        self.ensure(session)
        app = self.app
        if app is None or (has_app_context() and current_app._get_current_object() is app):  # type: ignore[attr-defined]
            emit(event, data, owner_id=owner_id, session=session)
            self._apply_at_commit(session, event, data)
            return
        with app.app_context():  # a hook called outside a request (scripts, tests)
            emit(event, data, owner_id=owner_id, session=session)
            self._apply_at_commit(session, event, data)

    def _apply_at_commit(self, session: Session, event: str, data: Mapping[str, Any]) -> None:
        """meta's own webhook subscriptions follow its revocations as every service's do
        on receipt (:mod:`srcore.webhooks.accounts`), in the revoking transaction: a
        suspended account's receive nothing, a revoked account's are disabled.

        They are applied once, just before the transaction commits, all in one batch: a
        transaction emitting several (a deleted client: the tokens of each of its users,
        then the client) then locks every subscription they touch in id order from the
        start, as the webhook worker does. Applied as each was emitted, it would lock one
        user's subscriptions and later another's with a lower id, and could deadlock with
        a worker holding the second while it waits for the first.
        """
        if event != REVOCATION_EVENT:
            return
        from flask import current_app

        real: Session = getattr(session, "_get_current_object", lambda: session)()  # a proxy
        app = self.app or current_app._get_current_object()  # type: ignore[attr-defined]
        pending: list[_Pending] = real.info.setdefault(_PENDING, [])
        pending.append((real.get_nested_transaction(), app, parse_events(data.get("events"))))
        if not sa_event.contains(real, "before_commit", _apply_pending):
            sa_event.listen(real, "before_commit", _apply_pending)
            sa_event.listen(real, "after_commit", _committed)
            sa_event.listen(real, "after_transaction_end", _ended)


def _batches(pending: list[_Pending]) -> dict[Flask, list[Any]]:
    batches: dict[Flask, list[Any]] = {}
    for _, app, events in pending:
        batches.setdefault(app, []).extend(events)
    return batches


def _apply_pending(session: Session) -> None:
    """Before a commit: apply the transaction's revocations, in one batch, in it.

    A savepoint's release leaves them for the transaction's commit. If applying fails, they
    stay pending: the transaction cannot commit without them, and its rollback drops them.
    """
    from srcore.webhooks.accounts import apply_with_change

    if session.get_nested_transaction() is not None:  # a savepoint is released
        return
    pending: list[_Pending] = session.info.pop(_PENDING, [])
    try:
        for app, events in _batches(pending).items():
            apply_with_change(app, session, events)
    except BaseException:
        session.info.setdefault(_PENDING, [])[:0] = pending
        raise


def _committed(session: Session) -> None:
    """A savepoint's revocations now wait for the savepoint (or transaction) around it.

    Once the transaction has committed, none should be left: those emitted too late for
    :func:`_apply_pending` (while committing, or in a savepoint still open when the
    transaction itself was committed) are applied in a transaction of their own rather than
    forgotten.
    """
    savepoint = session.get_nested_transaction()
    pending: list[_Pending] = session.info.get(_PENDING, [])
    if savepoint is not None:
        parent = savepoint.parent
        outer = parent if parent is not None and parent.nested else None
        pending[:] = [(outer if t is savepoint else t, app, e) for t, app, e in pending]
        return
    from srcore.webhooks.accounts import after_revocations

    late = session.info.pop(_PENDING, [])
    for app, events in _batches(late).items():
        log.warning("%d revocation(s) left pending at the commit are applied after it", len(events))
        try:
            after_revocations(app, events)
        except Exception:
            log.exception("meta's webhooks could not follow %d revocation(s)", len(events))


def _ended(session: Session, transaction: SessionTransaction) -> None:
    """A rolled back savepoint's revocations were never emitted; a transaction's end drops
    all that are left, so none is applied at a later, unrelated commit."""
    if transaction.nested:
        pending: list[_Pending] = session.info.get(_PENDING, [])
        pending[:] = [entry for entry in pending if entry[0] is not transaction]
    elif transaction.parent is None:
        session.info.pop(_PENDING, None)
