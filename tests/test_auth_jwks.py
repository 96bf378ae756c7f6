"""meta's JWKS: fetched lazily, cached, refreshed on an unknown kid at most so often."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from joserfc.jwk import KeySet

from srcore.auth import jose
from srcore.auth.jwks import JWKSKeySource, parse_jwks
from srcore.auth.tokens import KeysUnavailable, StaticKeySource, TokenError, TokenVerifier
from srcore.testing import mint_token

URL = "http://meta.test/oauth/jwks.json"


class FakeResponse:
    def __init__(self, status: int, body: Any) -> None:
        self.status_code = status
        self._body = body

    def raise_for_status(self) -> None:
        if self.status_code >= 400:
            raise requests.HTTPError(f"HTTP {self.status_code}")

    def json(self) -> Any:
        if isinstance(self._body, Exception):
            raise self._body
        return self._body


class FakeHTTP:
    """meta's JWKS endpoint: serves *keys*, or fails when *down*."""

    def __init__(self, *keys: Any) -> None:
        self.keys = list(keys)
        self.down = False
        self.status = 200
        self.requests: list[tuple[str, float]] = []
        self.headers: list[dict[str, str]] = []

    def get(self, url: str, *, timeout: float, headers: Any = None) -> FakeResponse:
        self.requests.append((url, timeout))
        self.headers.append(dict(headers or {}))
        if self.down:
            raise requests.ConnectionError("refused")
        return FakeResponse(self.status, {"keys": [k.as_dict(private=False) for k in self.keys]})


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def source(http: FakeHTTP, clock: Clock, **options: Any) -> JWKSKeySource:
    return JWKSKeySource(URL, http=http, clock=clock, **options)  # type: ignore[arg-type]


def kids(key_set: KeySet) -> set[str]:
    return {k.kid for k in key_set.keys if k.kid}


def test_nothing_is_fetched_until_a_key_is_needed() -> None:
    http = FakeHTTP(jose.generate_key("a"))
    keys = source(http, Clock())
    assert http.requests == []
    assert kids(keys.key_set("a")) == {"a"}
    assert http.requests == [(URL, 5.0)]


def test_cached_keys_cost_no_request() -> None:
    http, clock = FakeHTTP(jose.generate_key("a")), Clock()
    keys = source(http, clock)
    for _ in range(5):
        keys.key_set("a")
        keys.key_set(None)
        clock.now += 60
    assert len(http.requests) == 1


def test_unknown_kid_refreshes_once_per_floor() -> None:
    a, b = jose.generate_key("a"), jose.generate_key("b")
    http, clock = FakeHTTP(a), Clock()
    keys = source(http, clock, min_refresh_interval=30)
    keys.key_set("a")
    http.keys.append(b)  # meta rotates: b is new
    clock.now += 31
    assert kids(keys.key_set("b")) == {"a", "b"}
    assert len(http.requests) == 2
    # A flood of made-up kids within the floor costs no request to meta.
    for n in range(50):
        assert "nope" not in kids(keys.key_set(f"nope{n}"))
    assert len(http.requests) == 2
    clock.now += 30
    keys.key_set("still-unknown")
    assert len(http.requests) == 3


def test_every_fetch_asks_past_http_caches() -> None:
    """The verifier keeps its own copy: one a proxy in front of meta kept could lack the key
    a new token names (a key that signed at once, rotated in an emergency)."""
    http, clock = FakeHTTP(jose.generate_key("a")), Clock()
    keys = source(http, clock)
    keys.key_set("a")
    clock.now += 60
    keys.key_set("b")  # unknown: fetched again
    assert [h.get("Cache-Control") for h in http.headers] == ["no-cache", "no-cache"]


def test_refresh_after_max_age() -> None:
    http, clock = FakeHTTP(jose.generate_key("a")), Clock()
    keys = source(http, clock, max_age=3600)
    keys.key_set("a")
    clock.now += 3599
    keys.key_set("a")
    assert len(http.requests) == 1
    clock.now += 2
    keys.key_set("a")
    assert len(http.requests) == 2


@pytest.mark.parametrize("failure", ["down", "500", "garbage"])
def test_stale_keys_keep_working_when_meta_fails(failure: str) -> None:
    a = jose.generate_key("a")
    http, clock = FakeHTTP(a), Clock()
    keys = source(http, clock, max_age=60)
    keys.key_set("a")
    if failure == "down":
        http.down = True
    elif failure == "500":
        http.status = 500
    else:
        http.keys = []
        http.get = lambda url, **kw: FakeResponse(200, ValueError("not json"))  # type: ignore[method-assign]
    clock.now += 7200
    assert kids(keys.key_set("a")) == {"a"}
    assert kids(keys.key_set("unknown")) == {"a"}


def test_no_keys_and_meta_down_is_unavailable_without_hammering() -> None:
    http, clock = FakeHTTP(jose.generate_key("a")), Clock()
    http.down = True
    keys = source(http, clock, min_refresh_interval=30)
    for _ in range(10):
        with pytest.raises(KeysUnavailable):
            keys.key_set("a")
    assert len(http.requests) == 1
    http.down = False
    clock.now += 30
    assert kids(keys.key_set("a")) == {"a"}


def test_verifier_accepts_a_token_signed_by_a_rotated_key() -> None:
    old, new = jose.generate_key("old"), jose.generate_key("new")
    http, clock = FakeHTTP(old), Clock()
    keys = source(http, clock)
    verifier = TokenVerifier(keys=keys, issuer="http://meta.test", audience="sample")
    first = mint_token(old, audience="sample", scopes="sample/things:RO", issuer="http://meta.test")
    assert verifier.verify(first).client_id == "srcore-test-client"
    http.keys.append(new)
    clock.now += 31
    second = mint_token(
        new, audience="sample", scopes="sample/things:RO", issuer="http://meta.test"
    )
    assert verifier.verify(second).scopes


def test_verifier_refuses_a_key_meta_never_published() -> None:
    http, clock = FakeHTTP(jose.generate_key("a")), Clock()
    verifier = TokenVerifier(keys=source(http, clock), issuer="http://i", audience="sample")
    forged = mint_token(jose.generate_key("a"), audience="sample", scopes="", issuer="http://i")
    with pytest.raises(TokenError):
        verifier.verify(forged)


def test_parse_jwks_keeps_only_public_ed25519_keys() -> None:
    from joserfc.jwk import RSAKey

    ed = jose.generate_key("ed")
    document = {
        "keys": [
            ed.as_dict(private=True),
            RSAKey.generate_key(2048, parameters={"kid": "rsa"}).as_dict(private=False),
            {"kty": "OKP", "crv": "Ed25519", "kid": "broken", "x": "!!"},
            "nonsense",
        ]
    }
    parsed = parse_jwks(document)
    assert kids(parsed) == {"ed"}
    assert all(not key.is_private for key in parsed.keys)
    with pytest.raises(ValueError, match="keys"):
        parse_jwks({"nokeys": []})


def test_static_key_source_still_works() -> None:
    key = jose.generate_key("k")
    assert StaticKeySource(KeySet([key])).key_set("k").keys[0].kid == "k"
