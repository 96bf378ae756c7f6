"""meta and the services read revocation events with one rule (srcore.identity.protocol):
meta's check over its table answers as a service's store fed with the same events."""

from __future__ import annotations

import itertools
import time
from typing import Any

from srcore.auth.revocation import MemoryRevocationStore
from srcore.auth.tokens import AccessToken


def _access_token(claims: dict[str, Any]) -> AccessToken:
    """What a service's verifier makes of these claims."""
    return AccessToken(
        subject=int(claims["sub"]) if claims.get("sub") else None,
        client_id=claims["client_id"],
        scopes=frozenset(),
        expires_at=claims["iat"] + 3600,
        issued_at=claims["iat"],
        jti=claims["jti"],
        hash="h",
        claims=claims,
    )


def test_meta_and_a_service_revoke_the_same_tokens(app: Any) -> None:
    from meta.oauth import events
    from meta.oauth.models import RevocationEvent

    now = int(time.time())
    written = [
        ("token", "j1", None, now + 60),
        ("token", "j-gone", None, now - 60),  # outlived: its token has expired
        ("grant", "g1", None, now + 60),
        ("client", "app", now, None),
        ("user", "7", now - 5, None),
        ("session", "8", now, None),  # web sessions only
        ("suspend", "9", None, None),  # meta refuses suspended accounts on its own
    ]
    st = app.extensions["srcore"]
    store = MemoryRevocationStore()
    with st.db.transaction() as db:
        rows = [
            RevocationEvent(kind=k, subject=s, not_before=nb, expires_at=exp)
            for k, s, nb, exp in written
        ]
        db.add_all(rows)
        db.flush()
        store.apply(events.event_of(row) for row in rows)
        checked = 0
        for jti, grant, client, sub, iat in itertools.product(
            ["j1", "j-gone", "j2"],
            [None, "g1", "g2"],
            ["app", "other"],
            [None, "7", "8"],
            [now - 10, now - 5, now, now + 1],
        ):
            claims: dict[str, Any] = {"jti": jti, "client_id": client, "iat": iat}
            if grant is not None:
                claims["grant"] = grant
            if sub is not None:
                claims["sub"] = sub
            expected = store.is_revoked(_access_token(claims))
            assert events.is_revoked(db, claims) == expected, claims
            checked += 1
        db.rollback()
    assert checked == 3 * 3 * 2 * 3 * 4


def test_a_second_logout_in_the_same_second_still_ends_a_login_made_between(
    app: Any, accounts: Any, monkeypatch: Any
) -> None:
    """Logout, login, logout, all in one second: the service moved the login past the
    first cut-off (to the next second), so the second cut-off must reach past it."""
    from meta import oauth
    from meta.oauth.models import RevocationEvent
    from sqlalchemy import select

    from srcore.identity.protocol import session_cut_off

    alice = accounts.make("alice")
    second = float(int(time.time()))
    monkeypatch.setattr(oauth.time, "time", lambda: second + 0.5)  # the clock stands still
    cut_offs = []
    for _ in range(2):
        with app.extensions["srcore"].db.transaction() as session:
            oauth._user_event(session.get(type(alice), alice.id), "user")
        with app.extensions["srcore"].db.transaction() as session:
            query = select(RevocationEvent.not_before).order_by(RevocationEvent.seq.desc())
            cut_offs.append(session.scalar(query.limit(1)))
    first, then = cut_offs
    assert first == int(second)
    # A service that knew of the first moved the login to the second after it.
    login = float(first + 1)
    assert not session_cut_off(login, first)
    assert session_cut_off(login, then)
