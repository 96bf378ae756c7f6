"""The scope grammar: parse, format, and which scope satisfies which."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from srcore.auth.scopes import (
    Scope,
    ScopeError,
    format_scopes,
    parse_scope,
    parse_scopes,
    satisfies,
)

services = st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]", fullmatch=True)
names = st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True)
access = st.sampled_from(["RO", "RW"])
scopes = st.builds(Scope, services, names, access)


@given(scopes)
def test_round_trip(scope: Scope) -> None:
    assert parse_scope(str(scope)) == scope


@given(st.sets(scopes, max_size=6))
def test_format_then_parse_is_identity(items: set[Scope]) -> None:
    assert parse_scopes(format_scopes(items)) == items


@given(services, names)
def test_rw_satisfies_ro_but_not_the_reverse(service: str, name: str) -> None:
    rw, ro = Scope(service, name, "RW"), Scope(service, name, "RO")
    assert rw.satisfies(ro)
    assert rw.satisfies(rw)
    assert ro.satisfies(ro)
    assert not ro.satisfies(rw)


@given(scopes, scopes)
def test_other_service_or_name_never_satisfies(held: Scope, required: Scope) -> None:
    if (held.service, held.name) != (required.service, required.name):
        assert not held.satisfies(required)
        assert not satisfies([held], required)


@given(st.text(max_size=40))
def test_parse_never_raises_anything_else(text: str) -> None:
    try:
        scope = parse_scope(text)
    except ScopeError:
        return
    assert str(scope) == text


@pytest.mark.parametrize(
    "text",
    [
        "todo/tickets",
        "todo/tickets:rw",
        "todo:RW",
        "/tickets:RW",
        "Todo/tickets:RW",
        "todo/tickets:RW ",
        "todo/tickets:RX",
        "todo/tick ets:RW",
        "todo//tickets:RW",
    ],
)
def test_malformed_scopes(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_scope_strings_are_space_separated() -> None:
    assert parse_scopes("todo/tickets:RO meta/profile:RW") == {
        Scope("todo", "tickets", "RO"),
        Scope("meta", "profile", "RW"),
    }
