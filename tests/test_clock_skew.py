"""Clocks that disagree: a service whose clock runs ahead of or behind meta's.

meta stamps tokens and revocations with its clock; each service checks them against its
own. Nothing here reads the wall clock: meta's time is a fixed number, and the service's
clock is that number moved by the skew under test.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from joserfc.jwk import KeySet, OKPKey

from srcore.auth import jose
from srcore.auth.revocation import MemoryRevocationStore, RevocationEvent
from srcore.auth.tokens import StaticKeySource, TokenError, TokenVerifier
from srcore.identity.protocol import CLOCK_LEEWAY, TokenFacts, revokes

ISSUER = "https://meta.example.org"
#: meta's clock in every test (a fixed epoch second, so no test depends on when it runs).
META_NOW = 1_800_000_000
LIFETIME = 600


@pytest.fixture(scope="module")
def key() -> Any:
    return OKPKey.generate_key("Ed25519", parameters={"kid": "k1"})


class ServiceClock:
    """The service's clock: meta's time plus *skew* seconds (negative: behind meta)."""

    def __init__(self, skew: float) -> None:
        self.meta_now = float(META_NOW)
        self.skew = skew

    def __call__(self) -> float:
        return self.meta_now + self.skew


def access_token(key: Any, *, iat: int = META_NOW, jti: str = "j1", **claims: Any) -> str:
    """An access token as meta signs it at meta's time *iat*."""
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "sub": "7",
        "aud": "todo",
        "client_id": "app",
        "scope": "",
        "iat": iat,
        "exp": iat + LIFETIME,
        "jti": jti,
    }
    payload.update(claims)
    return jose.sign(payload, key, typ="at+jwt")


def service(key: Any, clock: ServiceClock) -> tuple[TokenVerifier, MemoryRevocationStore]:
    """A service's verifier and revocation list, both on the service's clock."""
    store = MemoryRevocationStore(clock=clock)
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([key])),
        issuer=ISSUER,
        audience="todo",
        is_revoked=store.is_revoked,
        clock=clock,
    )
    return verifier, store


# -- fresh and just-expired tokens ---------------------------------------------------------


@pytest.mark.parametrize("skew", [-CLOCK_LEEWAY, -5, 0, 30, 120, 600])
def test_fresh_token_is_taken_at_once_within_the_leeway_or_ahead(key: Any, skew: int) -> None:
    verifier, _ = service(key, ServiceClock(skew))
    assert verifier.verify(access_token(key)).issued_at == META_NOW


@pytest.mark.parametrize("skew", [-CLOCK_LEEWAY - 1, -120, -600])
def test_fresh_token_at_a_service_behind_past_the_leeway_is_refused(
    key: Any, skew: int, caplog: pytest.LogCaptureFixture
) -> None:
    verifier, _ = service(key, ServiceClock(skew))
    with caplog.at_level(logging.WARNING, "srcore.auth"), pytest.raises(TokenError) as exc:
        verifier.verify(access_token(key))
    assert "issued in the future" in exc.value.description
    # The operator learns that the host's clock is off, and by how much.
    assert f"{-skew} s" in caplog.text
    assert "NTP" in caplog.text


def test_behind_clock_is_warned_about_once_a_minute_not_per_request(
    key: Any, caplog: pytest.LogCaptureFixture
) -> None:
    clock = ServiceClock(-120)
    verifier, _ = service(key, clock)

    def warnings() -> int:
        return len([r for r in caplog.records if "NTP" in r.getMessage()])

    with caplog.at_level(logging.WARNING, "srcore.auth"):
        for step in (0, 1, 58):
            clock.meta_now += step
            with pytest.raises(TokenError):
                verifier.verify(access_token(key, iat=int(clock.meta_now), jti=str(step)))
        assert warnings() == 1
        clock.meta_now += 2
        with pytest.raises(TokenError):
            verifier.verify(access_token(key, iat=int(clock.meta_now), jti="later"))
        assert warnings() == 2


def test_token_not_valid_yet_is_refused_whatever_the_skew(key: Any) -> None:
    verifier, _ = service(key, ServiceClock(600))
    with pytest.raises(TokenError, match="not valid yet"):
        verifier.verify(access_token(key, nbf=META_NOW + 600 + CLOCK_LEEWAY + 1))


