"""The bearer-token edge of a service: nbf, odd Authorization headers, CORS on /api/.

Tokens are minted with PyJWT (not srcore's signer), as another issuer's library would.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import KeySet, OKPKey

from srcore.auth.tokens import StaticKeySource, TokenError, TokenVerifier
from srcore.testing import TEST_ISSUER


@pytest.fixture(scope="module")
def key() -> Any:
    return OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})


def _pyjwt(key: Any, **claims: Any) -> str:
    pem = key.as_pem(private=True)
    private = serialization.load_pem_private_key(pem, password=None)
    now = int(time.time())
    payload = {
        "iss": TEST_ISSUER,
        "sub": "42",
        "aud": "todo",
        "client_id": "c",
        "scope": "todo/tickets:RO",
        "iat": now,
        "exp": now + 600,
        "jti": uuid.uuid4().hex,
        **claims,
    }
    return jwt.encode(payload, private, algorithm="EdDSA", headers={"typ": "at+jwt", "kid": "k1"})


def _verifier(key: Any, now: float | None = None) -> TokenVerifier:
    clock = (lambda: now) if now is not None else time.time
    return TokenVerifier(
        keys=StaticKeySource(KeySet([key])), issuer=TEST_ISSUER, audience="todo", clock=clock
    )


def test_a_token_before_its_nbf_is_refused(key: Any) -> None:
    now = int(time.time())
    later = _pyjwt(key, nbf=now + 3600, exp=now + 7200)
    with pytest.raises(TokenError, match="not valid yet"):
        _verifier(key).verify(later)
    # Once the time comes it is accepted (and a refusal was not cached).
    assert _verifier(key, now=now + 3601).verify(later).subject == 42
    assert _verifier(key).verify(_pyjwt(key, nbf=now - 5)).subject == 42
    with pytest.raises(TokenError):
        _verifier(key).verify(_pyjwt(key, nbf="soon"))


def test_a_refused_nbf_is_not_cached_as_valid(key: Any) -> None:
    now = int(time.time())
    verifier = _verifier(key, now=now)
    later = _pyjwt(key, nbf=now + 3600)
    for _ in range(2):
        with pytest.raises(TokenError):
            verifier.verify(later)


def _raw_basic(raw: bytes) -> str:
    return "Basic " + base64.b64encode(raw).decode()


@pytest.mark.parametrize(
    "header",
    [
        _raw_basic(b"\xff\xfe:\xff"),
        "Basic !!!not base64!!!",
        _raw_basic(b"no-colon"),
        "Basic",
        "Bearer",
        "Bearer \x00",
        "Bearer a b c",
        "Bearer \u00e9t\u00e9",
    ],
)
def test_odd_authorization_headers_are_a_401_challenge(client: Any, header: str) -> None:
    response = client.get("/api/things", headers={"Authorization": header})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="sample"')
    assert response.is_json


def test_api_answers_cors_preflights_and_requests(client: Any, make_token: Any, user: Any) -> None:
    origin = {"Origin": "https://app.example"}
    preflight = client.options(
        "/api/things",
        headers={
            **origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code in (200, 204)
    assert preflight.headers["Access-Control-Allow-Origin"] == "*"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "authorization" in preflight.headers["Access-Control-Allow-Headers"].lower()
    assert "Access-Control-Allow-Credentials" not in preflight.headers
    token = make_token("sample/things:RO", user=user)
    answer = client.get("/api/things", headers={**origin, "Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in answer.headers
    assert "WWW-Authenticate" in answer.headers["Access-Control-Expose-Headers"]
    refused = client.get("/api/things", headers=origin)
    assert refused.status_code == 401
    assert refused.headers["Access-Control-Allow-Origin"] == "*"


@pytest.mark.parametrize("path", ["/", "/private", "/form"])
def test_cookie_pages_get_no_cors(user_client: Any, path: str) -> None:
    response = user_client.get(path, headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = user_client.options(
        path, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_every_api_401_carries_a_bearer_challenge(app: Any, client: Any, make_token: Any) -> None:
    """A 401 raised after the token checked out (its user is unknown here) challenges too."""

    class Ghost:
        id = 987654

    ghost = make_token("sample/things:RO", user=Ghost())
    response = client.get("/api/whoami", headers={"Authorization": f"Bearer {ghost}"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="sample"')
    assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]
