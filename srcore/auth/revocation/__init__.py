"""Revocations from meta, applied by every service without asking meta on a request.

meta writes one event per revocation and, in the same transaction, a
``revocation:issued`` webhook that its webhook worker delivers to every service's
``/_srcore/events`` (:mod:`.receiver`), retrying until it arrives. Each process of a
service also pulls the events it may have missed every ``revocation-pull-interval``
(:mod:`.pull`), so a lost push costs at most that long; with ``[global] redis-url`` the
process that took a push passes it to the others (:mod:`.fanout`). Checks read only the
process's own store (:mod:`.store`). What the events mean and how they travel is
:mod:`srcore.identity.protocol`, shared with meta.
"""

from __future__ import annotations

from srcore.auth.revocation.extension import (
    Listener,
    Revocations,
    RevocationState,
    init_app,
    on_revocations,
    on_rewind,
    on_rewind_while_down,
    rewind_checked,
    state_of,
)
from srcore.auth.revocation.fanout import RedisFanout, make_fanout
from srcore.auth.revocation.pull import Fetch, PullRefused, RevocationPuller
from srcore.auth.revocation.receiver import apply_event, events_secret, receive_events
from srcore.auth.revocation.replay import (
    MemorySeenMessages,
    RedisSeenMessages,
    SeenMessages,
    make_seen_messages,
)
from srcore.auth.revocation.store import (
    MemoryRevocationStore,
    RevocationStore,
    RevocationUnavailable,
)
from srcore.identity.protocol import (
    EVENTS_PATH,
    KINDS,
    PROFILE_EVENT,
    REVOCATION_EVENT,
    RevocationEvent,
    parse_events,
)

__all__ = [
    "EVENTS_PATH",
    "KINDS",
    "PROFILE_EVENT",
    "REVOCATION_EVENT",
    "Fetch",
    "Listener",
    "MemoryRevocationStore",
    "MemorySeenMessages",
    "PullRefused",
    "RedisFanout",
    "RedisSeenMessages",
    "RevocationEvent",
    "RevocationPuller",
    "RevocationState",
    "RevocationStore",
    "RevocationUnavailable",
    "Revocations",
    "SeenMessages",
    "apply_event",
    "events_secret",
    "init_app",
    "make_fanout",
    "make_seen_messages",
    "make_store",
    "on_revocations",
    "on_rewind",
    "on_rewind_while_down",
    "parse_events",
    "receive_events",
    "rewind_checked",
    "state_of",
]


def make_store() -> RevocationStore:
    """A new revocation store for one process (every check reads it, nothing else)."""
    return MemoryRevocationStore()