@pytest.mark.parametrize("skew", [-30, -5, 0])
def test_expired_token_lives_on_at_a_service_behind_by_the_skew_and_the_leeway(
    key: Any, skew: int
) -> None:
    clock = ServiceClock(skew)
    verifier, _ = service(key, clock)
    token = access_token(key, iat=META_NOW - LIFETIME)  # expires at META_NOW by meta's clock
    clock.meta_now = META_NOW + CLOCK_LEEWAY - skew
    verifier.verify(token)
    clock.meta_now += 1
    with pytest.raises(TokenError, match="expired"):
        verifier.verify(token)


# -- revoked tokens near their expiry --------------------------------------------------------


@pytest.mark.parametrize("skew", [-20, 0, 20])
@pytest.mark.parametrize("kind", ["token", "grant"])
def test_revoked_token_stays_revoked_through_the_leeway_after_its_expiry(
    key: Any, skew: int, kind: str
) -> None:
    """The verifier takes a token until ``exp`` + leeway by its clock, so the revocation
    list keeps an expiring event as long: forgotten at ``exp``, the revoked token was good
    again for the leeway."""
    clock = ServiceClock(skew)
    verifier, store = service(key, clock)
    token = access_token(key, grant="g1")
    subject = "j1" if kind == "token" else "g1"
    store.apply([RevocationEvent(1, kind, subject, expires_at=META_NOW + LIFETIME)])
    with pytest.raises(TokenError, match="revoked"):
        verifier.verify(token)
    for late in range(1, CLOCK_LEEWAY + 1, 7):
        clock.meta_now = META_NOW + LIFETIME + late - skew
        verifier.forget()
        with pytest.raises(TokenError, match="revoked"):
            verifier.verify(token)


def test_revocation_pulled_just_after_expiry_still_counts(key: Any) -> None:
    """An event that arrives (a pull) once its tokens expired by the service's clock, but
    within the leeway, is kept: those tokens are still taken."""
    clock = ServiceClock(0)
    verifier, store = service(key, clock)
    token = access_token(key)
    clock.meta_now = META_NOW + LIFETIME + CLOCK_LEEWAY // 2
    store.apply([RevocationEvent(1, "token", "j1", expires_at=META_NOW + LIFETIME)])
    with pytest.raises(TokenError, match="revoked"):
        verifier.verify(token)


def test_the_rule_meta_applies_keeps_expiring_events_through_the_leeway() -> None:
    """meta checks its own tokens with the same verifier and this rule."""
    facts = TokenFacts(jti="j1", issued_at=META_NOW, client_id="app", user="7", grant="g1")
    expires = META_NOW + LIFETIME
    for kind, subject in (("token", "j1"), ("grant", "g1")):
        event = RevocationEvent(1, kind, subject, expires_at=expires)
        assert revokes(event, facts, now=expires + CLOCK_LEEWAY)
        assert not revokes(event, facts, now=expires + CLOCK_LEEWAY + 1)


# -- between meta's own hosts ----------------------------------------------------------------


@pytest.mark.parametrize("ahead", [1, CLOCK_LEEWAY])
def test_forced_login_mark_from_a_meta_host_ahead_is_read(ahead: int) -> None:
    """A login forced by ``prompt=login`` comes back with a mark one meta process made;
    another, on a host a little behind, must read it, or the request forces a login again."""
    from flask import Flask
    from meta.oauth.oidc_flow import make_mark, read_mark

    app = Flask(__name__)
    app.secret_key = "k" * 40
    with app.app_context():
        mark = make_mark("sid-1", "app", now=META_NOW + ahead)
        assert read_mark(mark, "app", now=META_NOW) == "sid-1"
        assert read_mark(mark, "app", now=META_NOW - CLOCK_LEEWAY) is None


def test_operators_guide_states_the_leeway() -> None:
    from pathlib import Path

    guide = Path(__file__).parents[1] / "docs" / "operators.md"
    assert f"srcore tolerates {CLOCK_LEEWAY} s" in guide.read_text(encoding="utf-8")
