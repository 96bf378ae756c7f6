"""The audit log: every security event of an account, with when, where from and what browser.

:func:`record` adds an entry in the caller's transaction, so an entry exists exactly when
the change it describes was committed (a failed login commits its entry on its own). The
user reads theirs on ``/security``; admins read everyone's at ``/admin/audit``.

Retention (``[meta] audit-retention``, default one year) is applied on write: recording an
entry deletes the entries older than the retention, and once that has committed the
process waits :data:`PRUNE_EVERY` before it prunes again. meta's webhook worker prunes
too, every hour (:mod:`meta.oauth.pruning`), so an idle network's old entries go within
the hour.

Each entry is also a webhook, ``audit:recorded`` (audience ``internal``): it goes only to
the first-party subscriptions of the services named in ``[meta] audit-subscribers`` (a
log collector of the operator's, for one), never to a user's subscription. With no
subscriber configured, nothing is written to the outbox.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, TypedDict

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from meta.models import AuditEntry
from srcore.db import utcnow
from srcore.oncommit import after_commit

__all__ = [
    "AUDIT_EVENT",
    "PRUNE_EVERY",
    "AuditFilter",
    "AuditJSON",
    "Kind",
    "agent_summary",
    "entry_json",
    "prune",
    "record",
]

#: The webhook event every entry is exported as.
AUDIT_EVENT = "audit:recorded"
#: After a committed prune, a process waits this long before it prunes on write again.
PRUNE_EVERY = timedelta(minutes=10)
_LAST_PRUNE = "audit_last_prune"
#: What a stored text may not hold: control characters (NUL cannot even be stored in
#: PostgreSQL) and lone surrogates (no database can encode them).
_UNSTORABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ud800-\udfff]")


class Kind(enum.StrEnum):
    """What happened. The values are stored and sent in webhooks: never rename one."""

    login = "login"
    login_failed = "login-failed"
    logout = "logout"
    factor_added = "factor-added"
    factor_removed = "factor-removed"
    factor_used = "factor-used"
    recovery_codes_renewed = "recovery-codes-renewed"
    password_changed = "password-changed"  # noqa: S105 - an event name
    email_changed = "email-changed"
    token_created = "token-created"  # noqa: S105 - an event name
    token_revoked = "token-revoked"  # noqa: S105 - an event name
    app_authorized = "app-authorized"
    app_revoked = "app-revoked"
    account_suspended = "account-suspended"
    account_unsuspended = "account-unsuspended"
    factors_reset = "factors-reset"
    role_changed = "role-changed"
    login_throttled = "login-throttled"
    account_deleted = "account-deleted"
    passkey_added = "passkey-added"
    passkey_removed = "passkey-removed"
    passkey_used = "passkey-used"
    passkey_failed = "passkey-failed"

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    Kind.login: "Logged in",
    Kind.login_failed: "Failed login",
    Kind.logout: "Logged out",
    Kind.factor_added: "Two-factor sign-in turned on",
    Kind.factor_removed: "Two-factor sign-in turned off",
    Kind.factor_used: "Second factor used",
    Kind.recovery_codes_renewed: "New recovery codes made",
    Kind.password_changed: "Password changed",
    Kind.email_changed: "Email address changed",
    Kind.token_created: "Personal access token created",
    Kind.token_revoked: "Token revoked",
    Kind.app_authorized: "Application authorized",
    Kind.app_revoked: "Application revoked",
    Kind.account_suspended: "Account suspended",
    Kind.account_unsuspended: "Account unsuspended",
    Kind.factors_reset: "Second factors reset by an admin",
    Kind.role_changed: "Admin rights changed",
    Kind.login_throttled: "Login refused: too many failures",
    Kind.account_deleted: "Account deleted",
    Kind.passkey_added: "Passkey added",
    Kind.passkey_removed: "Passkey removed",
    Kind.passkey_used: "Passkey used",
    Kind.passkey_failed: "Passkey refused",
}


class AuditJSON(TypedDict):
    """One audit entry, as the ``audit:recorded`` webhook carries it."""

    id: int
    kind: str
    user_id: int | None
    actor_id: int | None
    created: str
    address: str
    user_agent: str
    detail: str


def entry_json(entry: AuditEntry) -> AuditJSON:
    return AuditJSON(
        id=entry.id,
        kind=entry.kind,
        user_id=entry.user_id,
        actor_id=entry.actor_id,
        created=entry.created.isoformat(),
        address=entry.address,
        user_agent=entry.user_agent,
        detail=entry.detail,
    )


def _request_facts() -> tuple[str, str]:
    """The client address and user agent of the current request, if there is one."""
    from flask import has_request_context, request

    if not has_request_context():
        return "", ""
    agent = request.headers.get("User-Agent", "")
    return _storable(request.remote_addr or "", 64), _storable(agent, 256)


def _storable(text: str, limit: int) -> str:
    """*text* cut to *limit* characters, each one that cannot be stored replaced.

    An entry's text often quotes what a client sent: a passkey's refused answer is
    described by the library that read it ("Unexpected client data origin ..."), in the
    client's own characters. The entry must still be written, and say what it can. A cut
    text ends in an ellipsis, so the log never passes off the start of a suspension
    notice as all of it.
    """
    if len(text) > limit:
        text = text[: limit - 1] + "\u2026"
    return _UNSTORABLE.sub("\ufffd", text)


def record(
    session: Session,
    kind: Kind,
    user_id: int | None,
    *,
    actor_id: int | None = None,
    detail: str = "",
    now: datetime | None = None,
) -> AuditEntry:
    """Add an entry for *kind* to *session*'s transaction (and its webhook); flushes."""
    address, agent = _request_facts()
    entry = AuditEntry(
        created=now or utcnow(),
        user_id=user_id,
        actor_id=actor_id,
        kind=str(kind),
        address=address,
        user_agent=agent,
        detail=_storable(detail, 256),
    )
    session.add(entry)
    session.flush()
    _prune_now_and_then(session, entry.created)
    _export(session, entry)
    return entry


