"""The identity protocol: the wire format both sides speak and the one revocation rule.

The service's store indexes events by subject rather than running the rule over a log,
so the property tests hold it to the rule: whatever events arrive, in whatever order,
it answers as :func:`protocol.revokes`, :func:`protocol.ends_session` and
:func:`protocol.suspended` say.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srcore.auth.revocation import MemoryRevocationStore
from srcore.auth.revocation.store import token_facts
from srcore.auth.tokens import AccessToken
from srcore.identity import protocol
from srcore.identity.protocol import RevocationEvent, TokenFacts

NOW = 1_800_000_000

subjects = st.sampled_from(["1", "2", "app", "other", "j1", "j2", "g1", "g2"])
times = st.integers(NOW - 5, NOW + 5)


@st.composite
def events(draw: Any) -> RevocationEvent:
    kind = draw(st.sampled_from(sorted(protocol.KINDS)))
    not_before = draw(times) if kind in protocol.CUTOFF_KINDS else draw(st.none() | times)
    expires_at = draw(st.none() | times)
    return RevocationEvent(draw(st.integers(0, 50)), kind, draw(subjects), not_before, expires_at)


@st.composite
def tokens(draw: Any) -> AccessToken:
    user = draw(st.none() | st.sampled_from([1, 2]))
    grant = draw(st.none() | st.sampled_from(["g1", "g2"]))
    return AccessToken(
        subject=user,
        client_id=draw(st.sampled_from(["app", "other"])),
        scopes=frozenset(),
        expires_at=NOW + 3600,
        issued_at=draw(times),
        jti=draw(st.sampled_from(["j1", "j2"])),
        hash="h",
        claims={"grant": grant} if grant else {},
    )


def _store(applied: list[RevocationEvent], now: float) -> MemoryRevocationStore:
    store = MemoryRevocationStore(clock=lambda: now)
    for event in applied:  # one at a time: pushes and pulls arrive in any order
        store.apply([event])
    return store


@settings(max_examples=300, deadline=None)
@given(st.lists(events(), max_size=12), tokens(), st.integers(NOW - 6, NOW + 6))
def test_the_store_revokes_tokens_as_the_rule_says(
    applied: list[RevocationEvent], token: AccessToken, now: int
) -> None:
    facts = token_facts(token)
    expected = any(protocol.revokes(e, facts, now=now) for e in applied)
    if facts.user is not None:
        expected = expected or protocol.suspended(applied, facts.user)
    assert _store(applied, now).is_revoked(token) == expected


@settings(max_examples=300, deadline=None)
@given(
    st.lists(events(), max_size=12),
    st.sampled_from([1, 2]),
    st.none() | st.floats(NOW - 6, NOW + 6),
)
def test_the_store_ends_web_sessions_as_the_rule_says(
    applied: list[RevocationEvent], user_id: int, login_time: float | None
) -> None:
    user = str(user_id)
    ended = any(protocol.ends_session(e, user, login_time) for e in applied)
    expected = not (ended or protocol.suspended(applied, user))
    assert _store(applied, NOW).session_valid(user_id, login_time) == expected


@given(st.lists(events(), max_size=5), st.integers(0, 60))
def test_events_survive_the_wire(sent: list[RevocationEvent], since: int) -> None:
    assert protocol.parse_events(protocol.push_data(sent)["events"]) == sent
    page = protocol.pull_page(sent, since + 7)
    assert protocol.parse_pull_page(page, since) == (sent, since + 7)


def test_a_page_without_last_ends_at_its_newest_event() -> None:
    event = RevocationEvent(9, "token", "j1")
    assert protocol.parse_pull_page({"events": [event.to_json()]}, 3) == ([event], 9)
    assert protocol.parse_pull_page({"events": []}, 3) == ([], 3)
    with pytest.raises(ValueError, match="object"):
        protocol.parse_pull_page([], 3)


def test_a_cut_off_event_needs_not_before() -> None:
    with pytest.raises(ValueError, match="not_before"):
        RevocationEvent(1, "user", "7")
    with pytest.raises(ValueError, match="kind"):
        RevocationEvent(1, "nuke", "7")


def test_token_facts_read_claims_as_meta_issues_them() -> None:
    claims = {"jti": "j", "iat": NOW, "client_id": "app", "sub": "7", "grant": "g"}
    assert TokenFacts.from_claims(claims) == TokenFacts("j", NOW, "app", "7", "g")
    odd = {"jti": "j", "iat": "soon", "client_id": 5, "sub": "app", "grant": 1}
    assert TokenFacts.from_claims(odd) == TokenFacts("j", 0, None, None, None)


def test_the_cut_off_second_counts_for_sessions_not_tokens() -> None:
    """A token minted in a logout's second may come from the login after it; a web
    session started in that second is ended (a login moves past a cut-off it knows)."""
    assert protocol.token_cut_off(NOW - 1, NOW) and not protocol.token_cut_off(NOW, NOW)
    assert protocol.session_cut_off(NOW + 0.9, NOW)
    assert not protocol.session_cut_off(NOW + 1.0, NOW)
    assert protocol.session_cut_off(None, NOW)
