"""Revocation events: written in the revoking transaction, with their webhook.

Each event is a ``revocation_event`` row (what the services' pull reads, by seq) and, in
the same transaction, a ``revocation:issued`` webhook in srcore's outbox carrying
``{"events": [EVENT]}``, which meta's webhook worker delivers to every service's
``/_srcore/events`` (:mod:`meta.oauth.network`). Nothing is sent if the transaction rolls
back, and nothing committed is lost.

Kinds (see the network's identity contract): ``token`` (subject: jti), ``grant`` (grant
id), ``client`` (client id, not_before), ``session`` (user id, not_before: web sessions
only, sent on logout), ``user`` (user id, not_before: tokens and web
sessions issued before it die), ``suspend`` and ``unsuspend`` (user id). Events of kind
token and grant expire with the tokens they kill; the others have no expiry (a service
keeps the newest per subject).

A personal access token made through the API by another token is tied to what that token
came from (its ``parent``: a grant id or ``pat:<id>``): revoking the grant or the token
revokes it, and its own children, each with a ``token`` event of its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, event, or_, select
from sqlalchemy.orm import Session, sessionmaker

from meta.oauth.models import Grant, PersonalAccessToken, RevocationEvent
from meta.oauth.network import REVOCATION_EVENT, Network
from srcore.db import utcnow

__all__ = [
    "KINDS",
    "emit",
    "install",
    "is_revoked",
    "revoke_descendants",
    "revoke_grant",
    "revoke_pat",
]

KINDS = frozenset({"token", "grant", "client", "user", "session", "suspend", "unsuspend"})


def emit(
    session: Session,
    kind: str,
    subject: str,
    *,
    not_before: int | None = None,
    expires_at: int | None = None,
) -> RevocationEvent:
    """Add one event and its ``revocation:issued`` webhook to *session*'s transaction."""
    if kind not in KINDS:
        raise ValueError(f"unknown revocation event kind {kind!r}")
    row = RevocationEvent(kind=kind, subject=subject, not_before=not_before, expires_at=expires_at)
    session.add(row)
    session.flush()
    Network.of(session).emit(session, REVOCATION_EVENT, {"events": [row.as_dict()]})
    if kind == "grant":
        revoke_descendants(session, subject)
    elif kind == "token":
        pat_id = session.scalar(
            select(PersonalAccessToken.id).where(PersonalAccessToken.jti == subject)
        )
        if pat_id is not None:
            revoke_descendants(session, f"pat:{pat_id}")
    return row


def revoke_pat(session: Session, row: PersonalAccessToken) -> None:
    """Revoke a personal access token (and the tokens it made) with a ``token`` event."""
    if row.revoked_at is None:
        row.revoked_at = utcnow()
    emit(session, "token", row.jti, expires_at=int(row.expires_at.timestamp()))


def revoke_descendants(session: Session, parent: str) -> None:
    """Revoke the live personal access tokens made by a token of *parent*."""
    children = session.scalars(
        select(PersonalAccessToken).where(
            PersonalAccessToken.parent == parent, PersonalAccessToken.revoked_at.is_(None)
        )
    ).all()
    for child in children:
        revoke_pat(session, child)


def revoke_grant(session: Session, grant: Grant, *, lifetime: int) -> None:
    """Revoke *grant* (its refresh tokens stop working) and emit a ``grant`` event."""
    if grant.revoked_at is None:
        grant.revoked_at = utcnow()
    emit(session, "grant", grant.id, expires_at=int(time.time()) + lifetime)


def install(factory: sessionmaker[Session], network: Network) -> None:
    """Tell *network* when a transaction of *factory*'s sessions that ensured its
    subscriptions commits (they are there for good) or rolls back (they are not)."""

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        network.committed(session)

    @event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        network.rolled_back(session)


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
