"""Revocation events: written in the revoking transaction, pushed once it commits.

Kinds (see the network's identity contract): ``token`` (subject: jti), ``grant`` (grant
id), ``client`` (client id, not_before), ``session`` (user id, not_before: web sessions
only, sent on logout), ``user`` (user id, not_before: tokens and web
sessions issued before it die), ``suspend`` and ``unsuspend`` (user id). Events of kind
token and grant expire with the tokens they kill; the others have no expiry (a service
keeps the newest per subject).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, event, or_, select
from sqlalchemy.orm import Session, sessionmaker

from meta.oauth.models import Grant, RevocationEvent
from srcore.db import utcnow

__all__ = ["KINDS", "emit", "install", "is_revoked", "revoke_grant"]

KINDS = frozenset({"token", "grant", "client", "user", "session", "suspend", "unsuspend"})
_PENDING = "meta_oauth_pending_events"


def emit(
    session: Session,
    kind: str,
    subject: str,
    *,
    not_before: int | None = None,
    expires_at: int | None = None,
) -> RevocationEvent:
    """Add one event to *session*'s transaction; it is pushed after the commit."""
    if kind not in KINDS:
        raise ValueError(f"unknown revocation event kind {kind!r}")
    row = RevocationEvent(kind=kind, subject=subject, not_before=not_before, expires_at=expires_at)
    session.add(row)
    session.flush()
    session.info.setdefault(_PENDING, []).append(row.as_dict())
    return row


def revoke_grant(session: Session, grant: Grant, *, lifetime: int) -> None:
    """Revoke *grant* (its refresh tokens stop working) and emit a ``grant`` event."""
    if grant.revoked_at is None:
        grant.revoked_at = utcnow()
    emit(session, "grant", grant.id, expires_at=int(time.time()) + lifetime)


def install(factory: sessionmaker[Session], push: Any) -> None:
    """Push the events of every committed transaction of *factory*'s sessions via *push*."""

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        events = session.info.pop(_PENDING, None)
        if events:
            push(events)

    @event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        session.info.pop(_PENDING, None)


def is_revoked(session: Session, claims: Mapping[str, Any]) -> bool:
    """Whether meta has revoked the token with these (verified) claims."""
    iat = claims.get("iat")
    iat = iat if isinstance(iat, int) else 0
    conditions = [
        and_(RevocationEvent.kind == "token", RevocationEvent.subject == str(claims.get("jti")))
    ]
    grant = claims.get("grant")
    if isinstance(grant, str):
        conditions.append(and_(RevocationEvent.kind == "grant", RevocationEvent.subject == grant))
    client_id = claims.get("client_id")
    if isinstance(client_id, str):
        conditions.append(
            and_(
                RevocationEvent.kind == "client",
                RevocationEvent.subject == client_id,
                RevocationEvent.not_before > iat,
            )
        )
    subject = claims.get("sub")
    if isinstance(subject, str) and subject.isdigit():
        conditions.append(
            and_(
                RevocationEvent.kind == "user",
                RevocationEvent.subject == subject,
                RevocationEvent.not_before > iat,
            )
        )
    query = select(RevocationEvent.seq).where(or_(*conditions)).limit(1)
    return session.scalar(query) is not None
