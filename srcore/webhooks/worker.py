"""The local worker: claims due rows straight from the database and delivers them.

No broker: each cycle claims outbox rows not yet fanned out and deliveries that are due,
with a lease (``claimed_until``) so that a crashed worker's rows come back after it
expires. On PostgreSQL the claim is ``SELECT ... FOR UPDATE SKIP LOCKED`` then an UPDATE of
those rows, so any number of workers share the work; on SQLite the single writer makes the
claim safe for the one worker SQLite is meant for. A claimed batch is fanned out with
:func:`~srcore.webhooks.fanout.fan_out_batch` and delivered with
:func:`~srcore.webhooks.delivery.deliver_batch` (the function the Celery tasks call too):
its requests go out on a small thread pool through one shared keep-alive sender, and
are recorded in one transaction. ``srcore worker SERVICE`` runs one until SIGTERM or
SIGINT.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from srcore.db import utcnow
from srcore.webhooks.delivery import (
    WebhookSettings,
    deliver_batch,
    policy_for,
    prune_log,
    sender_for,
    settings_for,
)
from srcore.webhooks.dispatch import LocalDispatcher
from srcore.webhooks.fanout import fan_out_batch
from srcore.webhooks.models import Delivery, DeliveryStatus, OutboxRow
from srcore.webhooks.sender import Sender
from srcore.webhooks.ssrf import AddressPolicy

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "LocalWorker",
    "claim_deliveries",
    "claim_outbox",
    "claim_rows",
    "first_attempts_in_order",
    "poll_interval_for",
]

log = logging.getLogger("srcore.webhooks.worker")

#: A claimed row comes back to the pool if its worker has not finished with it by then.
DEFAULT_LEASE = timedelta(minutes=5)
#: How often the delivery log is pruned.
PRUNE_EVERY = timedelta(hours=1)


def claim_rows(
    session: Session,
    model: type[OutboxRow] | type[Delivery],
    *conditions: Any,
    order_by: tuple[Any, ...],
    limit: int,
    until: datetime,
) -> list[int]:
    """Lease up to *limit* rows of *model* matching *conditions*; returns their ids. Commits.

    Shared by the local worker and the Celery sweep, so both claim rows the same way.

    Two statements in one transaction: the locked SELECT, then the UPDATE of exactly those
    rows (PostgreSQL may run an IN (... LIMIT n FOR UPDATE) subquery more than once).
    """
    due = (
        select(model.id)
        .where(*conditions)
        .order_by(*order_by)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = sorted(session.scalars(due))
    if ids:
        session.execute(update(model).where(model.id.in_(ids)).values(claimed_until=until))
    session.commit()
    return ids


def claim_outbox(session: Session, *, now: datetime, lease: timedelta, limit: int) -> list[int]:
    """Claim up to *limit* outbox rows not yet fanned out; returns their ids. Commits."""
    free = or_(OutboxRow.claimed_until.is_(None), OutboxRow.claimed_until < now)
    return claim_rows(
        session,
        OutboxRow,
        OutboxRow.fanned_out_at.is_(None),
        free,
        order_by=(OutboxRow.id,),
        limit=limit,
        until=now + lease,
    )


def first_attempts_in_order(now: datetime) -> ColumnElement[bool]:
    """True for a delivery no earlier event's first attempt to its subscription holds up.

    A subscription's receiver gets its events in order as far as first attempts go: a
    delivery waits while a delivery of an earlier event to the same subscription has not
    had its first attempt and is in flight (claimed until after *now*) or not yet due.
    Earlier ones that are due and free are claimed first in the same statement (claims
    go in event order: oldest event first), and :func:`~srcore.webhooks.delivery.deliver_batch`
    sends one subscription's deliveries one after the other in event order. Retries do
    not hold later events up: an event that failed once waits for its retry alone.
    """
    earlier = aliased(Delivery)
    return ~exists().where(
        earlier.subscription_id == Delivery.subscription_id,
        earlier.outbox_id < Delivery.outbox_id,
        earlier.status == DeliveryStatus.pending.value,
        earlier.attempts == 0,
        or_(earlier.claimed_until >= now, earlier.next_attempt_at > now),
    )


def claim_deliveries(
    session: Session,
    *,
    now: datetime,
    lease: timedelta,
    limit: int,
    subscriptions: Collection[int] | None = None,
) -> list[int]:
    """Claim up to *limit* pending deliveries that are due (of *subscriptions* only, when
    given); returns their ids. Commits.

    A delivery is not claimed while an earlier event's first attempt to its subscription
    is in flight (:func:`first_attempts_in_order`).
    """
    free = or_(Delivery.claimed_until.is_(None), Delivery.claimed_until < now)
    only = () if subscriptions is None else (Delivery.subscription_id.in_(sorted(subscriptions)),)
    return claim_rows(
        session,
        Delivery,
        Delivery.status == DeliveryStatus.pending.value,
        Delivery.next_attempt_at <= now,
        free,
        first_attempts_in_order(now),
        *only,
        order_by=(Delivery.outbox_id, Delivery.id),
        limit=limit,
        until=now + lease,
    )


def poll_interval_for(app: Flask) -> float:
    """Seconds between polls of an idle worker: ``[global] webhook-poll-interval``."""
    try:
        value = app.extensions["srcore"].config.global_["webhook-poll-interval"]
    except KeyError:
        value = None
    seconds = value.total_seconds() if isinstance(value, timedelta) else 1.0
    return seconds if seconds > 0 else 1.0


class LocalWorker:
    """Fans out and delivers one service's webhooks from its database."""

    def __init__(
        self,
        app: Flask,
        *,
        http: Sender | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        settings: WebhookSettings | None = None,
        policy: AddressPolicy | None = None,
        lease: timedelta = DEFAULT_LEASE,
        batch: int = 50,
        poll_interval: float | None = None,
        trusted_http: Sender | None = None,
    ) -> None:
        self.app = app
        self.state: Any = app.extensions["srcore"]
        self.policy = policy if policy is not None else policy_for(app)
        self.settings = settings if settings is not None else settings_for(app)
        #: The sender the pool's threads share (injected, or one with the policy inside).
        self.http: Sender = http if http is not None else sender_for(self.policy, self.settings)
        self.clock = clock
        self.rng = rng or random.Random()
        self.lease = lease
        self.batch = batch
        self.poll_interval = poll_interval if poll_interval is not None else poll_interval_for(app)
        #: Trusted subscriptions' deliveries: the same, without the address check.
        self.trusted_http: Sender = (
            trusted_http
            if trusted_http is not None
            else sender_for(self.policy, self.settings, trusted=True)
        )
        self._last_prune: datetime | None = None
        self._prepared = False
        self._executor: ThreadPoolExecutor | None = None
        #: Set by :meth:`run`'s caller to stop: no request of a batch starts after it.
        self._stop: threading.Event | None = None

    def __repr__(self) -> str:
        return f"<LocalWorker {self.state.service_id}>"

    def prepare(self, session: Session) -> None:
        """Run the service's ``webhook_prepare`` hooks, once per worker (until they pass)."""
        if self._prepared:
            return
        with self.app.app_context():
            for hook in self.state.webhook_prepare:
                hook(session)
        self._prepared = True

    def executor(self) -> ThreadPoolExecutor | None:
        """The thread pool a batch's requests go out on (None: one at a time)."""
        if self.settings.concurrency <= 1:
            return None
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.settings.concurrency, thread_name_prefix="srcore-webhooks"
            )
        return self._executor

    def run_once(self) -> int:
        """One cycle: fan out new events, then deliver what is due. Returns rows handled."""
        st = self.state
        handled = 0
        with st.db.session() as session:
            self.prepare(session)
            outbox_ids = claim_outbox(session, now=self.clock(), lease=self.lease, limit=self.batch)
            if outbox_ids:
                now = self.clock()
                claimed: list[int] = []
                fan_out_batch(
                    session,
                    outbox_ids,
                    manifest=st.manifest,
                    now=now,
                    claim_first=self.batch,
                    claimed_until=now + self.lease,
                    claimed_ids=claimed,
                )
                handled += len(outbox_ids)
                handled += self._deliver(session, claimed)  # claimed by the fan-out
            delivery_ids = claim_deliveries(
                session, now=self.clock(), lease=self.lease, limit=self.batch
            )
            handled += self._deliver(session, delivery_ids)
            self._maybe_prune(session)
        return handled

    def _deliver(self, session: Session, delivery_ids: list[int]) -> int:
        if not delivery_ids:
            return 0
        try:
            deliver_batch(
                session,
                delivery_ids,
                http=self.http,
                trusted_http=self.trusted_http,
                clock=self.clock,
                policy=self.policy,
                config=self.settings,
                rng=self.rng,
                executor=self.executor(),
                stop=self._stop,
            )
        except Exception:  # the batch's leases expire and it is tried again
            session.rollback()
            log.exception("a batch of %d deliveries failed unexpectedly", len(delivery_ids))
        return len(delivery_ids)

    def _maybe_prune(self, session: Session) -> None:
        now = self.clock()
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        removed = prune_log(session, now=now, retention=self.settings.log_retention)
        if removed:
            log.info(
                "pruned %d delivery log entries older than %s", removed, self.settings.log_retention
            )

    def _wakeup(self) -> threading.Event | None:
        dispatcher = self.state.webhook_dispatcher
        return dispatcher.wakeup if isinstance(dispatcher, LocalDispatcher) else None

    def run(self, stop: threading.Event, *, max_cycles: int | None = None) -> None:
        """Work until *stop* is set (or *max_cycles* cycles ran), sleeping when idle.

        Once *stop* is set no further request starts: those in flight end within
        ``webhook-timeout``, and the rest of their batch is left due for the next worker.
        """
        self._stop = stop
        wakeup = self._wakeup()
        cycles = 0
        while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
            cycles += 1
            try:
                handled = self.run_once()
            except Exception:  # the database may be restarting: wait and try again
                log.exception("webhook worker cycle failed")
                handled = 0
            if handled or stop.is_set():
                continue
            if wakeup is not None:
                wakeup.wait(self.poll_interval)
                wakeup.clear()
            else:
                stop.wait(self.poll_interval)

    def close(self, *, wait: bool = True) -> None:
        """Stop the thread pool and close the HTTP sessions' pooled connections.

        Without *wait*, requests still in flight are not waited for.
        """
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)
            self._executor = None
        self.http.close()
        self.trusted_http.close()
