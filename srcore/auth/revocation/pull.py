"""The catch-up: every process pulls the events it may have missed from meta.

A push can be lost (the service was down, meta's worker gave up, another process of the
service got it and the fan-out missed this one), so each process also asks meta for the
events after its last seq every ``revocation-pull-interval``: a lost push costs at most
that long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from srcore.auth.revocation.store import RevocationStore
from srcore.forks import reset_in_child
from srcore.identity.protocol import RevocationEvent

__all__ = ["Fetch", "RevocationPuller"]

log = logging.getLogger("srcore.auth")

#: Fetch the events after a seq: returns (events, last seq).
Fetch = Callable[[int], tuple[list[RevocationEvent], int]]


class RevocationPuller:
    """Pull missed events from meta every *interval* seconds in a daemon thread.

    The thread is started by :meth:`ensure_started`, which the app calls on a request:
    never at import or app build, and again in each process after gunicorn forks.
    """

    #: The most pages of events one pull reads before waiting for the next round.
    max_pages = 100
    #: How long the first checks of a process wait for its first pull (:meth:`first_pull`).
    first_wait = 2.0

    def __init__(self, store: RevocationStore, fetch: Fetch, *, interval: float) -> None:
        self.store = store
        self.fetch = fetch
        self.interval = interval
        self._started = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._pulled = threading.Event()
        self._loaded = threading.Event()
        self._start_lock = threading.Lock()
        reset_in_child(self._forked)
        #: How many pulls ran (successful or not).
        self.pulls = 0
        #: Called with the events of each pull once the store has them (the app's webhook
        #: subscriptions follow them: :func:`srcore.webhooks.accounts.after_revocations`).
        self.listeners: list[Callable[[list[RevocationEvent]], None]] = []

    def pull_once(self) -> int:
        """Apply every event meta has after the store's last seq; return how many."""
        applied = 0
        for page in range(self.max_pages):
            since = self.store.last_seq
            if page == 0 and since > 0:
                since, events, last = self._fetch_checked(since)
            else:
                events, last = self.fetch(since)
            events = [e for e in events if e.seq > since]
            if events:
                self.store.apply(events)
                applied += len(events)
                for listener in self.listeners:
                    try:
                        listener(events)
                    except Exception:  # the store has them either way; logged for the operator
                        log.exception("applying pulled revocations to webhooks failed")
            if not events or last <= since:
                break
        self.pulls += 1
        self._loaded.set()
        return applied

    def _fetch_checked(self, since: int) -> tuple[int, list[RevocationEvent], int]:
        """The first page of a round, from the event at *since* on, which meta must still
        hold as this process applied it.

        A meta restored from a dump numbers its new events from the dump's last seq again:
        pulled from *since*, the new events up to it would never be read, and a suspension
        numbered below a lost unsuspension would count for nothing. So the page starts one
        seq earlier; when meta has no such event, or another one there, its numbering went
        back and the store reads meta's whole list again (:meth:`RevocationStore.rewind`).
        Returns the seq the page's new events come after (0 then), the events and meta's
        last seq.
        """
        mine = self.store.last_event
        if mine is None or mine.seq < since:
            return since, *self.fetch(since)
        # A push may have applied a newer event since *since* was read: check that one.
        events, last = self.fetch(mine.seq - 1)
        theirs = next((e for e in events if e.seq >= mine.seq), None)
        if theirs == mine or (theirs is None and last >= mine.seq):
            return mine.seq, events, last
        log.warning(
            "meta's revocation %s is not the one this process applied (meta restored from a"
            " dump?): reading meta's revocations again from the start",
            mine.seq,
        )
        self.store.rewind()
        return (0, *self.fetch(0))

    def first_pull(self) -> bool:
        """Start pulling, wait at most :attr:`first_wait` for the first round; say if it read.

        A new process (a restarted gunicorn worker) knows no revocation until a pull has
        read meta's list: answering before that would take a revoked token for a good
        one, so the checks refuse (503) until one pull succeeds. Only the first round is
        waited for; while meta stays down later checks fail at once and the thread keeps
        trying every interval.
        """
        self.ensure_started()
        if not self._started:
            return True
        self._pulled.wait(self.first_wait)
        return self._loaded.is_set()

    def wake(self) -> None:
        """Pull now rather than at the next round (something may have been missed)."""
        self._wake.set()

    def _forked(self) -> None:
        self._start_lock = threading.Lock()
        self._started = False
        self._pulled = threading.Event()
        self._loaded = threading.Event()

    def ensure_started(self) -> None:
        """Start the thread in this process if it is not running here yet (cheap if it is)."""
        if self._started or self.interval <= 0:
            return
        with self._start_lock:
            if self._started:
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run, args=(self._stop,), name="srcore-revocation-pull", daemon=True
            )
            self._thread.start()
            self._started = True

    def stop(self) -> None:
        """Stop the thread (tests; the process exiting stops it too)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=5)
        self._started = False

    def _run(self, stop: threading.Event) -> None:
        # Rounds start every `interval` seconds, however long a pull takes, so a lost push
        # costs at most the interval (plus one pull), not interval + pull time each round.
        next_round = time.monotonic()
        while not stop.is_set():
            self._wake.clear()
            try:
                self.pull_once()
            except Exception as exc:  # keep pulling whatever went wrong this round
                log.warning("pulling revocations from meta failed: %s", exc)
            self._pulled.set()
            next_round = max(next_round + self.interval, time.monotonic())
            if self._wake.wait(next_round - time.monotonic()):
                next_round = time.monotonic()
