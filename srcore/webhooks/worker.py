"""The worker: each step records what was sent, claims outbox rows and due deliveries, starts a
thread per *lane* (a subscription's deliveries, sent in event order) and fans the outbox rows out. A
lane holds one of its subscriber's slots (half the worker's), one of its receiver's ``per_host``,
then one of the worker's ``concurrency``: a slow receiver holds up only its own deliveries, and
one subscriber's many slow receivers only their half."""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from weakref import WeakValueDictionary

from sqlalchemy.orm import Session

from srcore.auth.ended import prune_ended
from srcore.db import utcnow
from srcore.once import prune_expired
from srcore.outbound import AddressPolicy, PooledSender, Sender, policy_for
from srcore.signatures import signature_header
from srcore.webhooks.delivery import claim_deliveries, claim_outbox, load_jobs, prune_log, record
from srcore.webhooks.fanout import fan_out
from srcore.webhooks.outbox import webhooks_state
from srcore.webhooks.settings import WebhookSettings, settings_for

if TYPE_CHECKING:
    from flask import Flask

    from srcore.webhooks.delivery import Job

__all__ = ["Worker", "send", "sender_for"]

log = logging.getLogger("srcore.webhooks.worker")

#: A claimed row comes back to the pool if its worker has not finished with it by then.
DEFAULT_LEASE = timedelta(minutes=5)
#: A request ends this long before its lease, so that the loop's next step (held up by a claim's
#: :data:`.delivery.CLAIM_WAIT`, a fan-out) records it before another worker may claim it again.
RECORD_WITHIN = timedelta(seconds=20)
#: An outbox row's lease, at most: a worker killed while fanning out holds back every later
#: event's first attempts (their order) until it ends, and a fan-out takes seconds at most.
FAN_OUT_LEASE = timedelta(minutes=1)
#: A worker holds at most this many batches of deliveries claimed and not yet recorded.
HOLD_BATCHES = 8
#: How often the delivery log is pruned.
PRUNE_EVERY = timedelta(hours=1)


def sender_for(policy: AddressPolicy | None, settings: WebhookSettings) -> PooledSender:
    """Sends deliveries under *policy* (None: no address or port checks, trusted ones only)."""
    timeout, cap = settings.connect_timeout.total_seconds(), settings.body_cap
    return PooledSender(policy, connect_timeout=timeout, body_cap=cap, maxsize=settings.per_host)


def send(job: Job, http: Sender, config: WebhookSettings, clock: Callable[[], datetime]) -> None:
    """Sign *job*'s body and POST it within one ``config.timeout`` deadline, storing the outcome on
    *job*. Never raises: an unexpected error becomes ``job.failure``, left to its lease."""
    try:
        now = clock()
        timestamp = int(now.timestamp())
        headers = {"content-type": "application/json", "user-agent": config.user_agent}
        headers.update({"webhook-id": job.message_id, "webhook-timestamp": str(timestamp)})
        secrets, expires = [job.secret], job.previous_secret_expires
        if job.previous_secret and (expires is None or expires > now):
            secrets.append(job.previous_secret)  # the rotation's overlap lasts
        signature = signature_header(secrets, job.message_id, timestamp, job.body)
        signed = {**headers, "webhook-signature": signature}
        deadline, started = time.monotonic() + config.timeout.total_seconds(), time.perf_counter()
        job.exchange = http.post(job.url, signed, job.body, deadline=deadline)
        job.duration_ms = round((time.perf_counter() - started) * 1000)
        job.now, job.headers, job.ended = now, headers, clock()
    except Exception as exc:
        job.failure = exc


def _receiver(url: str) -> str:
    """Who a URL's requests go to, for the per-receiver cap: ``host:port``."""
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port or parts.scheme}"
    except ValueError:
        return url


