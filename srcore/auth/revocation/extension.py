"""The revocation feature as a Flask extension: the push receiver, the pull, the fan-out.

:class:`Revocations` wires the pieces to an app that has a link to meta
(``app.extensions["srcore.auth"].identity``, built by :mod:`srcore.auth.link`) and
keeps their per-app state in ``app.extensions["srcore.revocation"]``. Nothing runs at
``init_app``: the pull and the fan-out threads start on the first request of each process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from srcore.auth.revocation.fanout import make_fanout
from srcore.auth.revocation.receiver import receive_events
from srcore.auth.revocation.replay import make_seen_messages
from srcore.auth.revocation.state import (
    EXTENSION_KEY,
    Listener,
    RevocationState,
    on_revocations,
    on_rewind,
    on_rewind_while_down,
    rewind_checked,
    state_of,
)
from srcore.auth.revocation.store import MemoryRevocationStore
from srcore.identity.protocol import EVENTS_PATH

if TYPE_CHECKING:
    from flask import Flask

__all__ = [
    "EXTENSION_KEY",
    "Listener",
    "RevocationState",
    "Revocations",
    "init_app",
    "on_revocations",
    "on_rewind",
    "on_rewind_while_down",
    "rewind_checked",
    "state_of",
]


class Revocations:
    """The revocation feature of a service that logs in through meta."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Receive meta's pushes at :data:`EVENTS_PATH`, pull and fan out from a request on.

        Needs the service's state (``config``, ``service_id``) and auth's link to meta
        (``identity``), both read through ``app.extensions["srcore"]``. Redis (``[global]
        redis-url``) shares replay marks and carries pushes between processes when set.
        """
        st = app.extensions["srcore"]
        link = st.identity
        redis_url = str(st.config.global_.get("redis-url") or "") or None
        puller = link.puller
        state = RevocationState(
            listeners=[] if puller is None else puller.listeners,
            link=link,
            seen=make_seen_messages(redis_url, st.service_id),
            fanout=make_fanout(
                redis_url,
                st.service_id,
                link.store,
                on_subscribed=None if puller is None else puller.wake,
                secret=str(st.config.section(st.service_id)["secret-key"]),
            ),
        )
        app.extensions[EXTENSION_KEY] = state
        if puller is not None and isinstance(link.store, MemoryRevocationStore):
            store = link.store
            store.first_check = puller.first_pull

            def wait_for_a_pull() -> None:
                store.first_check = puller.first_pull

            # A refused pull (meta no longer knows this service) makes the checks wait
            # for a pull that reads again, as before the first one.
            puller.refused_listeners.append(wait_for_a_pull)
        app.add_url_rule(
            EVENTS_PATH,
            endpoint="srcore_meta_events",
            view_func=receive_events,
            methods=["POST"],
        )
        start = state.start

        def start_revocations() -> None:
            start()

        app.before_request(start_revocations)


def init_app(app: Flask) -> None:
    """Add the revocation feature to *app* (:meth:`Revocations.init_app`)."""
    Revocations().init_app(app)
