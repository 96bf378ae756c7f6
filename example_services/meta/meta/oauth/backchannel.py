"""OpenID Connect Back-Channel Logout: meta tells the applications a login ended.

When a browser logs out of meta (or an account's every session ends: "log out
everywhere", a password change, a suspension, a deletion), each third-party client that
registered a ``backchannel_logout_uri`` and got an ID token from that login is POSTed a
logout token: a JWT signed like its ID tokens, naming the user (``sub``) and, for one
browser's logout, the login session (``sid``).

The POSTs go through srcore's outbound :class:`Sender`, so the same SSRF policy as
webhooks applies (``[global] allow-private-webhook-targets``, ``webhook-allowed-ports``),
with a short deadline, from a small thread pool: a slow application never holds up the
logout page. They go once the transaction that ends the login commits, never if it rolls
back (:meth:`Backchannel.send_on_commit`). Delivery is tried once; a client that missed it
still sees the access and refresh tokens of the grant die with the session where that
applies.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

if TYPE_CHECKING:
    from flask import Flask

    from meta.oauth.clients import Client
    from meta.oauth.server import OAuthState

__all__ = ["LOGOUT_EVENT", "Backchannel", "Notice", "logout_claims", "notices_for"]

log = logging.getLogger("meta.oauth.backchannel")

LOGOUT_EVENT = "http://schemas.openid.net/event/backchannel-logout"
#: A logout token is good for this many seconds after it is made.
LOGOUT_TOKEN_LIFETIME = 120
#: Each POST gives up after this many seconds (lookup, connect, send and answer).
DEADLINE = 5.0
#: Only logins of this long ago or less are looked at (older ones' sessions are gone).
HORIZON_DAYS = 60


@dataclass(frozen=True)
class Notice:
    """One logout token to send: to which client's URI, about whom."""

    client_id: str
    url: str
    alg: str
    sub: str
    sid: str | None


def logout_claims(*, issuer: str, client_id: str, sub: str, sid: str | None) -> dict[str, Any]:
    """The claims of a logout token (OpenID Connect Back-Channel Logout 1.0, 2.4)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": client_id,
        "iat": now,
        "exp": now + LOGOUT_TOKEN_LIFETIME,
        "jti": uuid.uuid4().hex,
        "sub": sub,
        "events": {LOGOUT_EVENT: {}},
    }
    if sid is not None:
        claims["sid"] = sid
    return claims


def notices_for(
    session: Session, st: OAuthState, user_id: int, *, sid: str | None = None
) -> list[Notice]:
    """The logout tokens to send when *user_id*'s login *sid* ends (None: every login)."""
    from datetime import timedelta

    from meta.oauth.models import AuthorizationCode
    from meta.oauth.oidc import client_algorithm
    from srcore.db import utcnow

    query = select(AuthorizationCode.client_id, AuthorizationCode.sid).where(
        AuthorizationCode.user_id == user_id,
        AuthorizationCode.sid.is_not(None),
        AuthorizationCode.created > utcnow() - timedelta(days=HORIZON_DAYS),
    )
    if sid is not None:
        query = query.where(AuthorizationCode.sid == sid)
    seen: set[str] = set()
    notices: list[Notice] = []
    for client_id, code_sid in session.execute(query.distinct()):
        if client_id in seen:
            continue
        seen.add(client_id)
        client: Client | None = st.query_client(client_id)
        if client is None or not client.backchannel_logout_uri:
            continue
        notices.append(
            Notice(
                client_id=client_id,
                url=client.backchannel_logout_uri,
                alg=client_algorithm(client),
                sub=str(user_id),
                sid=code_sid if sid is not None else None,
            )
        )
    return notices


class Backchannel:
    """Sends logout tokens for one app; ``OAuthState.extra["backchannel"]``.

    *sender* defaults to a :class:`~srcore.outbound.sender.PooledSender` under the app's
    webhook address policy, made on first use (no thread or pool at app build time).
    """

    def __init__(self, app: Flask, *, sender: Any = None, workers: int = 4) -> None:
        self.app = app
        self._sender = sender
        self._workers = workers
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def _pool(self) -> tuple[Any, ThreadPoolExecutor]:
        with self._lock:
            if self._sender is None:
                self._sender = _make_sender(self.app)
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._workers, thread_name_prefix="meta-backchannel"
                )
            return self._sender, self._executor

    def send_on_commit(self, session: Session, notices: list[Notice]) -> None:
        """Send *notices* once *session*'s transaction commits: the logout they announce is
        that transaction's, and none is announced if it rolls back."""
        from srcore.oncommit import after_commit

        if notices:
            after_commit(session, self._send_committed, *notices)

    def _send_committed(self, notices: list[Notice]) -> None:
        from flask import current_app, has_app_context

        try:
            if has_app_context() and current_app._get_current_object() is self.app:  # type: ignore[attr-defined]
                self.send(self.app.extensions["meta.oauth"], notices)
                return
            with self.app.app_context():  # a commit outside a request (scripts)
                self.send(self.app.extensions["meta.oauth"], notices)
        except Exception:  # the logout has committed whatever the applications do
            log.exception("back-channel logout not sent")

    def send(self, st: OAuthState, notices: list[Notice]) -> list[Future[Any]]:
        """Sign and POST each notice's logout token in the background; the futures say
        how each went (an :class:`~srcore.outbound.sender.Exchange`)."""
        from meta.oauth.oidc import sign_jwt

        if not notices:
            return []
        sender, executor = self._pool()
        futures = []
        for notice in notices:
            claims = logout_claims(
                issuer=st.issuer, client_id=notice.client_id, sub=notice.sub, sid=notice.sid
            )
            token = sign_jwt(claims, notice.alg, typ="logout+jwt")
            futures.append(executor.submit(_post, sender, notice, token))
        return futures

    def close(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _make_sender(app: Flask) -> Any:
    from srcore.outbound import PooledSender, policy_for

    return PooledSender(policy_for(app))


def _post(sender: Any, notice: Notice, token: str) -> Any:
    body = urlencode({"logout_token": token}).encode("ascii")
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "Cache-Control": "no-store",
        "User-Agent": "meta-backchannel-logout",
    }
    exchange = sender.post(notice.url, headers, body, deadline=time.monotonic() + DEADLINE)
    if exchange.error is not None or exchange.status != 200:
        log.warning(
            "back-channel logout to client %s failed: %s",
            notice.client_id,
            exchange.error or f"HTTP {exchange.status}",
        )
    return exchange