def prune(session: Session, *, now: datetime, retention: timedelta) -> int:
    """Delete the entries older than *retention*; return how many went."""
    result = session.execute(delete(AuditEntry).where(AuditEntry.created < now - retention))
    return int(getattr(result, "rowcount", 0) or 0)


def retention() -> timedelta:
    from meta.settings import meta_settings

    return meta_settings().audit_retention


def _prune_now_and_then(session: Session, now: datetime) -> None:
    from flask import current_app, has_app_context

    if not has_app_context():
        return
    extra: dict[str, Any] = current_app.extensions["meta"].extra
    last = extra.get(_LAST_PRUNE)
    if isinstance(last, datetime) and now - last < PRUNE_EVERY:
        return
    prune(session, now=now, retention=retention())

    def pruned(times: list[datetime]) -> None:
        # Only a committed prune counts: one rolled back with its entry deleted nothing.
        extra[_LAST_PRUNE] = max(times)

    after_commit(session, pruned, now)


def _export(session: Session, entry: AuditEntry) -> None:
    from flask import current_app, has_app_context

    if not has_app_context() or "meta.oauth" not in current_app.extensions:
        return
    from meta.oauth.network import Network

    network = Network.of(session)
    if network.wants(AUDIT_EVENT):
        network.emit(session, AUDIT_EVENT, entry_json(entry), owner_id=entry.user_id)


# -- reading -------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditFilter:
    """What the admins' audit page narrows the log to; None means no condition."""

    user_id: int | None = None
    kind: Kind | None = None
    since: date | None = None
    until: date | None = None

    def statement(self) -> Select[AuditEntry]:
        """The matching entries, newest first; *until* includes its whole day (UTC)."""
        from datetime import UTC

        stmt = select(AuditEntry).order_by(AuditEntry.created.desc(), AuditEntry.id.desc())
        if self.user_id is not None:
            stmt = stmt.where(AuditEntry.user_id == self.user_id)
        if self.kind is not None:
            stmt = stmt.where(AuditEntry.kind == str(self.kind))
        if self.since is not None:
            stmt = stmt.where(AuditEntry.created >= datetime.combine(self.since, time(), UTC))
        # The last day there is (9999-12-31) has no next day to end before: no bound.
        if self.until is not None and self.until < date.max:
            end = datetime.combine(self.until + timedelta(days=1), time(), UTC)
            stmt = stmt.where(AuditEntry.created < end)
        return stmt


#: Browsers by a token of their user agent, most specific first (Edge and Opera also say
#: Chrome; Chrome also says Safari).
_BROWSERS = (
    ("Edg/", "Edge"),
    ("OPR/", "Opera"),
    ("Firefox/", "Firefox"),
    ("HeadlessChrome/", "Headless Chrome"),
    ("Chrome/", "Chrome"),
    ("Chromium/", "Chromium"),
    ("Safari/", "Safari"),
    ("curl/", "curl"),
)
_SYSTEMS = (
    ("Android", "Android"),
    ("iPhone", "iOS"),
    ("iPad", "iPadOS"),
    ("Windows", "Windows"),
    ("Mac OS X", "macOS"),
    ("CrOS", "ChromeOS"),
    ("Linux", "Linux"),
)


def agent_summary(agent: str) -> str:
    """A few words for a user agent ("Firefox on Linux"); the agent itself if none fit.

    Only a reading aid: the full string is stored and shown beside it.
    """
    browser = next((name for token, name in _BROWSERS if token in agent), None)
    system = next((name for token, name in _SYSTEMS if token in agent), None)
    if browser and system:
        return f"{browser} on {system}"
    return browser or system or agent[:40]


def kind_label(kind: str) -> str:
    """The words for a stored *kind* (one this version no longer knows is shown as is)."""
    try:
        return Kind(kind).label
    except ValueError:
        return kind
