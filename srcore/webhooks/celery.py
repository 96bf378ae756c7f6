"""The Celery dispatcher: fan-out and deliveries as Celery tasks on the configured broker.

Run a service's workers and its sweep with::

    SRCORE_SERVICE=todo SRCORE_CONFIG=/etc/srcore/config.ini \\
        celery -A srcore.webhooks.celery worker --beat --loglevel info

(one ``--beat`` per service; more workers without it) under a supervisor that restarts
it (systemd ``Restart=always``): a Celery worker may exit when its broker goes away. Or
build the Celery app yourself with :func:`make_celery`. Each service has its own queue,
``srcore-webhooks.<service>``, so many services may share one broker.

The broker only carries nudges; the database is the record. A commit that emitted queues
one ``process(outbox_id)`` message, unless :attr:`CeleryOptions.nudge_slots` messages are
in flight already (:mod:`srcore.webhooks.nudges`: their tasks will see the row). The task
drains the outbox: it claims waiting rows a batch at a time (``SKIP LOCKED`` on
PostgreSQL), fans each batch out with :func:`~srcore.webhooks.fanout.fan_out_batch` and
delivers its deliveries right there with :func:`~srcore.webhooks.delivery.deliver_batch`,
the function the local worker calls (requests on a small thread pool, recorded in one
transaction), until no row waits. So a burst of commits costs a few messages, not one
each. Retries are not Celery retries: ``deliver_batch`` writes each failed delivery's
``next_attempt_at``, and the periodic ``sweep`` task queues the due ones, a
``deliver_batch`` message per batch, and every outbox row still not fanned out once its
message has had time to arrive. ``deliver(delivery_id)`` (one attempt) carries manual
redeliveries; ``fan_out(outbox_id)`` remains for messages queued by earlier versions.
So a lost message, a dead broker or a killed worker only delays a delivery; tasks are
acknowledged late, one message is reserved at a time, and a message that comes twice
finds its rows claimed, delivered or not yet due, and does nothing.

Rows are claimed through ``claimed_until``: queuing a row leases it for
:attr:`CeleryOptions.queue_lease` (the sweep leaves it alone meanwhile); the task that
runs it extends the lease past the longest possible attempt, so a duplicate message
cannot send it a second time while it is in flight.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, exists, or_, select, update
from sqlalchemy.orm import Session, aliased

from srcore.db import utcnow
from srcore.webhooks.models import Delivery, DeliveryStatus, OutboxRow
from srcore.webhooks.nudges import NudgeSlots, supports_slots

if TYPE_CHECKING:
    from celery import Celery
    from flask import Flask

    from srcore.webhooks.delivery import DeliveryResult, WebhookSettings
    from srcore.webhooks.sender import Sender
    from srcore.webhooks.ssrf import AddressPolicy

__all__ = [
    "DELIVER",
    "DELIVER_BATCH",
    "FAN_OUT",
    "PROCESS",
    "PRUNE",
    "SWEEP",
    "CeleryDispatcher",
    "CeleryOptions",
    "NoServiceError",
    "WebhookTasks",
    "celery_config",
    "default_app",
    "make_celery",
    "queue_name",
]

log = logging.getLogger("srcore.webhooks")

#: Task names; the same in every service, routed to the service's own queue.
FAN_OUT = "srcore.webhooks.fan_out"
PROCESS = "srcore.webhooks.process"
DELIVER = "srcore.webhooks.deliver"
DELIVER_BATCH = "srcore.webhooks.deliver_batch"
SWEEP = "srcore.webhooks.sweep"
PRUNE = "srcore.webhooks.prune"


@dataclass(frozen=True)
class CeleryOptions:
    """How the Celery dispatcher paces itself; the defaults suit production."""

    #: How often the sweep queues due deliveries and outbox rows whose message was lost.
    sweep_interval: timedelta = timedelta(seconds=15)
    #: How long a queued row waits for its message before the sweep queues it again.
    queue_lease: timedelta = timedelta(minutes=5)
    #: Rows one sweep queues at most; the next sweep takes the rest.
    sweep_batch: int = 1000
    #: Outbox rows one ``process`` task fans out, and deliveries it sends per batch.
    batch: int = 50
    #: How often delivery-log entries older than ``webhook-log-retention`` are deleted.
    prune_interval: timedelta = timedelta(hours=1)
    #: How long the broker keeps a reserved, unacknowledged message from other workers.
    visibility_timeout: timedelta = timedelta(minutes=10)
    #: How long a running task keeps its row beyond its longest possible attempt.
    work_margin: timedelta = timedelta(seconds=30)
    #: How long publishing a message may take before it is left to the sweep.
    publish_timeout: timedelta = timedelta(seconds=2)
    #: How many ``process`` messages may be in flight at once (0: one per commit; None:
    #: ``[global] webhook-celery-slots``). A commit finding them all in flight sends
    #: none: a task draining the outbox takes its row (:mod:`srcore.webhooks.nudges`).
    #: Needs a Redis broker.
    nudge_slots: int | None = None
    #: How long a slot stays held when its message never runs (lost, worker killed).
    nudge_lease: timedelta = timedelta(seconds=60)
    #: How long one ``process`` task drains before it hands on to a new message.
    drain_time: timedelta = timedelta(seconds=60)
    #: Extra Celery settings, applied last.
    celery: dict[str, Any] = field(default_factory=dict)


def queue_name(service_id: str) -> str:
    """The broker queue of *service_id*'s webhook tasks."""
    return f"srcore-webhooks.{service_id}"


