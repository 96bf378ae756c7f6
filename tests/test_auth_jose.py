"""Ed25519-only JOSE: what srcore signs, and what it refuses to verify."""

from __future__ import annotations

import pytest
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, OKPKey

from srcore.auth import jose


def test_sign_and_decode_round_trip() -> None:
    key = jose.generate_key("k1")
    token = jose.sign({"sub": "1"}, key, typ="at+jwt")
    decoded = jose.decode(token, KeySet([key]))
    assert decoded.header == {"alg": "EdDSA", "typ": "at+jwt", "kid": "k1"}
    assert decoded.claims == {"sub": "1"}


def test_generated_kid_is_the_thumbprint() -> None:
    key = jose.generate_key()
    assert key.kid == key.thumbprint()


def test_ed448_keys_are_refused() -> None:
    key = OKPKey.generate_key("Ed448", parameters={"kid": "big"})
    with pytest.raises(JoseError):
        jose.sign({"sub": "1"}, key, typ="at+jwt")


def test_rfc9864_name_verifies_too() -> None:
    from joserfc import jwt

    key = jose.generate_key("k1")
    token = jwt.encode({"alg": "Ed25519", "kid": "k1"}, {"a": 1}, key, algorithms=["Ed25519"])
    assert jose.decode(token, KeySet([key])).claims == {"a": 1}


def test_other_algorithms_are_refused() -> None:
    from joserfc import jwt
    from joserfc.jwk import OctKey

    secret = OctKey.generate_key(256)
    token = jwt.encode({"alg": "HS256"}, {"a": 1}, secret, algorithms=["HS256"])
    with pytest.raises(JoseError):
        jose.decode(token, secret)