class Worker:
    """Fans out and delivers one service's webhooks from its database: *http* sends with
    the address policy, *trusted_http* without it (the operator's own subscriptions). Only
    the loop's thread uses the database (SQLite wants one writer); the lanes only send."""

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
        if lease <= self.settings.timeout + RECORD_WITHIN:
            raise ValueError(f"the lease ({lease}) must outlast webhook-timeout by {RECORD_WITHIN}")
        self.http = http or sender_for(self.policy, self.settings)
        self.trusted_http = trusted_http or sender_for(None, self.settings)
        self.clock = clock
        self.rng = random.Random()
        self.lease, self.fan_out_lease = lease, min(lease, FAN_OUT_LEASE)
        #: Seconds after its claim a request may start: it can then be recorded within the lease.
        self.sending = (lease - self.settings.timeout - RECORD_WITHIN).total_seconds()
        #: What one step claims at most.
        self.batch = max(16 * self.settings.concurrency, 256)
        polls = self.settings.poll_interval.total_seconds()
        self.poll_interval = poll_interval if poll_interval is not None else polls
        #: Set when there is something to do: a lane ended, a commit emitted, a stop.
        self.wake = getattr(webhooks_state(app).dispatcher, "wakeup", None) or threading.Event()
        self._stopping = threading.Event()
        #: While set, a lane that has not sent yet sends nothing.
        self._finishing = threading.Event()
        self._slots = threading.Semaphore(max(self.settings.concurrency, 1))
        #: The semaphores of the receivers and of the subscribers the running lanes send to:
        #: each goes with its last lane, so a worker that runs for months does not keep one
        #: for every receiver and subscriber it ever met.
        self._hosts: WeakValueDictionary[str, threading.Semaphore] = WeakValueDictionary()
        self._owners: WeakValueDictionary[tuple[int | None, str | None], threading.Semaphore]
        self._owners = WeakValueDictionary()
        #: The jobs the lanes sent (or gave up), to be recorded.
        self._finished: queue.SimpleQueue[Job] = queue.SimpleQueue()
        #: Per subscription, its deliveries claimed and not recorded yet; it gets no more meanwhile.
        self._held: Counter[int] = Counter()
        #: The same per subscriber: one holding half of what the worker may hold gets no more.
        self._held_by: Counter[tuple[int | None, str | None]] = Counter()
        self._prepared = False
        self._pruned_at: datetime | None = None
        #: Why steps fail, and when that was last logged (None: they work).
        self._failing: tuple[str, float] | None = None

    def __repr__(self) -> str:
        return f"<Worker {self.state.service_id}>"

    def _step(self, session: Session) -> tuple[int, int]:
        """Returns the deliveries recorded plus the outbox rows fanned out, and the rows claimed."""
        if not self._prepared:  # the service's hooks, once per worker (until they pass)
            with self.app.app_context():
                for hook in webhooks_state(self.app).prepare:
                    hook(session)
            self._prepared = True
        handled = self._record(session, self._finished.qsize())
        if self._stopping.is_set():
            return handled, 0
        now, claimed_at = self.clock(), time.monotonic()
        outbox_ids = claim_outbox(session, now=now, lease=self.fan_out_lease, limit=self.batch)
        room = max(min(HOLD_BATCHES * self.batch - self._held.total(), self.batch), 0)
        full = [who for who, n in self._held_by.items() if n >= HOLD_BATCHES * self.batch // 2]
        due = claim_deliveries(
            session, now=now, lease=self.lease, limit=room, exclude=self._held, owners=full
        )
        lanes: dict[int, list[Job]] = {}
        for job in load_jobs(session, due) if due else ():
            lanes.setdefault(job.subscription_id, []).append(job)
        session.commit()
        last_start = claimed_at + self.sending  # however long reading took
        slots = max(self.settings.per_host, 1)
        owner_slots = max(slots, self.settings.concurrency // 2)
        for sid, jobs in lanes.items():
            host = _semaphore(self._hosts, _receiver(jobs[0].url), slots)
            who = jobs[0].owner_id, jobs[0].owner_client
            owner = _semaphore(self._owners, who, owner_slots)
            args = (jobs, owner, host, last_start)
            threading.Thread(target=self._send_lane, args=args, daemon=True).start()
            self._held[sid] += len(jobs)
            self._held_by[who] += len(jobs)
        if outbox_ids:
            fan_out(session, outbox_ids, manifest=self.state.manifest, now=self.clock())
        now = self.clock()
        if self._pruned_at is None or now - self._pruned_at >= PRUNE_EVERY:
            self._pruned_at, retention = now, self.settings.log_retention
            if removed := prune_log(session, now=now, retention=retention):
                log.info("pruned %d delivery log entries older than %s", removed, retention)
            self._prune_service(session, now)
        return handled + len(outbox_ids), len(due) + len(outbox_ids)

    def _prune_service(self, session: Session, now: datetime) -> None:
        """srcore's own tables that expire (used once-only form tokens, ended sessions) and
        the service's pruning (:attr:`WebhooksState.prune`), with the delivery log's. A hook
        that fails is logged and left for the next hour; the others run."""
        for hook in (prune_expired, prune_ended, *webhooks_state(self.app).prune):
            try:
                with self.app.app_context():
                    removed = hook(session, now)
            except Exception:
                session.rollback()
                log.exception("pruning %s failed; tried again in an hour", _hook_name(hook))
                continue
            if removed:
                log.info("pruned %d row(s): %s", removed, _hook_name(hook))

    def _send_lane(
        self,
        jobs: list[Job],
        owner: threading.Semaphore,
        host: threading.Semaphore,
        last_start: float,
    ) -> None:
        """On a thread of its own: send the lane's requests in order; none starts once
        stopping, after *last_start* (it could outlast the lease) or after a 410 Gone."""
        sent = 0
        try:
            with owner, host, self._slots:
                for job in jobs:
                    late = time.monotonic() > last_start
                    if late or self._stopping.is_set() or (self._finishing.is_set() and not sent):
                        break
                    http = self.trusted_http if job.trusted else self.http
                    send(job, http, self.settings, self.clock)
                    self._finished.put(job)  # recorded at the next step, lane over or not
                    sent += 1
                    if job.exchange is not None and job.exchange.status == 410:
                        break  # recording it disables the subscription, cancels the rest
        finally:
            for job in jobs[sent:]:  # never sent: released at the next step
                self._finished.put(job)
            self.wake.set()

    def _record(self, session: Session, count: int) -> int:
        """Record *count* jobs the lanes finished, waiting for them if need be."""
        jobs = [self._finished.get() for _ in range(count)]
        self._held -= Counter(job.subscription_id for job in jobs)
        self._held_by -= Counter((job.owner_id, job.owner_client) for job in jobs)
        if jobs:  # no longer held: recorded, or left to their leases if this fails
            record(session, jobs, config=self.settings, rng=self.rng)
        return count

    def stop(self) -> None:
        """Start no further request (thread-safe; for a signal handler)."""
        self._stopping.set()
        self.wake.set()

    def run(self, stop: threading.Event) -> None:
        """Work until *stop* is set or :meth:`stop` is called, then :meth:`finish`."""
        self._loop(lambda: not stop.is_set())
        self.finish()

    def drain(self, *, until: float | None = None) -> int:
        """Work until nothing is due nor in flight, or ``time.monotonic()`` passes *until* (after a
        step at least); returns the rows handled. Celery's task and tests run this."""
        steps = itertools.count()
        handled = self._loop(
            lambda: not next(steps) or until is None or time.monotonic() < until, drain=True
        )
        return handled + self.finish(let_lanes_end=True)

    def _loop(self, more: Callable[[], bool], *, drain: bool = False) -> int:
        handled = 0
        while not self._stopping.is_set() and more():
            self.wake.clear()
            claimed = 0
            try:
                with self.state.db.session() as session:
                    recorded, claimed = self._step(session)
                handled += recorded
            except Exception as exc:  # the database may be restarting: wait and try again
                self._failed(exc)
            else:
                if self._failing is not None:
                    log.warning("webhook worker steps work again")
                    self._failing = None
            if not claimed:  # it only recorded: sleep until a lane ends or a commit
                if drain and not self._held:
                    break
                self.wake.wait(self.poll_interval)
        return handled

    def _failed(self, exc: Exception) -> None:
        """Log a failed step: its traceback the first time, then a line when the reason
        changes or a minute has passed. A full disk or a database away fails every poll,
        and a traceback a second would bury the rest of the log."""
        reason = (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:500]
        now = time.monotonic()
        if self._failing is None:
            log.exception("webhook worker step failed")
        elif reason != self._failing[0] or now - self._failing[1] >= 60:
            log.warning("webhook worker steps still fail: %s", reason)
        else:
            return
        self._failing = (reason, now)

    def finish(self, *, let_lanes_end: bool = False) -> int:
        """Claim nothing more; record the requests in flight once done; release what never started
        (lanes send no more unless *let_lanes_end*). Returns how many; the worker may run again."""
        was_stopping = self._stopping.is_set()
        self._finishing.set()
        if not let_lanes_end:
            self._stopping.set()
        recorded = 0
        try:
            with self.state.db.session() as session:
                recorded = self._record(session, self._held.total())
        except Exception:  # their leases end and they are tried again
            log.exception("could not record the deliveries while stopping")
        self._finishing.clear()
        if not was_stopping:
            self._stopping.clear()
        return recorded

    def close(self) -> None:
        """Start no further request and close the senders' pooled connections."""
        self._stopping.set()
        self.http.close()
        self.trusted_http.close()


def _semaphore(
    table: WeakValueDictionary[Any, threading.Semaphore], key: Any, slots: int
) -> threading.Semaphore:
    """The semaphore of *key* in *table*, made with *slots* if no running lane holds it."""
    found = table.get(key)
    if found is None:
        found = table[key] = threading.Semaphore(slots)
    return found


def _hook_name(hook: Callable[..., object]) -> str:
    """How the log names a pruning hook: its function's qualified name (a partial's too)."""
    function = getattr(hook, "func", hook)
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', function)}"