def celery_config(broker: str, service_id: str, options: CeleryOptions) -> dict[str, Any]:
    """The Celery settings of a service's webhook app (plain values, no IO)."""
    publish = options.publish_timeout.total_seconds()
    config: dict[str, Any] = {
        "broker_url": broker,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": publish,
        "broker_transport_options": {
            "visibility_timeout": int(options.visibility_timeout.total_seconds()),
            "socket_connect_timeout": publish,
            "socket_timeout": max(publish, 5.0),
        },
        "task_default_queue": queue_name(service_id),
        # A killed worker's reserved message goes back to the queue: acknowledged only
        # after the task ran, one message reserved per process at a time.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 1,
            "interval_start": 0,
            "interval_step": publish / 2,
            "interval_max": publish / 2,
        },
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "timezone": "UTC",
        "enable_utc": True,
        "beat_schedule": {
            "srcore-webhooks-sweep": {
                "task": SWEEP,
                "schedule": options.sweep_interval.total_seconds(),
                "options": {"queue": queue_name(service_id), "expires": _expiry(options)},
            },
            "srcore-webhooks-prune": {
                "task": PRUNE,
                "schedule": options.prune_interval.total_seconds(),
                "options": {"queue": queue_name(service_id)},
            },
        },
    }
    config.update(options.celery)
    return config


def _expiry(options: CeleryOptions) -> float:
    # A sweep that waited longer than its interval is stale: the next one is on its way.
    return max(options.sweep_interval.total_seconds(), 1.0)


Enqueue = Callable[[str, Sequence[Any]], None]


