"""meta's published keys with many personal access tokens: a retired key stays in
``/oauth/jwks.json`` while a live token it signed does, and the question is asked through
the tokens' (kid, expires_at) index.

On PostgreSQL the token table gets 40,000 rows (COPY, then ANALYZE) and the statement the
JWKS request sends is explained with the planner's default settings (``EXPLAIN``, nothing
run or timed): asked as EXISTS, its plan read the token table in order, all of it for a
key no live token names. On SQLite a smaller table checks the answer.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import select, text, update

from srcore.db import utcnow
from tests.scale_fill import bulk, nodes, plan, statements

#: Tokens of the current key, by backend.
TOKENS = {"postgresql": 40_000, "sqlite": 2_000}
KID_INDEX = "ix_personal_access_token_kid_expires_at"


def _token(
    n: int, user_id: int, kid: str, expires_at: Any, revoked_at: Any = None
) -> dict[str, Any]:
    return {
        "id": 1_000 + n,
        "user_id": user_id,
        "name": f"token {n}",
        "scope": "meta/profile:RO",
        "jti": f"jwks-plan-{n:08d}",
        "kid": kid,
        "created": utcnow(),
        "expires_at": expires_at,
        "revoked_at": revoked_at,
        "parent": None,
    }


def test_retired_keys_published_by_their_live_tokens_through_the_index(
    app: Any, accounts: Any, srcore_backend: str
) -> None:
    from meta.oauth.keys import rotate
    from meta.oauth.models import PersonalAccessToken, SigningKey

    st = app.extensions["srcore"]
    client = app.test_client()
    alice = accounts.make("alice")
    assert client.get("/oauth/jwks.json").status_code == 200  # the first EdDSA and RS256 keys
    with st.db.transaction() as session:
        first = {row.alg: row.kid for row in session.scalars(select(SigningKey))}
        # New keys of both algorithms, signing at once: the first ones retire now.
        current = rotate(session, now=utcnow(), at_once=True)[0].kid
    app.extensions["meta.oauth"].ring.forget()  # no longer the keys it signs with
    long_ago = utcnow() - timedelta(days=400)
    with st.db.transaction() as session:
        session.execute(
            update(SigningKey).where(SigningKey.kid.in_(first.values())).values(retired_at=long_ago)
        )
        now_keys = set(
            session.scalars(select(SigningKey.kid).where(SigningKey.retired_at.is_(None)))
        )
    assert current in now_keys and len(now_keys) == 2

    now = utcnow()
    kept, dropped = first["EdDSA"], first["RS256"]
    rows = [
        _token(n, alice.id, current, now + timedelta(days=30 if n % 2 else -1))
        for n in range(TOKENS[srcore_backend])
    ]
    base = len(rows)
    rows += [
        # The old Ed25519 key signed one live token among expired and revoked ones.
        _token(base, alice.id, kept, now + timedelta(days=30)),
        _token(base + 1, alice.id, kept, now - timedelta(days=1)),
        _token(base + 2, alice.id, kept, now + timedelta(days=30), revoked_at=now),
        # The old RSA key's tokens all expired or were revoked.
        _token(base + 3, alice.id, dropped, now - timedelta(days=1)),
        _token(base + 4, alice.id, dropped, now + timedelta(days=30), revoked_at=now),
    ]
    engine = st.db.engine
    bulk(engine, PersonalAccessToken.__table__, rows)
    if srcore_backend == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("VACUUM ANALYZE personal_access_token"))
    else:
        with engine.begin() as connection:
            connection.execute(text("ANALYZE"))

    with statements(engine) as sent:
        answer = client.get("/oauth/jwks.json")
    assert answer.status_code == 200
    assert {key["kid"] for key in answer.get_json()["keys"]} == now_keys | {kept}

    asked = [(s, p) for s, p in sent.statements if "personal_access_token" in s]
    assert asked, [s for s, _ in sent.statements]
    if srcore_backend != "postgresql":
        return
    for statement, parameters in asked:
        tree = plan(engine, statement, parameters, seqscan=True)  # the default settings
        found = list(nodes(tree))
        scans = [n for n in found if n.get("Relation Name") == "personal_access_token"]
        assert scans, tree
        assert all(n["Node Type"] != "Seq Scan" for n in scans), tree
        assert all(n.get("Index Name") == KID_INDEX for n in scans), tree
