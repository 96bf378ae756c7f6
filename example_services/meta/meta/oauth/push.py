"""Pushing revocations and profile changes to the network's services.

After a transaction that wrote revocation events commits, the events are signed (one JWS
per service, ``typ: srcore-push+jwt``, ``aud`` = the service id) and POSTed as
``application/jwt`` to ``/_srcore/revocations``; profile changes go to ``/_srcore/profile``.
Sending happens on a background thread with a short timeout and never blocks the request;
a failed push is logged and caught up by the services' pull of ``/oauth/revocations``.
The sender is a plain callable, so tests can capture exactly what would go on the wire.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meta.oauth.keys import KeyRing

__all__ = ["PUSH_TYPE", "PushTarget", "Pusher", "Sender", "http_sender"]

log = logging.getLogger("meta.oauth.push")

#: The ``typ`` of a push's JWS header, so it can never pass for an access token.
PUSH_TYPE = "srcore-push+jwt"
PUSH_TIMEOUT = 2.0
PUSH_LIFETIME = 60

#: ``sender(url, body)``: deliver one compact JWS; raise on failure.
Sender = Callable[[str, str], None]


def http_sender(url: str, body: str) -> None:
    """POST *body* as ``application/jwt`` with a 2 s timeout, no redirects."""
    import requests

    response = requests.post(
        url,
        data=body.encode("ascii"),
        headers={"Content-Type": "application/jwt"},
        timeout=PUSH_TIMEOUT,
        allow_redirects=False,
    )
    if response.status_code >= 300:
        raise RuntimeError(f"{url} answered {response.status_code}")


@dataclass(frozen=True)
class PushTarget:
    """A service that receives pushes, and the base URL meta reaches it at."""

    service_id: str
    base_url: str


class Pusher:
    """Signs and sends pushes in the background."""

    def __init__(
        self,
        *,
        issuer: str,
        ring: KeyRing,
        targets: Sequence[PushTarget],
        sender: Sender = http_sender,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.ring = ring
        self.targets = list(targets)
        self.sender = sender
        self.clock = clock
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()

    def message(self, service_id: str, events: list[dict[str, Any]]) -> str:
        """The signed JWS carrying *events* to *service_id*."""
        from srcore.auth import jose

        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "aud": service_id,
            "iat": now,
            "exp": now + PUSH_LIFETIME,
            "jti": uuid.uuid4().hex,
            "events": events,
        }
        return jose.sign(claims, self.ring.signing_key(), typ=PUSH_TYPE)

    def push_revocations(self, events: list[dict[str, Any]]) -> None:
        """Send revocation events to every service's ``/_srcore/revocations``."""
        if events and self.targets:
            self._start("/_srcore/revocations", events)

    def push_profile(self, user_id: int, profile: dict[str, Any]) -> None:
        """Send a user's new profile to every service's ``/_srcore/profile``."""
        event = {
            "seq": None,
            "kind": "profile",
            "subject": str(user_id),
            "not_before": None,
            "expires_at": None,
            "profile": profile,
        }
        if self.targets:
            self._start("/_srcore/profile", [event])

    def _start(self, path: str, events: list[dict[str, Any]]) -> None:
        thread = threading.Thread(
            target=self._send_all, args=(path, events), name="meta-push", daemon=True
        )
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _send_all(self, path: str, events: list[dict[str, Any]]) -> None:
        try:
            for target in self.targets:
                url = target.base_url.rstrip("/") + path
                try:
                    self.sender(url, self.message(target.service_id, events))
                except Exception as exc:  # one dead service must not stop the others
                    log.warning("push to %s failed (the service will pull it): %s", url, exc)
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def wait(self, timeout: float = 10.0) -> None:
        """Wait for the pushes under way (tests, graceful shutdown)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads:
                return
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            if time.monotonic() >= deadline:
                return