class WebhookTasks:
    """What the tasks do, apart from Celery: claim a row, call the shared function, queue.

    *enqueue(task_name, args)* sends one message; it may raise (broker down), which is
    logged and left to the sweep. *slots* coalesce nudges (None: a message per commit).
    One keep-alive HTTP session is kept per process.
    """

    def __init__(
        self,
        app: Flask,
        *,
        enqueue: Enqueue,
        options: CeleryOptions | None = None,
        settings: WebhookSettings | None = None,
        policy: AddressPolicy | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        slots: NudgeSlots | None = None,
    ) -> None:
        from srcore.webhooks.delivery import policy_for, settings_for

        self.app = app
        self.enqueue = enqueue
        self.slots = slots
        self.options = options or CeleryOptions()
        self.settings = settings or settings_for(app)
        self.policy = policy or policy_for(app)
        self.clock = clock
        self.rng = rng or random.Random()
        self._prepared_pid = 0
        self._sessions: Sender | None = None
        self._trusted_sessions: Sender | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        #: Outbox rows this process fanned out (their own messages then cost no query).
        self._done: dict[int, None] = {}

    @property
    def work_lease(self) -> timedelta:
        """How long a running task holds its row: past the longest attempt it can make."""
        return self.batch_lease(1)

    def batch_lease(self, count: int) -> timedelta:
        """How long a task delivering *count* rows on its thread pool holds them."""
        attempt = self.settings.connect_timeout + self.settings.timeout
        rounds = -(-max(count, 1) // max(self.settings.concurrency, 1))
        return self.options.queue_lease + attempt * rounds + self.options.work_margin

    def pool(self) -> tuple[Sender, Sender, ThreadPoolExecutor | None]:
        """This process's senders, guarded and trusted (for trusted subscriptions only),
        and thread pool (rebuilt after a fork)."""
        if (
            self._sessions is None
            or self._trusted_sessions is None
            or self._pool_pid != os.getpid()
        ):
            from srcore.webhooks.delivery import sender_for

            self._sessions = sender_for(self.policy, self.settings)
            self._trusted_sessions = sender_for(self.policy, self.settings, trusted=True)
            self._executor = None
            if self.settings.concurrency > 1:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.settings.concurrency, thread_name_prefix="srcore-webhooks"
                )
            self._pool_pid = os.getpid()
        return self._sessions, self._trusted_sessions, self._executor

    def http(self) -> Sender:
        """This process's sender (a forked child builds its own)."""
        return self.pool()[0]

    def trusted_http(self) -> Sender:
        """This process's sender for trusted (first-party) subscriptions: no address check."""
        return self.pool()[1]

    def prepare(self, session: Session) -> None:
        """Run the service's ``webhook_prepare`` hooks once per process (until they pass)."""
        if self._prepared_pid == os.getpid():
            return
        for hook in self.app.extensions["srcore"].webhook_prepare:
            hook(session)
        self._prepared_pid = os.getpid()

    def after_fork(self) -> None:
        """Drop what a forked worker process must not share with its parent."""
        self._sessions = None
        self._trusted_sessions = None
        self._executor = None
        self._done = {}
        self.app.extensions["srcore"].db.engine.dispose(close=False)

    def _session(self) -> Session:
        session: Session = self.app.extensions["srcore"].db.session()
        return session

    def _send(self, task: str, ids: Sequence[int]) -> int:
        sent = 0
        for row_id in ids:
            try:
                self.enqueue(task, [row_id])
            except Exception as exc:  # the row stays leased; the sweep queues it again
                log.warning("could not queue %s(%d), left to the sweep: %s", task, row_id, exc)
                break
            sent += 1
        return sent

    def _send_chunks(
        self,
        task: str,
        ids: Sequence[int],
        size: int,
        args: Callable[[list[int]], list[Any]],
    ) -> int:
        """Queue *task* once per *size* ids; returns how many ids their messages cover."""
        sent = 0
        for start in range(0, len(ids), size):
            chunk = list(ids[start : start + size])
            try:
                self.enqueue(task, args(chunk))
            except Exception as exc:  # the rows stay leased; the sweep queues them again
                log.warning(
                    "could not queue %s for %d rows, left to the sweep: %s", task, len(chunk), exc
                )
                break
            sent += len(chunk)
        return sent

    # -- fan-out -------------------------------------------------------------------------

    def fan_out(self, outbox_id: int) -> list[int]:
        """Fan outbox row *outbox_id* out and queue its deliveries; returns the queued ids."""
        from srcore.webhooks.fanout import fan_out

        st = self.app.extensions["srcore"]
        with self.app.app_context(), self._session() as session:
            self.prepare(session)
            now = self.clock()
            claimed = session.execute(
                update(OutboxRow)
                .where(
                    OutboxRow.id == outbox_id,
                    OutboxRow.fanned_out_at.is_(None),
                    or_(
                        OutboxRow.claimed_until.is_(None),
                        OutboxRow.claimed_until <= now + self.options.queue_lease,
                    ),
                )
                .values(claimed_until=now + self.work_lease)
                .execution_options(synchronize_session=False)
            )
            session.commit()
            if not _rowcount(claimed):
                log.debug("outbox row %d: fanned out already or in progress", outbox_id)
                return []
            new = fan_out(
                session,
                outbox_id,
                manifest=st.manifest,
                now=now,
            )
            if not new:
                return []
            leased = self._lease_deliveries(session, new, self.clock())
        sent = self._send(DELIVER, leased)
        log.debug("outbox row %d: %d deliveries, %d queued", outbox_id, len(new), sent)
        return leased[:sent]

    def _lease_deliveries(
        self, session: Session, ids: Sequence[int], now: datetime, lease: timedelta | None = None
    ) -> list[int]:
        until = now + (lease if lease is not None else self.options.queue_lease)
        # In event order: not while an earlier event's delivery to the same subscription,
        # other than those leased here together, waits for its first attempt.
        earlier = aliased(Delivery)
        waiting = exists().where(
            earlier.subscription_id == Delivery.subscription_id,
            earlier.outbox_id < Delivery.outbox_id,
            earlier.status == DeliveryStatus.pending.value,
            earlier.attempts == 0,
            earlier.id.not_in(list(ids)),
        )
        leased = list(
            session.scalars(
                update(Delivery)
                .where(
                    Delivery.id.in_(ids),
                    Delivery.status == DeliveryStatus.pending.value,
                    or_(Delivery.claimed_until.is_(None), Delivery.claimed_until <= now),
                    ~waiting,
                )
                .values(claimed_until=until)
                .returning(Delivery.id)
                .execution_options(synchronize_session=False)
            )
        )
        session.commit()
        return sorted(leased)

    # -- fan-out and delivery in one task -------------------------------------------------

    def nudge(self, outbox_id: int) -> bool:
        """Queue ``process`` for committed row *outbox_id*, unless enough tasks are in
        flight to drain it already; returns whether a message was sent.

        When Redis (the broker) cannot be reached, or the message cannot be sent, this
        raises: the caller logs it and the sweep queues the row later.
        """
        slot: str | None = None
        if self.slots is not None:
            slot = self.slots.acquire()
            if slot is None:
                return False
        try:
            self.enqueue(PROCESS, [outbox_id] if slot is None else [outbox_id, slot])
        except Exception:
            if slot is not None:
                self._release(slot)
            raise
        return True

    def _release(self, slot: str) -> None:
        assert self.slots is not None
        try:
            self.slots.release(slot)
        except Exception as exc:  # it expires after its lease
            log.warning("could not release nudge slot %s: %s", slot, exc)

    def process(self, outbox_id: int, slot: str | None = None) -> int:
        """Fan out row *outbox_id* and every other waiting row, in batches, delivering
        what each batch makes; returns the deliveries attempted.

        A message that holds a nudge *slot* gives it back, then drains once more, so a
        row whose commit found every slot taken is never left behind. One message
        drains for at most :attr:`CeleryOptions.drain_time`, then queues its successor.
        """
        if slot is None and outbox_id in self._done:
            log.debug("outbox row %d: fanned out by this process already", outbox_id)
            return 0
        deadline = self.clock() + self.options.drain_time
        attempted, drained = self._drain(outbox_id or None, deadline)
        if drained and slot is not None:
            self._release(slot)
            more, drained = self._drain(None, deadline)
            attempted += more
            slot = None
        if not drained:
            self._hand_on(slot)
        return attempted

    def _hand_on(self, slot: str | None) -> None:
        """Queue the next ``process`` message of a drain that ran out of time."""
        if slot is not None and self.slots is not None:
            try:
                self.slots.renew(slot)
            except Exception as exc:
                log.warning("could not renew nudge slot %s: %s", slot, exc)
        try:
            self.enqueue(PROCESS, [0] if slot is None else [0, slot])
        except Exception as exc:  # the rows stay unclaimed; the sweep queues them
            log.warning("could not queue the rest of a drain, left to the sweep: %s", exc)

    def _drain(self, first: int | None, deadline: datetime) -> tuple[int, bool]:
        """Process batches until no row waits (True) or *deadline* passes (False)."""
        attempted = 0
        while True:
            done, claimed = self._process_batch(first)
            first = None
            attempted += done
            if not claimed:
                return attempted, True
            if self.clock() >= deadline:
                return attempted, False

    def _process_batch(self, first: int | None) -> tuple[int, bool]:
        """Claim and process one batch (row *first* and others); (attempted, claimed)."""
        from srcore.webhooks.fanout import fan_out_batch

        st = self.app.extensions["srcore"]
        batch = max(self.options.batch, 1)
        attempted = 0
        with self.app.app_context(), self._session() as session:
            self.prepare(session)
            now = self.clock()
            ids = self._claim_batch(session, first, now, batch)
            if not ids:
                return 0, False
            claimed: list[int] = []
            new = fan_out_batch(
                session,
                ids,
                manifest=st.manifest,
                now=now,
                claim_first=batch,
                claimed_until=now + self.batch_lease(batch),
                claimed_ids=claimed,
            )
            self._remember(ids)
            attempted += self._deliver(session, claimed)  # claimed by the fan-out
            taken = set(claimed)
            rest = [i for i in new if i not in taken]
            for start in range(0, len(rest), batch):
                chunk = rest[start : start + batch]
                leased = self._lease_deliveries(
                    session, chunk, self.clock(), self.batch_lease(len(chunk))
                )
                attempted += self._deliver(session, leased)
            if new:
                attempted += self._deliver_followers(session, new, batch)
        log.debug("outbox rows %s: %d deliveries attempted", ids, attempted)
        return attempted, True

    def _deliver_followers(self, session: Session, new: Sequence[int], batch: int) -> int:
        """Deliver what waited, in event order, behind the first attempts just made.

        A delivery created while an earlier event's delivery to its subscription waited
        for its first attempt was left unclaimed; whichever task finishes last (the one
        that made that attempt, or the one that created this delivery) finds it due here,
        without waiting for the sweep. Returns how many attempts were made.
        """
        from srcore.webhooks.worker import claim_deliveries

        subscriptions = set(
            session.scalars(
                select(Delivery.subscription_id).where(Delivery.id.in_(list(new))).distinct()
            )
        )
        session.commit()
        attempted = 0
        while subscriptions:
            ids = claim_deliveries(
                session,
                now=self.clock(),
                lease=self.batch_lease(batch),
                limit=batch,
                subscriptions=subscriptions,
            )
            if not ids:
                break
            attempted += self._deliver(session, ids)
        return attempted

    def _deliver(self, session: Session, delivery_ids: list[int]) -> int:
        """Attempt claimed *delivery_ids* on this process's pool; returns how many."""
        from srcore.webhooks.delivery import deliver_batch

        if not delivery_ids:
            return 0
        sessions, trusted_sessions, executor = self.pool()
        deliver_batch(
            session,
            delivery_ids,
            http=sessions,
            trusted_http=trusted_sessions,
            clock=self.clock,
            policy=self.policy,
            config=self.settings,
            rng=self.rng,
            executor=executor,
        )
        return len(delivery_ids)

    def _claim_batch(
        self, session: Session, first: int | None, now: datetime, batch: int
    ) -> list[int]:
        """Claim row *first* (when given and still waiting: else nothing), then other
        waiting rows up to *batch* in all. Commits."""
        claimable = and_(
            OutboxRow.fanned_out_at.is_(None),
            or_(
                OutboxRow.claimed_until.is_(None),
                OutboxRow.claimed_until <= now + self.options.queue_lease,
            ),
        )
        until = now + self.work_lease
        own: list[int] = []
        if first is not None:
            claimed = session.execute(
                update(OutboxRow)
                .where(OutboxRow.id == first, claimable)
                .values(claimed_until=until)
                .execution_options(synchronize_session=False)
            )
            if not _rowcount(claimed):
                session.commit()
                return []
            own = [first]
        others: list[int] = []
        if batch > len(own):
            query = select(OutboxRow.id).where(claimable).order_by(OutboxRow.id)
            if first is not None:
                query = query.where(OutboxRow.id != first)
            query = query.limit(batch - len(own))
            if self._locking(session):
                query = query.with_for_update(skip_locked=True)
            found = list(session.scalars(query))
            if found:
                others = list(
                    session.scalars(
                        update(OutboxRow)
                        .where(OutboxRow.id.in_(found), claimable)
                        .values(claimed_until=until)
                        .returning(OutboxRow.id)
                        .execution_options(synchronize_session=False)
                    )
                )
        session.commit()
        return sorted([*own, *others])

    def _remember(self, ids: Sequence[int]) -> None:
        for row_id in ids:
            self._done[row_id] = None
        while len(self._done) > _REMEMBERED:
            del self._done[next(iter(self._done))]

    # -- delivery ------------------------------------------------------------------------

    def deliver(self, delivery_id: int) -> DeliveryResult | None:
        """Make the due attempt of *delivery_id*; None when there is nothing to do now."""
        from srcore.webhooks.delivery import deliver_one

        with self.app.app_context(), self._session() as session:
            now = self.clock()
            claimed = session.execute(
                update(Delivery)
                .where(
                    Delivery.id == delivery_id,
                    Delivery.status == DeliveryStatus.pending.value,
                    Delivery.next_attempt_at <= now,
                    or_(
                        Delivery.claimed_until.is_(None),
                        Delivery.claimed_until <= now + self.options.queue_lease,
                    ),
                )
                .values(claimed_until=now + self.work_lease)
                .execution_options(synchronize_session=False)
            )
            session.commit()
            if not _rowcount(claimed):
                log.debug("delivery %d: done, not due or in flight", delivery_id)
                return None
            return deliver_one(
                session,
                delivery_id,
                http=self.http(),
                clock=self.clock,
                policy=self.policy,
                config=self.settings,
                rng=self.rng,
                trusted_http=self.trusted_http(),
            )

    def deliver_many(self, delivery_ids: Sequence[int]) -> int:
        """Make the due attempts of *delivery_ids* as one batch (the sweep's retries);
        returns how many were made: the others were done, not due or in flight."""

        with self.app.app_context(), self._session() as session:
            now = self.clock()
            claimed = sorted(
                session.scalars(
                    update(Delivery)
                    .where(
                        Delivery.id.in_([int(i) for i in delivery_ids]),
                        Delivery.status == DeliveryStatus.pending.value,
                        Delivery.next_attempt_at <= now,
                        or_(
                            Delivery.claimed_until.is_(None),
                            Delivery.claimed_until <= now + self.options.queue_lease,
                        ),
                    )
                    .values(claimed_until=now + self.batch_lease(len(delivery_ids)))
                    .returning(Delivery.id)
                    .execution_options(synchronize_session=False)
                )
            )
            session.commit()
            if not claimed:
                log.debug("deliveries %s: done, not due or in flight", list(delivery_ids))
                return 0
            return self._deliver(session, claimed)

    # -- sweep ---------------------------------------------------------------------------

    def sweep(self) -> tuple[int, int]:
        """Queue due deliveries and forgotten outbox rows; returns how many of each."""
        with self._session() as session:
            now = self.clock()
            deliveries = self._claim_due(session, now)
            size = max(self.options.batch, 1)
            batches = _batches_in_order(session, deliveries, size)
            outbox = self._claim_outbox(session, now)
        # A message per batch of rows: a process task drains, taking the rest along.
        sent_outbox = self._send_chunks(PROCESS, outbox, size, lambda chunk: [chunk[0]])
        sent_deliveries = 0
        for batch in batches:
            if not self._send_chunks(DELIVER_BATCH, batch, len(batch), lambda c: [c]):
                break  # the rest stay leased; a later sweep queues them again
            sent_deliveries += len(batch)
        if sent_outbox or sent_deliveries:
            log.info(
                "sweep queued %d outbox rows and %d due deliveries", sent_outbox, sent_deliveries
            )
        return sent_outbox, sent_deliveries

    def _locking(self, session: Session) -> bool:
        return session.get_bind().dialect.name == "postgresql"

    def _claim_due(self, session: Session, now: datetime) -> list[int]:
        from srcore.webhooks.worker import claim_deliveries

        return claim_deliveries(
            session, now=now, lease=self.options.queue_lease, limit=self.options.sweep_batch
        )

    def _claim_outbox(self, session: Session, now: datetime) -> list[int]:
        from srcore.webhooks.worker import claim_rows

        forgotten = or_(
            and_(
                OutboxRow.claimed_until.is_(None),
                OutboxRow.created <= now - self.options.queue_lease,
            ),
            OutboxRow.claimed_until <= now,
        )
        return claim_rows(
            session,
            OutboxRow,
            OutboxRow.fanned_out_at.is_(None),
            forgotten,
            order_by=(OutboxRow.id,),
            limit=self.options.sweep_batch,
            until=now + self.options.queue_lease,
        )

    def prune(self) -> int:
        """Delete delivery-log entries older than ``webhook-log-retention``."""
        from srcore.webhooks.delivery import prune_log

        with self._session() as session:
            return prune_log(session, now=self.clock(), retention=self.settings.log_retention)


