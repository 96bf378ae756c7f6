"""Local access-token verification: signatures, types, claims, caching, tampering."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc.jwk import KeySet, OKPKey

from srcore.auth.api import insufficient_scope
from srcore.auth.tokens import StaticKeySource, TokenError, TokenVerifier
from srcore.testing import TEST_ISSUER, mint_token


@pytest.fixture(scope="module")
def key() -> Any:
    return OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})


@pytest.fixture
def verifier(key: Any) -> TokenVerifier:
    return TokenVerifier(keys=StaticKeySource(KeySet([key])), issuer=TEST_ISSUER, audience="todo")


def token(key: Any, **kw: Any) -> str:
    kw.setdefault("audience", "todo")
    kw.setdefault("scopes", "todo/tickets:RW")
    return mint_token(key, **kw)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_valid_token(verifier: TokenVerifier, key: Any) -> None:
    result = verifier.verify(token(key, user_id=42))
    assert result.subject == 42
    assert {str(s) for s in result.scopes} == {"todo/tickets:RW"}


def test_client_credentials_token_has_no_user(verifier: TokenVerifier, key: Any) -> None:
    assert verifier.verify(token(key)).subject is None


def test_cached_until_expiry(key: Any) -> None:
    now = [time.time()]
    calls = []

    class CountingSource(StaticKeySource):
        def key_set(self, kid: str | None) -> Any:
            calls.append(kid)
            return super().key_set(kid)

    v = TokenVerifier(
        keys=CountingSource(KeySet([key])),
        issuer=TEST_ISSUER,
        audience="todo",
        clock=lambda: now[0],
    )
    t = token(key, expires_in=60)
    for _ in range(5):
        v.verify(t)
    assert len(calls) == 1
    now[0] += 3600
    with pytest.raises(TokenError, match="expired"):
        v.verify(t)


def test_revocation_hook_is_asked_every_time(key: Any) -> None:
    revoked: set[str] = set()
    v = TokenVerifier(
        keys=StaticKeySource(KeySet([key])),
        issuer=TEST_ISSUER,
        audience="todo",
        is_revoked=lambda t: t.jti in revoked,
    )
    t = token(key)
    jti = v.verify(t).jti
    revoked.add(jti)
    with pytest.raises(TokenError, match="revoked"):
        v.verify(t)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"expires_in": -3600}, "expired"),
        ({"audience": "meta"}, "another service"),
        ({"issuer": "http://evil.example"}, "someone else"),
        ({"scope": "not a scope"}, "scope"),
        ({"sub": "alice"}, "subject"),
        # Digits to str.isdigit() but not ASCII: int() fails on one, reads another as 1000.
        ({"sub": "\u00b2"}, "subject"),
        ({"sub": "\u0661\u0660\u0660\u0660"}, "subject"),
        ({"iat": int(time.time()) + 3600}, "future"),
    ],
)
def test_bad_claims(
    verifier: TokenVerifier, key: Any, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(TokenError, match=message):
        verifier.verify(token(key, **options))


def test_wrong_key(verifier: TokenVerifier) -> None:
    other = OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})
    with pytest.raises(TokenError, match="signature"):
        verifier.verify(token(other))


def test_alg_none(verifier: TokenVerifier, key: Any) -> None:
    _, payload, _ = token(key).split(".")
    none_header = b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": "k1"}).encode())
    with pytest.raises(TokenError, match="algorithm"):
        verifier.verify(f"{none_header}.{payload}.")


def test_hs256_with_public_key_as_secret(verifier: TokenVerifier, key: Any) -> None:
    import hashlib
    import hmac

    _, payload, _ = token(key).split(".")
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": "k1"}).encode())
    secret = json.dumps(key.as_dict(private=False)).encode()
    sig = b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
    with pytest.raises(TokenError, match="algorithm"):
        verifier.verify(f"{header}.{payload}.{sig}")


def test_wrong_typ(verifier: TokenVerifier, key: Any) -> None:
    from joserfc import jwt

    claims = json.loads(base64.urlsafe_b64decode(token(key).split(".")[1] + "=="))
    id_token = jwt.encode(
        {"alg": "Ed25519", "typ": "JWT", "kid": "k1"}, claims, key, algorithms=["Ed25519"]
    )
    with pytest.raises(TokenError, match="typ"):
        verifier.verify(id_token)


def test_tampered_payload(verifier: TokenVerifier, key: Any) -> None:
    header, payload, sig = token(key, scopes="todo/tickets:RO").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = "todo/tickets:RW"
    with pytest.raises(TokenError, match="signature"):
        verifier.verify(f"{header}.{b64(json.dumps(claims).encode())}.{sig}")


@settings(max_examples=200)
@given(st.text(max_size=300))
def test_garbage_never_raises_anything_else(text: str) -> None:
    key = OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})
    v = TokenVerifier(keys=StaticKeySource(KeySet([key])), issuer=TEST_ISSUER, audience="todo")
    with pytest.raises(TokenError):
        v.verify(text)


def test_api_challenges(app: Any, client: Any, make_token: Any, user: Any) -> None:
    missing = client.get("/api/things")
    assert missing.status_code == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="sample"'
    bad = client.get("/api/things", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401
    assert 'error="invalid_token"' in bad.headers["WWW-Authenticate"]
    ro = make_token("sample/things:RO", user=user)
    write = client.post(
        "/api/things", json={"name": "x"}, headers={"Authorization": f"Bearer {ro}"}
    )
    assert write.status_code == 403
    assert 'error="insufficient_scope"' in write.headers["WWW-Authenticate"]
    assert 'scope="sample/things:RW"' in write.headers["WWW-Authenticate"]
    other = make_token("todo/things:RW", user=user)
    assert (
        client.get("/api/things", headers={"Authorization": f"Bearer {other}"}).status_code == 403
    )
    ok = client.get("/api/whoami", headers={"Authorization": f"Bearer {ro}"})
    assert ok.get_json() == {"user": "alice"}


def test_insufficient_scope_names_the_scope_and_the_field(app: Any) -> None:
    """For a view whose needed scope depends on its input: the error names that field."""
    with app.test_request_context("/api/things"):
        response = insufficient_scope("Needs more.", "sample/things:RW", field="events")
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="sample", error="insufficient_scope", error_description="Needs more.", '
        'scope="sample/things:RW"'
    )
    assert response.get_json() == {"errors": [{"field": "events", "reason": "Needs more."}]}


def test_api_ignores_the_session_cookie(user_client: Any) -> None:
    assert user_client.get("/api/whoami").status_code == 401


def test_api_refuses_suspended_and_unknown_users(app: Any, client: Any, make_token: Any) -> None:
    from srcore.db import UserType
    from srcore.testing import create_user

    bob = create_user(app, "bob", user_type=UserType.suspended)
    token = make_token("sample/things:RO", user=bob)
    response = client.get("/api/whoami", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert response.get_json()["errors"][0]["reason"] == "This account is suspended."

    class Ghost:
        id = 987654

    ghost = make_token("sample/things:RO", user=Ghost())
    response = client.get("/api/whoami", headers={"Authorization": f"Bearer {ghost}"})
    assert response.status_code == 401


def test_token_check_costs_no_query(app: Any, client: Any, make_token: Any) -> None:
    from sqlalchemy import event

    statements: list[str] = []
    engine = app.extensions["srcore"].db.engine
    listener = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listener)
    try:
        token = make_token("sample/things:RO")
        response = client.get("/api/things", headers={"Authorization": f"Bearer {token}"})
    finally:
        event.remove(engine, "before_cursor_execute", listener)
    assert response.status_code == 200
    assert [s.split()[0] for s in statements] == ["SELECT"]
    assert "thing" in statements[0]
