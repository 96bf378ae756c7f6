"""The worker: the one loop that fans out, sends and records webhook deliveries.

Each step records the requests that ended, claims outbox rows and due deliveries
(:mod:`.claims`), starts the deliveries on its threads and fans the outbox rows out (the
next step claims their deliveries). A subscription's deliveries go in one *lane*, in
event order, and at most ``per_host`` lanes go to one receiver at once: a slow receiver
holds up only its own deliveries. ``srcore worker`` runs :meth:`Worker.run`, Celery
:meth:`Worker.drain`.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from sqlalchemy.orm import Session

from srcore.db import utcnow
from srcore.outbound.policy import AddressPolicy
from srcore.outbound.sender import Sender
from srcore.webhooks.claims import LANE, Job, claim_deliveries, claim_outbox, load_jobs
from srcore.webhooks.delivery import prune_log, record, send, sender_for
from srcore.webhooks.fanout import fan_out
from srcore.webhooks.outbox import LocalDispatcher, webhooks_state
from srcore.webhooks.settings import WebhookSettings, policy_for, settings_for

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["Worker", "poll_interval_for"]

log = logging.getLogger("srcore.webhooks.worker")
T = TypeVar("T")

#: A claimed row comes back to the pool if its worker has not finished with it by then.
DEFAULT_LEASE = timedelta(minutes=5)
#: A worker holds at most this many batches of deliveries claimed and not yet recorded.
HOLD_BATCHES = 8
#: How often the delivery log is pruned.
PRUNE_EVERY = timedelta(hours=1)


def poll_interval_for(app: Flask) -> float:
    """Seconds between polls of an idle worker: ``[global] webhook-poll-interval``."""
    value = app.extensions["srcore"].config.global_.get("webhook-poll-interval")
    seconds = value.total_seconds() if isinstance(value, timedelta) else 1.0
    return seconds if seconds > 0 else 1.0


def _receiver(url: str) -> str:
    """Who a URL's requests go to, for the per-receiver cap: ``host:port``."""
    try:
        parts = urlsplit(url)
        return f"{(parts.hostname or '').lower()}:{parts.port or parts.scheme}"
    except ValueError:
        return url


def _take(items: queue.SimpleQueue[T]) -> list[T]:
    """Everything in *items* now."""
    taken: list[T] = []
    while True:
        try:
            taken.append(items.get_nowait())
        except queue.Empty:
            return taken


@dataclass(eq=False)
class _Lane:
    """Claimed deliveries of one subscription, sent one after the other in event order."""

    subscription_id: int
    receiver: str
    jobs: list[Job]
    #: ``time.monotonic()`` by which the last request must have ended: the lease's end.
    must_end: float