def _batches_in_order(session: Session, ids: Sequence[int], size: int) -> list[list[int]]:
    """*ids* (claimed in event order) cut into batches of about *size*, one message each.

    The first attempts of one subscription stay in one batch, so no two processes send
    them side by side and :func:`~srcore.webhooks.delivery.deliver_batch` sends them in
    event order; retries may go anywhere. Commits (the read).
    """
    if not ids:
        return []
    rows = session.execute(
        select(Delivery.id, Delivery.subscription_id, Delivery.attempts).where(
            Delivery.id.in_(list(ids))
        )
    ).all()
    session.commit()
    known = {row.id: row for row in rows}
    lanes: dict[int, list[int]] = {}
    units: list[list[int]] = []
    for delivery_id in ids:
        row = known.get(delivery_id)
        if row is None or row.attempts:
            units.append([delivery_id])
            continue
        lane = lanes.get(row.subscription_id)
        if lane is None:
            lane = lanes[row.subscription_id] = []
            units.append(lane)
        lane.append(delivery_id)
    batches: list[list[int]] = []
    for unit in units:
        if batches and len(batches[-1]) + len(unit) <= size:
            batches[-1].extend(unit)
        else:
            batches.append(list(unit))
    return batches


#: How many fanned-out outbox ids a process remembers.
_REMEMBERED = 100_000


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


