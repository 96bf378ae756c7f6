"""Acceptance: random form bodies and JSON bodies, each with a random query string,
never make a 500.

Every route of the app is enumerated from ``app.url_map`` and driven by a client that is
both logged in (session cookie, for the pages) and carrying a full-scope token (for the
API), so input reaches the views instead of stopping at authentication. With
``TESTING`` on, an unhandled exception propagates out of the client and fails the test.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select
from todo.models import Ticket, Tracker

from srcore.testing import log_in_client

FIELDS = [
    "name", "description", "visibility", "title", "text", "status", "resolution", "confirm",
    "cursor", "limit", "page",
]  # fmt: skip
WORDS = [
    "bugs", "open", "resolved", "all", "fixed", "duplicate", "public", "private", "unlisted",
    "0", "1", "-1", "25", "101", "9" * 30, "1e3", "", " ", "true", "null", "\x00", "\ud7ff",
    "a" * 65, "a" * 300, "../..", "~alice", "WzFd", "W10", "%00",
]  # fmt: skip

EXAMPLES = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

keys = st.one_of(st.sampled_from(FIELDS), st.text(max_size=12))
strings = st.one_of(st.sampled_from(WORDS), st.text(max_size=80))
form_bodies = st.dictionaries(keys, strings, max_size=8)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    strings,
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(keys, json_values, max_size=8)
json_bodies = st.one_of(
    json_objects.map(lambda o: json.dumps(o).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
)
queries = st.dictionaries(keys, strings, max_size=5)
content_types = st.sampled_from(
    ["application/json", "application/merge-patch+json", "text/plain", ""]
)


@pytest.fixture
def fuzz_client(app, user, tracker, ticket, auth, csrf):
    """Logged in as alice, with her full-scope token and her session's CSRF token."""
    # srcore checks CSRF on every non-API POST; the token is sent as well, so bodies
    # reach the views whether or not the check honours this switch.
    app.config["WTF_CSRF_ENABLED"] = False
    client = log_in_client(app.test_client(), user)
    token = csrf.token(client)
    headers = {**auth(), "X-CSRFToken": token}
    return client, headers, token


def restore(app, user) -> None:
    """Put back alice's tracker ``bugs`` and its ticket #1 if a fuzzed request removed them."""
    from todo import logic

    with app.extensions["srcore"].db.transaction() as session:
        tracker = session.scalar(
            select(Tracker).where(Tracker.owner_id == user.id, Tracker.name == "bugs")
        )
        if tracker is None:
            tracker = Tracker(owner_id=user.id, name="bugs")
            session.add(tracker)
            session.flush()
        has_ticket = session.scalar(
            select(Ticket.id).where(Ticket.tracker_id == tracker.id, Ticket.number == 1)
        )
        if has_ticket is None and tracker.ticket_count == 0:
            logic.create_ticket(session, tracker, session.merge(user), {"title": "again"})


SHARDS = 4


def todo_routes(routes: list[tuple[str, str, str]], shard: int) -> list[tuple[str, str, str]]:
    """One shard of todo's own routes (its blueprints; srcore's routes are fuzzed by
    srcore's tests). Shards let pytest-xdist spread the work over its workers."""
    own = sorted(r for r in routes if r[0].startswith(("todo.", "api.")))
    assert len(own) >= SHARDS
    return own[shard::SHARDS]


def check(response: Any, endpoint: str, method: str) -> None:
    assert response.status_code != 500, (endpoint, method, response.get_data(as_text=True))
    assert "missing its security token" not in response.get_data(as_text=True), endpoint


@pytest.mark.parametrize("shard", range(SHARDS))
def test_random_form_bodies(app, user, routes, fuzz_client, shard):
    client, headers, token = fuzz_client
    for endpoint, method, path in todo_routes(routes, shard):

        @EXAMPLES
        @given(body=form_bodies, query=queries)
        def run(body: dict[str, str], query: dict[str, str]) -> None:
            restore(app, user)
            response = client.open(
                path,
                method=method,
                data={**body, "csrf_token": token},
                query_string=query,
                headers=headers,
            )
            check(response, endpoint, method)

        run()


@pytest.mark.parametrize("shard", range(SHARDS))
def test_random_json_bodies(app, user, routes, fuzz_client, shard):
    client, headers, _token = fuzz_client
    for endpoint, method, path in todo_routes(routes, shard):

        @EXAMPLES
        @given(body=json_bodies, content_type=content_types, query=queries)
        def run(body: bytes, content_type: str, query: dict[str, str]) -> None:
            restore(app, user)
            response = client.open(
                path,
                method=method,
                data=body,
                content_type=content_type,
                query_string=query,
                headers=headers,
            )
            check(response, endpoint, method)

        run()
