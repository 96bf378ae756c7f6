"""What meta's webhook worker deletes every hour, with the delivery log: the rows of
logins, authorizations and mailed links that outlived their use, the web sessions of
browsers unused for longer than ``session-lifetime``, and the audit entries older than
``audit-retention``.

Every login to a service through meta makes an authorization code, a grant and a refresh
token, every refresh another refresh token, every confirmation, reset or change of
address a mailed link: kept for good, meta's tables grew with every login however few
the accounts. A row goes once nothing can use it any more, a day after that
(:data:`GRACE`, past any clock's leeway):

- a mailed link (``email_token``), a day after it expired, used or not;
- a refresh token, a day after it expired (a rotated one is kept until then, so that its
  replay still revokes its grant);
- a grant that was revoked, once every access token it gave has expired; one that was not,
  once it has no refresh token left and its last access token has expired, unless it is
  the account's newest grant for that application (the applications page lists it) or a
  personal access token made from it still lives (revoking the grant revokes that token);
- an authorization code, a day after it expired, once its grant is gone (kept until then,
  so that its replay still revokes the grant);
- a personal access token, a day after it expired;
- a web session (a logged-in browser at meta), a day after its cookie expired:
  ``session-lifetime`` and a day after its last use (recorded at most an hour late,
  :data:`meta.logic.WEB_SESSION_USE_EVERY`). A login at meta forgets the account's
  unused ones too, but an account that never logs in again kept them for good;
- an audit entry older than ``[meta] audit-retention`` (also pruned as entries are
  written, :mod:`meta.audit`; here an idle network's go too);
- a revocation event that revokes nothing any more: a ``token`` or ``grant`` event once
  the tokens it matches have expired (:func:`srcore.identity.protocol.outlived`), a
  ``client``, ``user`` or ``session`` cut-off once a later one of the same kind and
  subject cuts off at least as much. Suspensions and deletions stay (the services compare
  the suspension a webhook account holds with meta's event at its seq), and so does every
  event made in the last day and the newest one before that: the services read the list
  by seq and check that the last event they pulled is still there, so only a process
  that could not pull for a day finds its own gone and reads the whole list again.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Delete, and_, delete, exists, or_, select
from sqlalchemy.orm import Session, aliased

from meta.audit import prune as prune_audit
from meta.models import EmailToken, WebSession
from meta.oauth.models import (
    AuthorizationCode,
    Grant,
    PersonalAccessToken,
    RefreshToken,
    RevocationEvent,
)
from srcore.identity.protocol import CLOCK_LEEWAY, CUTOFF_KINDS, EXPIRING_KINDS

__all__ = ["GRACE", "prune"]

#: How long past its end a row is kept: more than any clock's leeway.
GRACE = timedelta(days=1)


def prune(
    session: Session,
    now: datetime,
    *,
    access_lifetime: timedelta,
    audit_retention: timedelta | None = None,
    session_lifetime: timedelta | None = None,
) -> int:
    """Delete meta's rows that outlived their use (see the module); commit; return how many.

    *access_lifetime* is meta's ``access-token-lifetime``: how long a grant's access
    tokens live after it was last used or revoked; *audit_retention* its
    ``audit-retention`` (None: the audit log is left alone); *session_lifetime* its
    ``session-lifetime`` (None: the web sessions are left alone).
    """
    gone = now - GRACE
    removed = 0

    def run(statement: Delete) -> None:
        nonlocal removed
        result = session.execute(statement.execution_options(synchronize_session=False))
        removed += int(getattr(result, "rowcount", 0) or 0)

    run(delete(EmailToken).where(EmailToken.expires < gone))
    run(delete(RefreshToken).where(RefreshToken.expires_at < gone))
    tokens_over = gone - access_lifetime
    refreshable = select(RefreshToken.id).where(RefreshToken.grant_id == Grant.id).exists()
    child = select(PersonalAccessToken.id).where(
        PersonalAccessToken.parent == Grant.id,
        PersonalAccessToken.revoked_at.is_(None),
        PersonalAccessToken.expires_at >= gone,
    )
    newer = aliased(Grant)
    newest = ~exists().where(
        newer.user_id == Grant.user_id,
        newer.client_id == Grant.client_id,
        newer.revoked_at.is_(None),
        newer.id != Grant.id,
        (newer.last_used > Grant.last_used)
        | ((newer.last_used == Grant.last_used) & (newer.id > Grant.id)),
    )
    revoked_over = Grant.revoked_at.is_not(None) & (Grant.revoked_at < tokens_over)
    unused_over = (
        Grant.revoked_at.is_(None)
        & (Grant.last_used < tokens_over)
        & (Grant.created < tokens_over)
        & ~refreshable
        & ~newest
    )
    run(delete(Grant).where(revoked_over | unused_over, ~child.exists()))
    granted = select(Grant.id).where(Grant.id == AuthorizationCode.grant_id).exists()
    run(delete(AuthorizationCode).where(AuthorizationCode.expires_at < gone, ~granted))
    run(delete(PersonalAccessToken).where(PersonalAccessToken.expires_at < gone))
    if session_lifetime is not None:
        run(delete(WebSession).where(WebSession.last_used < gone - session_lifetime))
    run(_spent_revocations(now, gone))
    if audit_retention is not None:
        removed += prune_audit(session, now=now, retention=audit_retention)
    session.commit()
    return removed


def _spent_revocations(now: datetime, gone: datetime) -> Delete:
    """The revocation events that revoke nothing any more, made before *gone* and older
    than the newest event made before then (see the module)."""
    later, newer = aliased(RevocationEvent), aliased(RevocationEvent)
    settled = exists().where(later.seq > RevocationEvent.seq, later.created < gone)
    outlived = and_(
        RevocationEvent.kind.in_(sorted(EXPIRING_KINDS)),
        RevocationEvent.expires_at.is_not(None),
        RevocationEvent.expires_at + CLOCK_LEEWAY < int(now.timestamp()),
    )
    superseded = and_(
        RevocationEvent.kind.in_(sorted(CUTOFF_KINDS)),
        exists().where(
            newer.kind == RevocationEvent.kind,
            newer.subject == RevocationEvent.subject,
            newer.seq > RevocationEvent.seq,
            newer.not_before >= RevocationEvent.not_before,
        ),
    )
    return delete(RevocationEvent).where(
        RevocationEvent.created < gone, settled, or_(outlived, superseded)
    )
