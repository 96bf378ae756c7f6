"""One app's revocation state, where the receiver, the pull and other features find it.

Kept apart from :mod:`.extension`, which builds it and registers the push receiver, so
the receiver reads it without importing the module that imports the receiver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from srcore.auth.revocation.fanout import RedisFanout
from srcore.auth.revocation.replay import SeenMessages
from srcore.identity.protocol import RevocationEvent

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "EXTENSION_KEY",
    "Listener",
    "RevocationState",
    "on_revocations",
    "on_rewind",
    "on_rewind_while_down",
    "rewind_checked",
    "state_of",
]

#: Told the events meta sent once the store has them (pushed or pulled).
Listener = Callable[[list[RevocationEvent]], None]

#: Where an app keeps its :class:`RevocationState`.
EXTENSION_KEY = "srcore.revocation"


@dataclass
class RevocationState:
    """One app's revocation machinery; the store and the puller live on its link to meta."""

    #: The app's :class:`srcore.auth.link.MetaLink` (typed loosely: link sits above this).
    link: Any
    seen: SeenMessages
    fanout: RedisFanout | None
    #: What else follows meta's events (:func:`on_revocations`); the puller's own list.
    listeners: list[Listener] = field(default_factory=list)

    def start(self) -> None:
        """Start this process's pull and fan-out threads if they are not running yet."""
        if self.link.puller is not None:
            self.link.puller.ensure_started()
        if self.fanout is not None:
            self.fanout.ensure_started()

    def stop(self) -> None:
        """Stop this process's threads (tests; the process exiting stops them too)."""
        if self.link.puller is not None:
            self.link.puller.stop()
        if self.fanout is not None:
            self.fanout.close()


def state_of(app: Flask) -> RevocationState:
    """The revocation state :meth:`Revocations.init_app` gave *app*."""
    state: RevocationState = app.extensions[EXTENSION_KEY]
    return state


def on_revocations(app: Flask, listener: Listener) -> None:
    """Call *listener* with the events meta pushes to or is pulled from by *app*.

    For the features above this one (webhook subscriptions follow suspensions and
    revoked accounts), so revocations import none of them. A listener that raises on a
    push fails the push (meta delivers it again); on a pull it is logged. Nothing to do
    for an app without revocations (it does not log in through meta).
    """
    state = app.extensions.get(EXTENSION_KEY)
    if isinstance(state, RevocationState):
        state.listeners.append(listener)


def on_rewind(app: Flask, listener: Callable[[], None]) -> None:
    """Call *listener* when *app*'s pull finds meta's numbering of revocations went back (meta
    restored from a dump), before it reads meta's whole list again.

    Whatever kept the seq of an event to rank later ones (a suspension's) must let the new
    numbering decide, as the revocation store does. A listener that raises is logged.
    """
    state = app.extensions.get(EXTENSION_KEY)
    if isinstance(state, RevocationState) and state.link.puller is not None:
        state.link.puller.rewind_listeners.append(listener)


def on_rewind_while_down(
    app: Flask,
    kept: Callable[[], RevocationEvent | None],
    listener: Callable[[RevocationEvent, RevocationEvent | None], None],
) -> None:
    """For what keeps meta's seqs in *app*'s database: catch a restore of meta while every
    process of the service was down, which no pull saw (:func:`on_rewind` is told of the
    ones a pull sees).

    At the first pull of each process, before it reads, *kept* names the newest event whose
    seq the database keeps (None when it keeps none), and *listener* is told it with meta's
    event at that seq (None when meta has none there): if they differ, meta's numbering
    went back. Processes starting together are each told: what acts on it must act once.
    """
    state = app.extensions.get(EXTENSION_KEY)
    if isinstance(state, RevocationState) and state.link.puller is not None:
        state.link.puller.kept.append((kept, listener))


def rewind_checked(app: Flask) -> bool:
    """Whether this process of *app* compared what its database kept with meta
    (:func:`on_rewind_while_down`), waiting a moment for its first pull: an event pushed
    before then must not move those seqs past the check. True for an app that does not pull."""
    state = app.extensions.get(EXTENSION_KEY)
    if not isinstance(state, RevocationState) or state.link.puller is None:
        return True
    checked: bool = state.link.puller.kept_checked()
    return checked
