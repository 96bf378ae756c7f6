"""The identity protocol between meta and the services, spelled once for both sides.

meta numbers every revocation (a logout, a revoked token, grant or client, a suspension)
and sends it two ways: pushed as a ``revocation:issued`` webhook to each service's
:data:`EVENTS_PATH`, and served by seq at :data:`PULL_PATH` for the services' catch-up.
Profile changes travel as ``profile:updated`` on the same webhook. This module holds the
event model, its wire format and the rule deciding what an event revokes; meta writes
and checks events with it, the services parse and apply them with it. Plain values only:
no Flask, no database, no clock of its own.

Event kinds:

``token``      subject = jti, revoked until ``expires_at``
``grant``      subject = grant id, every token of the grant revoked until ``expires_at``
``client``     subject = client id, its tokens issued before ``not_before`` die
``user``       subject = user id, its tokens *and* web sessions from before ``not_before`` die
``session``    subject = user id, its web sessions from before ``not_before`` die (tokens live)
``suspend``    subject = user id, refused until an ``unsuspend`` with a higher seq
``unsuspend``
``delete``     subject = user id, the account was deleted: refused for good (no
               ``unsuspend`` lifts it), and each service drops what it keeps of it

meta sends a deletion as ``session``, ``suspend`` and ``delete`` in the transaction that
deletes the account, so what the first two meant before ``delete`` existed still holds.
A service whose srcore predates ``delete`` refuses the whole page holding it: upgrade
the services before meta.

Times are whole epoch seconds, by meta's clock; a service reads them with its own.
:data:`CLOCK_LEEWAY` is how far the two may disagree: a token is taken that much before
its ``iat``/``nbf`` and after its ``exp``, and an expiring event is kept as long after
its ``expires_at``, so the revocation covers every moment the token is still taken.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

__all__ = [
    "CLOCK_LEEWAY",
    "CUTOFF_KINDS",
    "DELETION_KINDS",
    "EVENTS_PATH",
    "EXPIRING_KINDS",
    "KINDS",
    "MAX_SEQ",
    "MAX_TIME",
    "PROFILE_EVENT",
    "PULL_PATH",
    "REVOCATION_EVENT",
    "SUSPENSION_KINDS",
    "RevocationEvent",
    "TokenFacts",
    "deleted",
    "ends_session",
    "outlived",
    "parse_events",
    "parse_pull_page",
    "pull_page",
    "push_data",
    "revokes",
    "session_cut_off",
    "suspended",
    "suspension_rank",
    "token_cut_off",
]

#: The webhook event carrying revocations, as ``{"events": [EVENT, ...]}``.
REVOCATION_EVENT = "revocation:issued"
#: The webhook event carrying a user's new profile (meta's ``profile_of``).
PROFILE_EVENT = "profile:updated"
#: Where meta's webhook worker delivers both to a service.
EVENTS_PATH = "/_srcore/events"
#: Where a service pulls the events after a seq (``?since=N``, client authentication).
PULL_PATH = "/oauth/revocations"

#: Events that end what matches their subject until they expire.
EXPIRING_KINDS = frozenset({"token", "grant"})
#: Events that end what was issued before their ``not_before``.
CUTOFF_KINDS = frozenset({"client", "user", "session"})
#: Events that set an account's suspension state (the higher seq wins).
SUSPENSION_KINDS = frozenset({"suspend", "unsuspend"})
#: Events that end an account for good: whatever their seq, no other event undoes them.
DELETION_KINDS = frozenset({"delete"})
KINDS = EXPIRING_KINDS | CUTOFF_KINDS | SUSPENSION_KINDS | DELETION_KINDS

MAX_SUBJECT = 256
#: The largest seq (a signed 64-bit integer, the widest any database numbers rows in):
#: meta's pull answers the events after any seq up to it, so no service's pull is stuck.
MAX_SEQ = 2**63 - 1
#: The last epoch second a date can name (9999-12-31T23:59:59Z): a cut-off or an expiry
#: past it is no time at all, and turning it into a date raises.
MAX_TIME = 253402300799
#: Seconds a service's clock may be off meta's (either way) without tokens failing: an
#: access token is taken from this long before its ``iat``/``nbf`` to this long after its
#: ``exp``. Hosts kept in sync by NTP are within milliseconds of each other.
CLOCK_LEEWAY = 30


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class RevocationEvent:
    """One revocation, as meta numbers and sends it."""

    seq: int
    kind: str
    subject: str
    not_before: int | None = None
    expires_at: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown event kind {self.kind!r}")
        if self.kind in CUTOFF_KINDS and self.not_before is None:
            raise ValueError(f"a {self.kind} event needs not_before")

    @classmethod
    def from_json(cls, data: object) -> RevocationEvent:
        """Parse one event of a push or pull; raises ValueError naming what is wrong."""
        if not isinstance(data, Mapping):
            raise ValueError("an event must be an object")
        seq, kind, subject = data.get("seq"), data.get("kind"), data.get("subject")
        if not _is_int(seq) or not 0 <= seq <= MAX_SEQ:
            raise ValueError(f"an event's seq must be an integer from 0 to {MAX_SEQ}")
        if kind not in KINDS:
            raise ValueError(f"unknown event kind {kind!r}")
        if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT:
            raise ValueError("an event's subject must be a non-empty string")
        not_before, expires_at = data.get("not_before"), data.get("expires_at")
        for name, value in (("not_before", not_before), ("expires_at", expires_at)):
            if value is not None and not (_is_int(value) and 0 <= value <= MAX_TIME):
                raise ValueError(
                    f"an event's {name} must be null or epoch seconds from 0 to {MAX_TIME}"
                )
        return cls(seq, str(kind), subject, not_before, expires_at)

    def to_json(self) -> dict[str, Any]:
        """The event on the wire (both the push and the pull)."""
        return {
            "seq": self.seq,
            "kind": self.kind,
            "subject": self.subject,
            "not_before": self.not_before,
            "expires_at": self.expires_at,
        }


def parse_events(items: object) -> list[RevocationEvent]:
    """Parse a list of events (ignoring none); raises ValueError on the first bad one."""
    if not isinstance(items, list):
        raise ValueError("events must be a list")
    return [RevocationEvent.from_json(item) for item in items]


def push_data(events: Iterable[RevocationEvent]) -> dict[str, Any]:
    """The ``data`` of a ``revocation:issued`` message."""
    return {"events": [event.to_json() for event in events]}


def pull_page(events: Iterable[RevocationEvent], last: int) -> dict[str, Any]:
    """One page of :data:`PULL_PATH`: the events after ``since`` and *last*, the seq of
    the page's last event (``since`` for an empty page), where the next page starts."""
    return {"events": [event.to_json() for event in events], "last": last}


