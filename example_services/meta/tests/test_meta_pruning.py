"""meta's hourly pruning (:mod:`meta.oauth.pruning`, run by its webhook worker): what
outlived its use goes, and nothing that can still be used, replayed or revoked does, nor
a revocation event that still revokes something or that a service may be checking."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select

from srcore.db import utcnow

DAY = timedelta(days=1)


def _insert(app: Any, model: Any, rows: list[dict[str, Any]]) -> None:
    with app.extensions["srcore"].db.transaction() as session:
        session.execute(insert(model), rows)


def _grant(user_id: int, client_id: str, *, used: Any, revoked: Any = None) -> dict[str, Any]:
    return {
        "id": uuid.uuid4().hex,
        "user_id": user_id,
        "client_id": client_id,
        "scope": "meta/profile:RO",
        "created": used,
        "last_used": used,
        "revoked_at": revoked,
    }


def _code(user_id: int, grant_id: str | None, expires: Any) -> dict[str, Any]:
    return {
        "code_hash": uuid.uuid4().hex,
        "client_id": "widget",
        "user_id": user_id,
        "scope": "meta/profile:RO",
        "expires_at": expires,
        "grant_id": grant_id,
    }


def _pat(user_id: int, expires: Any, parent: str | None = None) -> dict[str, Any]:
    return {
        "user_id": user_id,
        "name": "t",
        "scope": "meta/profile:RO",
        "jti": uuid.uuid4().hex,
        "kid": "k",
        "expires_at": expires,
        "parent": parent,
    }


def test_the_hourly_pruning_deletes_what_outlived_its_use_and_nothing_else(
    app: Any, accounts: Any
) -> None:
    from meta.models import AuditEntry, EmailToken, TokenPurpose
    from meta.oauth.models import (
        AuthorizationCode,
        Grant,
        PersonalAccessToken,
        RefreshToken,
        RevocationEvent,
    )
    from meta.oauth.pruning import prune

    from srcore.webhooks import webhooks_state

    alice = accounts.make("alice")
    now = utcnow()
    long_ago = now - 90 * DAY
    access = timedelta(minutes=15)
    newest = _grant(alice.id, "widget", used=now - 60 * DAY)  # the Security page lists it
    dead = _grant(alice.id, "widget", used=long_ago)  # an older login, nothing left of it
    parent = _grant(alice.id, "widget", used=long_ago)  # a token made through it lives
    refreshable = _grant(alice.id, "gadget", used=long_ago)  # its refresh token lives
    revoked_now = _grant(alice.id, "gadget", used=long_ago, revoked=now)  # its tokens live
    revoked = _grant(alice.id, "gadget", used=long_ago, revoked=long_ago)
    _insert(app, Grant, [newest, dead, parent, refreshable, revoked_now, revoked])
    _insert(
        app,
        RefreshToken,
        [
            {"token_hash": uuid.uuid4().hex, "grant_id": refreshable["id"], "expires_at": now},
            {"token_hash": "spent", "grant_id": revoked["id"], "expires_at": long_ago},
        ],
    )
    codes = [
        _code(alice.id, newest["id"], long_ago),  # kept with its grant: a replay revokes it
        _code(alice.id, dead["id"], long_ago),
        _code(alice.id, None, long_ago),  # never exchanged
        _code(alice.id, None, now),  # may still be
    ]
    _insert(app, AuthorizationCode, codes)
    pats = [
        _pat(alice.id, now + DAY, parent=parent["id"]),
        _pat(alice.id, now - 2 * DAY),
        _pat(alice.id, now - DAY / 2),  # within the day's grace
    ]
    _insert(app, PersonalAccessToken, pats)
    links = [
        {"purpose": TokenPurpose.reset, "expires": now - 2 * DAY},
        {"purpose": TokenPurpose.confirm, "expires": now + DAY},
    ]
    _insert(
        app,
        EmailToken,
        [
            {**link, "user_id": alice.id, "token_hash": uuid.uuid4().hex, "email": "a@b.example"}
            for link in links
        ],
    )
    past, ahead = int((now - 30 * DAY).timestamp()), int((now + DAY).timestamp())
    events = [
        ("token", "a", None, past, long_ago),  # its token expired: gone
        ("session", "1", 100, None, long_ago),  # cut off again by the next one: gone
        ("session", "1", 200, None, long_ago),
        ("suspend", "1", None, None, long_ago),  # suspensions stay
        ("grant", "g", None, ahead, long_ago),  # its tokens still live
        ("token", "b", None, past, long_ago),  # the newest before the last day stays
        ("token", "c", None, past, now),  # and each one of the last day
    ]
    _insert(
        app,
        RevocationEvent,
        [
            {"kind": k, "subject": s, "not_before": nb, "expires_at": ex, "created": at}
            for k, s, nb, ex, at in events
        ],
    )
    year = timedelta(days=365)
    _insert(app, AuditEntry, [{"kind": "login", "created": at} for at in (now - 2 * year, now)])
    # meta's worker calls it every hour, with the delivery log's pruning.
    assert any(getattr(hook, "func", None) is prune for hook in webhooks_state(app).prune)

    with app.extensions["srcore"].db.session() as session:
        assert prune(session, now, access_lifetime=access, audit_retention=year) == 10
        assert list(session.scalars(select(AuditEntry.created))) == [now]
        kept_events = session.execute(
            select(RevocationEvent.kind, RevocationEvent.subject, RevocationEvent.not_before)
        ).all()
        assert sorted(kept_events, key=str) == sorted(
            [(k, s, nb) for k, s, nb, _, _ in events[2:]], key=str
        )
        grants = set(session.scalars(select(Grant.id)))
        assert grants == {g["id"] for g in (newest, parent, refreshable, revoked_now)}
        assert set(session.scalars(select(RefreshToken.grant_id))) == {refreshable["id"]}
        kept_codes = set(session.scalars(select(AuthorizationCode.code_hash)))
        assert kept_codes == {codes[0]["code_hash"], codes[3]["code_hash"]}
        kept_pats = set(session.scalars(select(PersonalAccessToken.jti)))
        assert kept_pats == {pats[0]["jti"], pats[2]["jti"]}
        assert list(session.scalars(select(EmailToken.purpose))) == [TokenPurpose.confirm]
        # A second pass finds nothing more.
        assert prune(session, now, access_lifetime=access) == 0