def make_celery(
    app: Flask,
    *,
    broker: str | None = None,
    options: CeleryOptions | None = None,
    settings: WebhookSettings | None = None,
    policy: AddressPolicy | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Celery:
    """Build the Celery app of *app*'s webhooks, its tasks bound to *app*.

    *broker* defaults to ``[global] webhooks-broker``. *settings* and *policy* default to
    the config's (:func:`~srcore.webhooks.delivery.settings_for`, ``policy_for``); tests
    pass their own, and a *clock*. Builds objects only: nothing connects until a message
    is sent or a worker starts. The tasks' logic is ``celery_app.webhook_tasks``
    (:class:`WebhookTasks`).
    """
    from celery import Celery
    from celery.signals import worker_process_init

    st = app.extensions["srcore"]
    broker = broker or str(st.config.global_.get("webhooks-broker") or "")
    if not broker:
        raise ValueError(
            f"[global] webhooks-broker is empty in {st.config.path}: the Celery dispatcher "
            "needs a broker URL (the local worker needs none)"
        )
    options = options or CeleryOptions()
    queue = queue_name(st.service_id)
    celery_app = Celery(f"srcore-webhooks-{st.service_id}", set_as_current=False)
    celery_app.conf.update(celery_config(broker, st.service_id, options))

    def enqueue(task: str, args: Sequence[Any]) -> None:
        celery_app.send_task(task, args=list(args), queue=queue)

    slots = None
    wanted = options.nudge_slots
    if wanted is None:
        wanted = int(st.config.global_.get("webhook-celery-slots") or 8)
    if wanted > 0 and supports_slots(broker):
        slots = NudgeSlots.from_url(
            broker,
            st.service_id,
            timeout=options.publish_timeout.total_seconds(),
            slots=wanted,
            lease=options.nudge_lease,
        )
    tasks = WebhookTasks(
        app,
        enqueue=enqueue,
        options=options,
        settings=settings,
        policy=policy,
        clock=clock,
        slots=slots,
    )
    celery_app.webhook_tasks = tasks
    celery_app.flask_app = app

    def fan_out(outbox_id: int) -> int:
        return len(tasks.fan_out(int(outbox_id)))

    def process(outbox_id: int, slot: str | None = None) -> int:
        return tasks.process(int(outbox_id), None if slot is None else str(slot))

    def deliver(delivery_id: int) -> bool:
        result = tasks.deliver(int(delivery_id))
        return bool(result is not None and result.delivered)

    def deliver_many(delivery_ids: list[int]) -> int:
        return tasks.deliver_many([int(i) for i in delivery_ids])

    def sweep() -> list[int]:
        return list(tasks.sweep())

    def prune() -> int:
        return tasks.prune()

    tasks_by_name: tuple[tuple[str, Callable[..., Any]], ...] = (
        (PROCESS, process),
        (FAN_OUT, fan_out),
        (DELIVER, deliver),
        (DELIVER_BATCH, deliver_many),
        (SWEEP, sweep),
        (PRUNE, prune),
    )
    for name, function in tasks_by_name:
        celery_app.task(name=name, ignore_result=True)(function)
    _forked.add(tasks)
    worker_process_init.connect(_after_fork, weak=False, dispatch_uid="srcore.webhooks")
    return celery_app


#: The task sets of this process, told when Celery forks a worker process from it.
_forked: weakref.WeakSet[WebhookTasks] = weakref.WeakSet()


def _after_fork(**_kwargs: Any) -> None:
    for tasks in list(_forked):
        tasks.after_fork()


class CeleryDispatcher:
    """The dispatcher ``[global] webhooks-broker`` selects: commits become fan-out tasks.

    Built without IO; the Celery app is made on the first nudge. A broker that cannot be
    reached costs the request at most :attr:`CeleryOptions.publish_timeout` (then the
    failure is logged and the sweep queues the row later).
    """

    def __init__(self, app: Flask, *, options: CeleryOptions | None = None) -> None:
        self.app = app
        self.options = options
        self._celery: Celery | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<CeleryDispatcher {self.app.extensions['srcore'].service_id}>"

    @property
    def celery(self) -> Celery:
        """The Celery app that carries this service's tasks."""
        with self._lock:
            if self._celery is None:
                self._celery = make_celery(self.app, options=self.options)
            return self._celery

    def nudge(self, outbox_ids: Sequence[int]) -> None:
        """Queue the fan-out and delivery of newly committed outbox rows: one message
        for the commit (it drains every waiting row), none when enough are in flight."""
        if outbox_ids:
            self.celery.webhook_tasks.nudge(min(int(row_id) for row_id in outbox_ids))

    def nudge_deliveries(self, delivery_ids: Sequence[int]) -> None:
        """Queue deliveries made due by hand (manual redelivery)."""
        tasks = self.celery.webhook_tasks
        for delivery_id in delivery_ids:
            tasks.enqueue(DELIVER, [int(delivery_id)])


# -- `celery -A srcore.webhooks.celery` ---------------------------------------------------

_default: Celery | None = None
_default_lock = threading.Lock()


def _service_factory(spec: str) -> Callable[..., Flask]:
    """The app factory of *spec*: an installed service id, a package, or ``module:name``."""
    import importlib
    from importlib import metadata

    module_name, _, attribute = spec.partition(":")
    packages = {ep.name: ep.value for ep in metadata.entry_points(group="srcore.services")}
    module = importlib.import_module(packages.get(module_name, module_name))
    factory: Callable[..., Flask] = getattr(module, attribute or "create_app")
    return factory


class NoServiceError(RuntimeError, AttributeError):
    """``SRCORE_SERVICE`` is not set, so there is no app to build.

    An AttributeError too, so that looking the module over (``hasattr(module, "app")``)
    is not an error.
    """


def default_app(environ: dict[str, str] | None = None) -> Celery:
    """The Celery app of the service named by ``SRCORE_SERVICE`` (config: ``SRCORE_CONFIG``).

    ``SRCORE_SERVICE`` is an installed service's id (``todo``), or its package, or
    ``module:factory``. Built once per process, on first use.
    """
    global _default
    env = os.environ if environ is None else environ
    with _default_lock:
        if _default is None:
            spec = env.get("SRCORE_SERVICE", "").strip()
            if not spec:
                raise NoServiceError(
                    "set SRCORE_SERVICE to the service whose webhooks this worker delivers "
                    "(e.g. SRCORE_SERVICE=todo), and SRCORE_CONFIG to its config file"
                )
            flask_app = _service_factory(spec)(config=env.get("SRCORE_CONFIG") or None)
            _default = make_celery(flask_app)
        return _default


def __getattr__(name: str) -> Any:
    # `celery -A srcore.webhooks.celery` reads the module's `app`: built only then.
    if name in ("app", "celery"):
        return default_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