class Worker:
    """Fans out and delivers one service's webhooks from its database.

    *http* sends with the address policy, *trusted_http* without it (the operator's own
    subscriptions). At most ``HOLD_BATCHES * batch`` deliveries are held unrecorded. The
    database is used on the thread of :meth:`run_once` alone (SQLite wants one writer);
    the pool's threads only send.
    """

    def __init__(
        self,
        app: Flask,
        *,
        http: Sender | None = None,
        trusted_http: Sender | None = None,
        clock: Callable[[], datetime] = utcnow,
        settings: WebhookSettings | None = None,
        policy: AddressPolicy | None = None,
        lease: timedelta = DEFAULT_LEASE,
        poll_interval: float | None = None,
    ) -> None:
        self.app = app
        self.state: Any = app.extensions["srcore"]
        self.policy = policy if policy is not None else policy_for(app)
        self.settings = settings if settings is not None else settings_for(app)
        if lease <= self.settings.timeout:
            raise ValueError(f"the lease ({lease}) must be longer than webhook-timeout")
        self.http: Sender = http or sender_for(self.policy, self.settings)
        self.trusted_http: Sender = trusted_http or sender_for(
            self.policy, self.settings, trusted=True
        )
        self.clock = clock
        self.rng = random.Random()
        self.lease = lease
        #: What one step claims at most.
        self.batch = max(16 * self.settings.concurrency, 256)
        self.hold = HOLD_BATCHES * self.batch
        self.poll_interval = poll_interval if poll_interval is not None else poll_interval_for(app)
        dispatcher = webhooks_state(app).dispatcher
        #: Set when there is something to do: a lane ended, a commit emitted, a stop.
        self.wake = (
            dispatcher.wakeup if isinstance(dispatcher, LocalDispatcher) else threading.Event()
        )
        self._stopping = threading.Event()
        self._pool = ThreadPoolExecutor(
            max(self.settings.concurrency, 1), thread_name_prefix="srcore-webhooks"
        )
        self._ended: queue.SimpleQueue[_Lane] = queue.SimpleQueue()
        #: Jobs sent (or given up) by the lanes, to be recorded.
        self._finished: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._running: Counter[str] = Counter()
        self._queued: dict[str, deque[_Lane]] = {}
        #: Subscriptions with a lane running or queued: not claimed for meanwhile.
        self._busy: set[int] = set()
        #: Deliveries claimed and not yet recorded.
        self._held = 0
        #: Outbox rows and deliveries the last step claimed: 0 when it only recorded.
        self._started = 0
        self._last_prune: datetime | None = None
        self._prepared = False

    def __repr__(self) -> str:
        return f"<Worker {self.state.service_id}>"

    # -- one step ----------------------------------------------------------------------

    def run_once(self) -> int:
        """One step: record ended requests, claim, start, fan out. Returns the deliveries
        recorded and outbox rows fanned out."""
        with self.state.db.session() as session:
            if not self._prepared:  # the service's hooks, once per worker (until they pass)
                with self.app.app_context():
                    for hook in webhooks_state(self.app).prepare:
                        hook(session)
                self._prepared = True
            handled = self._record_ended(session)
            if self._stopping.is_set():
                return handled
            now, claimed_at = self.clock(), time.monotonic()
            outbox_ids = claim_outbox(session, now=now, lease=self.lease, limit=self.batch)
            room = min(self.hold - self._held, self.batch)
            due: list[int] = []
            if room > 0:
                due = claim_deliveries(
                    session,
                    now=now,
                    lease=self.lease,
                    limit=room,
                    exclude=self._busy,
                    per_subscription=LANE,
                )
            lanes = self._lanes(session, due, claimed_at)
            session.commit()
            self._start(lanes)
            self._started = len(due) + len(outbox_ids)
            if outbox_ids:
                fan_out(session, outbox_ids, manifest=self.state.manifest, now=self.clock())
                handled += len(outbox_ids)
            self._maybe_prune(session)
        return handled

    def _lanes(self, session: Session, delivery_ids: list[int], claimed_at: float) -> list[_Lane]:
        """*delivery_ids* read in lanes; their last request must end a second before the
        lease counted from *claimed_at* (``time.monotonic()``), however long reading took."""
        if not delivery_ids:
            return []
        must_end = claimed_at + self.lease.total_seconds() - 1.0
        lanes: dict[int, _Lane] = {}
        for job in load_jobs(session, delivery_ids):
            lane = lanes.get(job.subscription_id)
            if lane is None:
                lane = _Lane(job.subscription_id, _receiver(job.url), [], must_end)
                lanes[job.subscription_id] = lane
            lane.jobs.append(job)
        return list(lanes.values())

    def _start(self, lanes: list[_Lane]) -> None:
        """Queue *lanes* (claimed and committed) and start those their receivers allow."""
        for lane in lanes:
            self._busy.add(lane.subscription_id)
            self._held += len(lane.jobs)
            self._queued.setdefault(lane.receiver, deque()).append(lane)
            self._start_queued(lane.receiver)

    def _start_queued(self, receiver: str) -> None:
        waiting = self._queued.get(receiver)
        while waiting and self._running[receiver] < max(self.settings.per_host, 1):
            lane = waiting.popleft()
            self._running[receiver] += 1
            self._pool.submit(self._send_lane, lane)
        if not waiting:
            self._queued.pop(receiver, None)

    def _send_lane(self, lane: _Lane) -> None:
        """On a pool thread: send the lane's requests in order; none starts once stopping,
        nor one that could outlast the lease."""
        timeout = self.settings.timeout.total_seconds()
        sent = 0
        try:
            for job in lane.jobs:
                if self._stopping.is_set() or time.monotonic() + timeout > lane.must_end:
                    break
                send(job, self.http, self.trusted_http, self.clock, self.settings)
                self._finished.put(job)  # recorded at the next step, lane over or not
                sent += 1
        finally:
            for job in lane.jobs[sent:]:  # never sent: released at the next step
                self._finished.put(job)
            self._ended.put(lane)
            self.wake.set()

    def _end(self, lane: _Lane) -> None:
        """*lane* is over: its subscription may be claimed again, its receiver's next lane go."""
        self._running[lane.receiver] -= 1
        self._busy.discard(lane.subscription_id)
        if not self._stopping.is_set():
            self._start_queued(lane.receiver)

    def _record_ended(self, session: Session) -> int:
        for lane in _take(self._ended):
            self._end(lane)
        return self._record(session, _take(self._finished))

    def _record(self, session: Session, jobs: list[Job]) -> int:
        if jobs:
            self._held -= len(jobs)  # recorded, or left to their leases if this fails
            record(session, jobs, config=self.settings, rng=self.rng)
        return len(jobs)

    def _maybe_prune(self, session: Session) -> None:
        now = self.clock()
        if self._last_prune is not None and now - self._last_prune < PRUNE_EVERY:
            return
        self._last_prune = now
        retention = self.settings.log_retention
        removed = prune_log(session, now=now, retention=retention)
        if removed:
            log.info("pruned %d delivery log entries older than %s", removed, retention)

    # -- loops -------------------------------------------------------------------------

    def stop(self) -> None:
        """Start no further request (thread-safe; for a signal handler)."""
        self._stopping.set()
        self.wake.set()

    def run(self, stop: threading.Event, *, max_cycles: int | None = None) -> None:
        """Work until *stop* is set or :meth:`stop` is called (or *max_cycles* steps ran),
        sleeping when idle; then :meth:`finish`."""
        cycles = 0
        while not (stop.is_set() or self._stopping.is_set()):
            if max_cycles is not None and cycles >= max_cycles:
                break
            cycles += 1
            self._step()
            if not self._started:  # at most records: sleep until a lane ends or a commit
                self.wake.wait(self.poll_interval)
        self.finish()

    def drain(self, *, until: float | None = None) -> int:
        """Work until nothing is due and nothing is in flight, or ``time.monotonic()``
        passes *until*; returns the rows handled. Celery's task, and tests, run this."""
        handled = 0
        while not self._stopping.is_set():
            done = self._step()
            handled += done
            if until is not None and time.monotonic() >= until:
                break
            if not self._started:  # (the step's claims came after its records)
                if self._held == 0:
                    break
                self.wake.wait(self.poll_interval)
        handled += self.finish(let_lanes_end=True)
        return handled

    def _step(self) -> int:
        self.wake.clear()
        self._started = 0
        try:
            return self.run_once()
        except Exception:  # the database may be restarting: wait and try again
            log.exception("webhook worker step failed")
            return 0

    def finish(self, *, let_lanes_end: bool = False) -> int:
        """Claim nothing more; wait for the requests in flight and record them; release
        what never started. Lanes send no further request unless *let_lanes_end*.
        Returns the deliveries recorded or released; the worker may run again."""
        was_stopping = self._stopping.is_set()
        if not let_lanes_end:
            self._stopping.set()
        unstarted = [lane for lanes in self._queued.values() for lane in lanes]
        self._queued.clear()
        jobs: list[Job] = []
        for lane in unstarted:
            self._busy.discard(lane.subscription_id)
            jobs.extend(lane.jobs)  # released unsent
        while sum(self._running.values()) > 0:
            self._end(self._ended.get())
        jobs.extend(_take(self._finished))
        recorded = 0
        try:
            with self.state.db.session() as session:
                recorded = self._record(session, jobs)
        except Exception:  # their leases end and they are tried again
            log.exception("could not record %d deliveries while stopping", len(jobs))
        if not was_stopping:
            self._stopping.clear()
        return recorded

    def close(self, *, wait: bool = True) -> None:
        """Stop the thread pool and close the senders' pooled connections."""
        self._stopping.set()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self.http.close()
        self.trusted_http.close()
