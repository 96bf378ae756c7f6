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

__all__ = ["Fetch", "KeptListener", "PullRefused", "RevocationPuller"]

log = logging.getLogger("srcore.auth")

#: Fetch the events after a seq: returns (events, last seq); raises :class:`PullRefused`
#: when meta refuses this service's client credentials.
Fetch = Callable[[int], tuple[list[RevocationEvent], int]]


class PullRefused(Exception):
    """meta refused the pull's client credentials: it does not know this service (its
    section is gone from meta's config file) or holds another secret for it. Nothing meta
    decides reaches the service then (its pushes stop too), so what the process knew is
    stale for good: the checks refuse to answer from it until a pull goes through."""


#: Told the event the service's database kept and meta's event at its seq (None: none).
KeptListener = Callable[[RevocationEvent, RevocationEvent | None], None]


class RevocationPuller:
    """Pull missed events from meta every *interval* seconds in a daemon thread; with an
    *interval* of 0 (no rounds), only when the process starts and when :meth:`wake` asks.

    The thread is started by :meth:`ensure_started`, which the app calls on a request:
    never at import or app build, and again in each process after gunicorn forks.
    """

    #: The most pages of events one pull reads before waiting for the next round.
    max_pages = 100
    #: How long the first checks of a process wait for its first pull (:meth:`first_pull`).
    first_wait = 2.0
    #: With no rounds (*interval* 0), how often a process that has not read meta's list
    #: yet (meta down, or refusing) tries again.
    retry_without_rounds = 30.0
    #: How long a seq missing between pulled ones is looked for (:meth:`_start`).
    hole_wait = 300.0
    #: Gaps longer than this are the numbering jumping, and at most this many are kept.
    max_gap, max_holes = 100, 1000

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
        #: Called after each pull meta refused (:class:`PullRefused`): the store's checks
        #: wait for a pull that reads again (:meth:`first_pull`).
        self.refused_listeners: list[Callable[[], None]] = []
        #: The pull's own place: every event up to this seq was read by a pull, but for
        #: the gaps in ``_holes`` (seq: when first missed); ``_last`` is the event at it.
        self._seq = 0
        self._last: RevocationEvent | None = None
        self._holes: dict[int, float] = {}
        #: Called with the events of each pull once the store has them (the app's webhook
        #: subscriptions follow them: :func:`srcore.webhooks.accounts.after_revocations`).
        self.listeners: list[Callable[[list[RevocationEvent]], None]] = []
        #: Called when meta's numbering went back (:meth:`_rewind`), before its whole list
        #: is read again: whatever kept seqs of the old numbering lets the new one decide.
        self.rewind_listeners: list[Callable[[], None]] = []
        #: What keeps meta's seqs in the service's database, past any process: pairs of a
        #: function naming the newest event it kept (None for none) and a listener told
        #: meta's event at its seq (:meth:`_check_kept`).
        self.kept: list[tuple[Callable[[], RevocationEvent | None], KeptListener]] = []
        self._kept_checked = threading.Event()

    def pull_once(self) -> int:
        """Apply every event meta has that this process has not pulled yet; return how many.

        Where the pull stands is its own: a push may bring this process a newer event than
        one it missed (that push reached another process), so the events pushed here
        never move it. Events already applied are applied again, which changes nothing.
        """
        if not self._kept_checked.is_set():
            self._check_kept()
        applied, start = 0, self._seq
        since = self._start()
        page: tuple[list[RevocationEvent], int] | None = None
        if self._last is not None:
            # The first page starts at the last event pulled at the latest, to check it.
            since = min(since, self._last.seq - 1)
            page = check = self.fetch(since)
            if check[0] and max(e.seq for e in check[0]) < self._last.seq:
                # Read from a gap further back, the page ended below it (meta's ``last`` is
                # where its page ends): the check reads from the last event itself.
                check = self.fetch(self._last.seq - 1)
            if not self._still_there(self._last, *check):
                self._rewind()
                since, start, page = 0, 0, None
        for _page in range(self.max_pages):
            events, last = page if page is not None else self.fetch(since)
            page = None
            events = sorted((e for e in events if e.seq > since), key=lambda e: e.seq)
            new = [e for e in events if e.seq > self._seq or e.seq in self._holes]
            self._advance(since, events)
            if new:
                self.store.apply(new)
                applied += len(new)
                for listener in self.listeners:
                    try:
                        listener(new)
                    except Exception:  # the store has them either way; logged for the operator
                        log.exception("applying pulled revocations to webhooks failed")
            # A page read from just below where the round started and ending there holds
            # nothing newer: meta's pages hold more than one event, so a newer one would
            # have come in it. One read from a gap further back may be full there.
            if not events or last <= since or (events[-1].seq == start and since >= start - 1):
                break
            since = events[-1].seq
        self.pulls += 1
        self._loaded.set()
        return applied

    def _refused(self, exc: PullRefused) -> None:
        """meta refused this service's credentials: the list read so far no longer counts.

        A process that read meta's list keeps answering from it while meta is down, since
        meta's events wait for it; a refusal is no outage: meta sends this service nothing
        more, and a token revoked or an account suspended from then on would be taken for
        as long as the process runs. So its checks answer as before its first pull (503)
        until a pull reads again: meta reloaded with the service's section back, or both
        holding the same secret.
        """
        was_loaded = self._loaded.is_set()
        self._loaded.clear()
        for listener in self.refused_listeners:
            listener()
        (log.error if was_loaded else log.warning)(
            "meta refuses this service's client when pulling revocations (%s): meta's config"
            " file has no section for it, or holds another oauth-client-secret; logged-in"
            " pages and API calls answer 503 until a pull goes through",
            exc,
        )

    def _check_kept(self) -> None:
        """Before a process's first read: does meta still hold what the database kept?

        A meta restored while every process of the service was down leaves none that
        pulled from the old numbering to see it go back (:meth:`_still_there`), while the
        database keeps seqs of that numbering (a webhook account's suspension): what kept
        them is told meta's event at the newest such seq, once per process, to compare.
        Tried again at the next round if that fails; pushes wait for it
        (:meth:`kept_checked`).
        """
        for kept, listener in self.kept:
            try:
                mine = kept()
            except Exception:
                log.exception("reading the newest revocation seq the database kept failed")
                return
            if mine is None:
                continue
            events, _last = self.fetch(mine.seq - 1)
            theirs = next((e for e in events if e.seq == mine.seq), None)
            try:
                listener(mine, theirs)
            except Exception:
                log.exception("comparing the revocation seqs the database kept with meta's failed")
                return
        self._kept_checked.set()

    def kept_checked(self) -> bool:
        """Whether this process compared what the database kept with meta (:meth:`_check_kept`),
        waiting at most :attr:`first_wait` for its first pull; True when it does not pull."""
        self.ensure_started()
        if not self._started or not self.kept:
            return True
        if threading.current_thread() is not self._thread:  # the pull itself: no wait
            self._kept_checked.wait(self.first_wait)
        return self._kept_checked.is_set()

    def _start(self) -> int:
        """The seq a round reads after: the pull's, or just below the oldest gap left open.

        meta numbers an event when its transaction writes it, so one committed after a
        later one shows up late, below what was pulled already: each gap between pulled
        seqs is read again for :attr:`hole_wait` seconds. A number whose transaction
        rolled back never shows up, and is given up then.
        """
        now = time.monotonic()
        self._holes = {seq: at for seq, at in self._holes.items() if now - at < self.hole_wait}
        return min(self._holes, default=self._seq + 1) - 1

    def _advance(self, since: int, events: list[RevocationEvent]) -> None:
        """Move the pull past *events* (read after *since*, by seq), noting the gaps."""
        now, previous = time.monotonic(), since
        for event in events:
            self._holes.pop(event.seq, None)
            gap = range(max(previous, self._seq) + 1, event.seq)
            # A long run of missing numbers is the numbering jumping (a restored or crashed
            # server's sequence), not transactions still under way.
            if len(gap) <= self.max_gap and len(self._holes) < self.max_holes:
                self._holes.update(dict.fromkeys(gap, now))
            previous = event.seq
            if event.seq > self._seq:
                self._seq, self._last = event.seq, event

    def _still_there(self, mine: RevocationEvent, events: list[RevocationEvent], last: int) -> bool:
        """Whether meta still holds the event this process pulled last, as it was, judged
        from a page of *events* read from below it and meta's *last* seq.

        A meta restored from a dump numbers its new events from the dump's last seq again:
        pulled from there on, the new events up to it would never be read, and a
        suspension numbered below a lost unsuspension would count for nothing.
        """
        theirs = next((e for e in events if e.seq >= mine.seq), None)
        if theirs == mine or (theirs is None and last >= mine.seq):
            return True
        log.warning(
            "meta's revocation %s is not the one this process applied (meta restored from a"
            " dump?): reading meta's revocations again from the start",
            mine.seq,
        )
        return False

    def _rewind(self) -> None:
        """Read meta's whole list again, keeping what the store knew (it only refuses more):
        :meth:`RevocationStore.rewind`."""
        self.store.rewind()
        self._seq, self._last, self._holes = 0, None, {}
        for listener in self.rewind_listeners:
            try:
                listener()
            except Exception:  # logged for the operator; the events are read again anyway
                log.exception("following meta's new numbering of revocations failed")

    def first_pull(self) -> bool:
        """Start pulling, wait at most :attr:`first_wait` for the first round; say if it read.

        A new process (a restarted gunicorn worker) knows no revocation until a pull has
        read meta's list: answering before that would take a revoked token for a good
        one, so the checks refuse (503) until one pull succeeds. Only the first round is
        waited for; while meta stays down later checks fail at once and the thread keeps
        trying every interval. With no rounds (0s, push only) the first round is waited
        for too, but a process whose first pull failed answers from what it has.
        """
        self.ensure_started()
        if not self._started:
            return True
        self._pulled.wait(self.first_wait)
        return self._loaded.is_set() or self.interval <= 0

    def wake(self) -> None:
        """Pull now rather than at the next round (something may have been missed)."""
        self._wake.set()

    def _forked(self) -> None:
        self._start_lock = threading.Lock()
        self._started = False
        self._pulled = threading.Event()
        self._loaded = threading.Event()
        self._kept_checked = threading.Event()

    def ensure_started(self) -> None:
        """Start the thread in this process if it is not running here yet (cheap if it is)."""
        if self._started:
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
        # With no rounds (0s), the process still pulls when it starts and when woken (its
        # Redis subscription starts again): a restarted process, or one subscribed after a
        # push, must not take a revoked token or an ended session for a good one.
        next_round = time.monotonic()
        while not stop.is_set():
            self._wake.clear()
            try:
                self.pull_once()
            except PullRefused as exc:
                self._refused(exc)
            except Exception as exc:  # keep pulling whatever went wrong this round
                log.warning("pulling revocations from meta failed: %s", exc)
            self._pulled.set()
            if self.interval <= 0:
                # Until a pull has read meta's list, try again every while; then only
                # when woken.
                self._wake.wait(None if self._loaded.is_set() else self.retry_without_rounds)
                continue
            next_round = max(next_round + self.interval, time.monotonic())
            if self._wake.wait(next_round - time.monotonic()):
                next_round = time.monotonic()