def parse_pull_page(body: object, since: int) -> tuple[list[RevocationEvent], int]:
    """The events of a pulled page and where the next pull starts; ValueError if bad.

    A page without ``last`` ends at its newest event (or *since* when it is empty).
    """
    if not isinstance(body, Mapping):
        raise ValueError("a page of events must be an object")
    events = parse_events(body.get("events"))
    last = body.get("last")
    if last is None:
        return events, max([since, *(event.seq for event in events)])
    if not _is_int(last) or not 0 <= last <= MAX_SEQ:
        raise ValueError(f"a page's last must be an integer from 0 to {MAX_SEQ}")
    return events, last


# -- the rule ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenFacts:
    """What the rule needs to know of a verified access token."""

    jti: str
    issued_at: int
    client_id: str | None = None
    #: meta's user id, as the ``sub`` claim spells it; None for a client's own token.
    user: str | None = None
    grant: str | None = None

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> TokenFacts:
        """Read the facts from a token's verified claims (odd values count as absent)."""
        iat, sub = claims.get("iat"), claims.get("sub")
        client_id, grant = claims.get("client_id"), claims.get("grant")
        return cls(
            jti=str(claims.get("jti")),
            issued_at=iat if _is_int(iat) else 0,
            client_id=client_id if isinstance(client_id, str) else None,
            user=sub if isinstance(sub, str) and sub.isascii() and sub.isdigit() else None,
            grant=grant if isinstance(grant, str) else None,
        )


def token_cut_off(issued_at: int, not_before: int | None) -> bool:
    """Whether a token issued at *issued_at* predates the cut-off *not_before*.

    Strictly before: a token minted in the cut-off second may come from the login that
    followed it, and refusing it would refuse it for its whole life. meta ends the older
    tokens of that second exactly, with a ``grant`` event for each OAuth grant of the
    account and a ``token`` event for each personal access token.
    """
    return not_before is not None and issued_at < not_before


def session_cut_off(login_time: float | None, not_before: int | None) -> bool:
    """Whether a web session that started at *login_time* predates *not_before*.

    Sessions count the whole cut-off second as before it (a login moves a new session
    past a cut-off it already knows of), so a session from just before a logout dies; a
    session of unknown age always does.
    """
    if not_before is None:
        return False
    return login_time is None or math.floor(login_time) <= not_before


def outlived(event: RevocationEvent, now: float) -> bool:
    """Whether *event* has expired: every token it could match is refused as expired.

    A verifier takes a token until :data:`CLOCK_LEEWAY` after its ``exp``, so the event
    lives that long after its ``expires_at``: forgotten sooner, a revoked token would be
    taken again for the rest of the leeway. A store may forget an outlived event; the
    cut-off and suspension kinds never expire.
    """
    return (
        event.kind in EXPIRING_KINDS
        and event.expires_at is not None
        and event.expires_at + CLOCK_LEEWAY < now
    )


def revokes(event: RevocationEvent, token: TokenFacts, *, now: float) -> bool:
    """Whether *event* alone revokes *token* at *now* (suspensions: :func:`suspended`)."""
    if event.kind == "token":
        return event.subject == token.jti and not outlived(event, now)
    if event.kind == "grant":
        return event.subject == token.grant and not outlived(event, now)
    if event.kind == "client":
        return event.subject == token.client_id and token_cut_off(token.issued_at, event.not_before)
    if event.kind == "user":
        return event.subject == token.user and token_cut_off(token.issued_at, event.not_before)
    return False


def ends_session(event: RevocationEvent, user: str, login_time: float | None) -> bool:
    """Whether *event* ends the web session of *user* that started at *login_time*."""
    return (
        event.kind in ("user", "session")
        and event.subject == user
        and session_cut_off(login_time, event.not_before)
    )


def suspension_rank(event: RevocationEvent) -> int:
    """Seq and state in one number: the largest rank of a user is their current state."""
    return event.seq * 2 + (1 if event.kind == "suspend" else 0)


def deleted(events: Iterable[RevocationEvent], user: str) -> bool:
    """Whether *events* say the account *user* was deleted."""
    return any(e.kind in DELETION_KINDS and e.subject == user for e in events)


def suspended(events: Iterable[RevocationEvent], user: str) -> bool:
    """Whether *user* is refused by *events*: deleted, or suspended by the latest
    suspension event about them."""
    events = list(events)
    if deleted(events, user):
        return True
    ranks = [suspension_rank(e) for e in events if e.kind in SUSPENSION_KINDS and e.subject == user]
    return bool(ranks) and max(ranks) % 2 == 1
