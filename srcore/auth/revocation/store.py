"""The revocation list a service checks tokens and web sessions against.

Checks never call meta and never leave the process: :meth:`RevocationStore.is_revoked` is
the token verifier's hook and :meth:`RevocationStore.session_valid` the web session's.
Pushes, pulls and the fan-out between a service's processes feed :meth:`apply`; what an
event means is :mod:`srcore.identity.protocol`'s rule, which this store indexes by subject.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

from srcore.auth.tokens import VerificationUnavailable
from srcore.identity.protocol import (
    CLOCK_LEEWAY,
    CUTOFF_KINDS,
    DELETION_KINDS,
    EXPIRING_KINDS,
    RevocationEvent,
    TokenFacts,
    outlived,
    session_cut_off,
    suspension_rank,
    token_cut_off,
)

if TYPE_CHECKING:
    from srcore.auth.tokens import AccessToken

__all__ = [
    "MemoryRevocationStore",
    "RevocationStore",
    "RevocationUnavailable",
    "token_facts",
]


class RevocationUnavailable(VerificationUnavailable):
    """What revocations need cannot be read or written right now (Redis unreachable)."""


class RevocationStore(Protocol):
    """What the token verifier and the web session ask; what pushes and pulls feed."""

    def apply(self, events: Iterable[RevocationEvent]) -> None:
        """Record *events*; applying one twice, or out of order, changes nothing."""

    def is_revoked(self, token: AccessToken) -> bool:
        """Whether *token* (already verified) has been revoked since it was issued."""

    def session_valid(self, user_id: int, login_time: float | None) -> bool:
        """Whether a web session of *user_id* that started at *login_time* still stands."""

    def user_not_before(self, user_id: int) -> int | None:
        """The latest ``user``/``session`` not_before known for *user_id*."""

    @property
    def last_seq(self) -> int:
        """The highest event seq applied, pushed or pulled (the pull keeps its own place:
        a push may be newer than an event this process missed)."""

    def rewind(self) -> None:
        """Read meta's list again from the start: its numbering went back (a restore).

        What only revokes more is kept; a suspension state set by the old numbering stands
        until an event of the new one about that account, at any seq, replaces it.
        """


def token_facts(token: AccessToken) -> TokenFacts:
    """The facts of a verified token that the revocation rule reads."""
    grant = token.claims.get("grant")
    return TokenFacts(
        jti=token.jti,
        issued_at=token.issued_at,
        client_id=token.client_id,
        user=None if token.subject is None else str(token.subject),
        grant=grant if isinstance(grant, str) else None,
    )


class MemoryRevocationStore:
    """The events of one process, indexed by subject; expired entries swept on apply.

    Only the strongest event per subject matters (the latest expiry, the latest cut-off,
    the highest suspension rank), so that is all it keeps: memory grows with the live
    tokens revoked and the accounts and clients cut off, not with the event log.
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        #: Called by the checks until it returns True (then dropped): a process waits
        #: there, bounded, for its first pull, and refuses to answer from a list it has
        #: not filled yet (:class:`RevocationUnavailable`).
        self.first_check: Callable[[], bool] | None = None
        self._lock = threading.Lock()
        self._expiring: dict[str, dict[str, float]] = {kind: {} for kind in EXPIRING_KINDS}
        self._cutoffs: dict[str, dict[str, int]] = {kind: {} for kind in CUTOFF_KINDS}
        #: Per user, the numbering and rank of the event that set the suspension state.
        self._suspension: dict[str, tuple[int, int]] = {}
        #: The deleted accounts: refused for good, whatever comes after (a rewind too).
        self._deleted: set[str] = set()
        #: How many times meta's numbering went back (:meth:`rewind`).
        self._numbering = 0
        self._seq = 0

    @property
    def last_seq(self) -> int:
        return self._seq

    def rewind(self) -> None:
        # The cut-offs and expiring revocations of the lost numbering only refuse more
        # (meta's restored copy forgot them; this process keeps them until they expire).
        # A suspension is decided by the highest seq, which the new numbering reuses: the
        # states set by the old one stand until any event of the new one outranks them.
        with self._lock:
            self._numbering += 1
            self._seq = 0

    def after_fork(self) -> None:
        """In a forked child: the parent's lock may be held for good."""
        self._lock = threading.Lock()

    def apply(self, events: Iterable[RevocationEvent]) -> None:
        now = self._clock()
        with self._lock:
            for event in events:
                self._apply_one(event, now)
            self._sweep(now)

    def _apply_one(self, event: RevocationEvent, now: float) -> None:
        self._seq = max(self._seq, event.seq)
        kind, subject = event.kind, event.subject
        if kind in EXPIRING_KINDS:
            if outlived(event, now):
                return
            expires = math.inf if event.expires_at is None else float(event.expires_at)
            table = self._expiring[kind]
            table[subject] = max(table.get(subject, expires), expires)
        elif kind in CUTOFF_KINDS:
            assert event.not_before is not None
            cutoffs = self._cutoffs[kind]
            cutoffs[subject] = max(cutoffs.get(subject, event.not_before), event.not_before)
        elif kind in DELETION_KINDS:
            self._deleted.add(subject)
        else:
            rank = suspension_rank(event)
            mark = (self._numbering, rank)
            self._suspension[subject] = max(self._suspension.get(subject, mark), mark)

    def _sweep(self, now: float) -> None:
        for table in self._expiring.values():
            for key in [k for k, expires in table.items() if expires + CLOCK_LEEWAY < now]:
                del table[key]

    def _live(self, kind: str, subject: str | None, now: float) -> bool:
        """Whether an expiring event about *subject* still matters: the verifier takes a
        token until the leeway after its ``exp``, so the event counts as long."""
        expires = None if subject is None else self._expiring[kind].get(subject)
        return expires is not None and expires + CLOCK_LEEWAY >= now

    def _suspended(self, user: str) -> bool:
        if user in self._deleted:
            return True
        return self._suspension.get(user, (0, 0))[1] % 2 == 1

    def _ready(self) -> None:
        wait = self.first_check
        if wait is not None:
            if not wait():
                raise RevocationUnavailable("meta's revocation list has not been read yet")
            self.first_check = None

    def is_revoked(self, token: AccessToken) -> bool:
        self._ready()
        facts, now = token_facts(token), self._clock()
        if self._live("token", facts.jti, now) or self._live("grant", facts.grant, now):
            return True
        if facts.client_id is not None and token_cut_off(
            facts.issued_at, self._cutoffs["client"].get(facts.client_id)
        ):
            return True
        if facts.user is not None:
            user = facts.user
            if self._suspended(user):
                return True
            return token_cut_off(facts.issued_at, self._cutoffs["user"].get(user))
        return False

    def session_valid(self, user_id: int, login_time: float | None) -> bool:
        self._ready()
        if self._suspended(str(user_id)):
            return False
        return not session_cut_off(login_time, self.user_not_before(user_id))

    def user_not_before(self, user_id: int) -> int | None:
        user = str(user_id)
        marks = [self._cutoffs[kind].get(user) for kind in ("user", "session")]
        values = [mark for mark in marks if mark is not None]
        return max(values) if values else None
