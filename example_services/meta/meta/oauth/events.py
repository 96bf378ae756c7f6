"""Revocation events: written in the revoking transaction, with their webhook.

Each event is a ``revocation_event`` row (what the services' pull reads, by seq) and, in
the same transaction, a ``revocation:issued`` webhook in srcore's outbox carrying
``{"events": [EVENT]}``, which meta's webhook worker delivers to every service's
``/_srcore/events`` (:mod:`meta.oauth.network`). Nothing is sent if the transaction rolls
back, and nothing committed is lost.

The kinds, their wire format and what each revokes are :mod:`srcore.identity.protocol`'s,
which the services apply too: meta's own check (:func:`is_revoked`) reads its table with
the same rule.

A personal access token made through the API by another token is tied to what that token
came from (its ``parent``: a grant id or ``pat:<id>``): revoking the grant or the token
revokes it, and its own children, each with a ``token`` event of its own.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, event, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from meta.oauth.models import AuthorizationCode, Grant, PersonalAccessToken, RevocationEvent
from meta.oauth.network import Network
from srcore.db import utcnow
from srcore.identity import protocol

__all__ = [
    "KINDS",
    "emit",
    "event_of",
    "install",
    "is_revoked",
    "revoke_descendants",
    "revoke_grant",
    "revoke_pat",
    "spend_codes",
]

KINDS = protocol.KINDS


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
    data = protocol.push_data([event_of(row)])
    Network.of(session).emit(session, protocol.REVOCATION_EVENT, data)
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


def spend_codes(session: Session, user_id: int, client_id: str | None = None) -> None:
    """Spend the codes of *user_id* (given to *client_id*, or to any client) that no
    client has exchanged yet: a code is a grant waiting to be made, and what revokes the
    grants must also stop the ones not made yet. The token endpoint then refuses them as
    used (the grant to revoke with them is none).

    Called before the grants are read: a code being exchanged at this moment is held by
    its exchange, so on PostgreSQL this waits for it, and the grant it made is then found.
    """
    query = update(AuthorizationCode).where(
        AuthorizationCode.user_id == user_id, AuthorizationCode.used_at.is_(None)
    )
    if client_id is not None:
        query = query.where(AuthorizationCode.client_id == client_id)
    session.execute(query.values(used_at=utcnow()).execution_options(synchronize_session=False))


def install(factory: sessionmaker[Session], network: Network) -> None:
    """Tell *network* when a transaction of *factory*'s sessions that ensured its
    subscriptions commits (they are there for good) or rolls back (they are not)."""

    @event.listens_for(factory, "after_commit")
    def _after_commit(session: Session) -> None:
        network.committed(session)

    @event.listens_for(factory, "after_rollback")
    def _after_rollback(session: Session) -> None:
        network.rolled_back(session)


def event_of(row: RevocationEvent) -> protocol.RevocationEvent:
    """The protocol's event for one stored row."""
    return protocol.RevocationEvent(
        seq=row.seq,
        kind=row.kind,
        subject=row.subject,
        not_before=row.not_before,
        expires_at=row.expires_at,
    )


def is_revoked(session: Session, claims: Mapping[str, Any]) -> bool:
    """Whether meta has revoked the token with these (verified) claims.

    Reads the events about the token's jti, grant, client and user, and asks the
    protocol's rule (:func:`srcore.identity.protocol.revokes`) about each, as every
    service does with the events it was sent.
    """
    token = protocol.TokenFacts.from_claims(claims)
    about = [("token", token.jti), ("grant", token.grant)]
    about += [("client", token.client_id), ("user", token.user)]
    conditions = [
        and_(RevocationEvent.kind == kind, RevocationEvent.subject == subject)
        for kind, subject in about
        if subject is not None
    ]
    rows = session.scalars(select(RevocationEvent).where(or_(*conditions))).all()
    now = time.time()
    return any(protocol.revokes(event_of(row), token, now=now) for row in rows)
