"""todo's paged front page and ticket comments given cursors they did not make: another
ticket's, tampered, huge, beyond ASCII. Each is a 400 naming ``cursor`` or a page of this
ticket's own comments, never a 500 nor another ticket's comments."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srcore.pagination import encode_cursor


@pytest.fixture(scope="session")
def srcore_service() -> str:
    return "todo"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


HOSTILE = [
    "x",
    "%FF",
    "é",
    "\u202e",
    "A" * 5000,
    _b64(b"[1e400]"),
    _b64(b"[NaN]"),
    _b64(b"[-1]"),
    _b64(b"[99999999999999999999]"),
    _b64(b'["1"]'),
    _b64(b"[true]"),
    _b64(b"[[1]]"),
    _b64(b"[1,2]"),
    _b64(b"{}"),
    _b64(b"\xff\xfe"),
    _b64(b'["9999-12-31T23:59:59-23:59", 1]'),
    _b64(b'["0001-01-01T00:00:00+14:00", 1]'),
    _b64(b'["2024-01-01T00:00:00", 1]'),
    _b64(b'["\\u0000", 1]'),
    _b64(b"[" * 100_000),
]


@pytest.fixture
def two_tickets(app: Any, user: Any) -> tuple[Any, Any]:
    """Two tickets of alice's public tracker, with 60 comments each."""
    from todo.models import Comment, Ticket, Tracker, Visibility

    with app.extensions["srcore"].db.transaction() as session:
        tracker = Tracker(
            owner_id=user.id, name="site", visibility=Visibility.public, ticket_count=2
        )
        session.add(tracker)
        session.flush()
        tickets = [
            Ticket(tracker_id=tracker.id, number=n, title=f"t{n}", submitter_id=user.id)
            for n in (1, 2)
        ]
        session.add_all(tickets)
        session.flush()
        for ticket in tickets:
            for i in range(60):
                session.add(
                    Comment(ticket_id=ticket.id, author_id=user.id, text=f"c{ticket.number}-{i}")
                )
    return tickets[0], tickets[1]


def _comments(page: str) -> set[str]:
    return set(re.findall(r"c[12]-\d+", page))


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(cursor=st.one_of(st.sampled_from(HOSTILE), st.text(max_size=300)))
def test_a_cursor_not_made_here_is_a_400_naming_it(
    user_client: Any, two_tickets: Any, cursor: str
) -> None:
    for path in ("/", "/~alice/site/1"):
        answer = user_client.get(path, query_string={"cursor": cursor})
        assert answer.status_code in (200, 400), (path, cursor, answer.status_code)
        if answer.status_code == 400:
            # srcore.hygiene refuses a query string with a control character as a whole.
            text = answer.get_data(as_text=True)
            assert "cursor: " in text or "query string contains control characters" in text
        elif path != "/":
            assert _comments(answer.get_data(as_text=True)) <= {f"c1-{i}" for i in range(60)}


def test_another_ticket_s_cursor_shows_this_ticket_s_comments(
    user_client: Any, two_tickets: Any
) -> None:
    page = user_client.get("/~alice/site/2").get_data(as_text=True)
    older = re.search(r'href="[^"]*cursor=([^"&#]+)', page)
    assert older is not None
    on_first = user_client.get("/~alice/site/1", query_string={"cursor": older.group(1)})
    assert on_first.status_code == 200
    shown = _comments(on_first.get_data(as_text=True))
    assert shown and all(name.startswith("c1-") for name in shown)
    # A cursor past every comment of this ticket shows none of another's.
    beyond = user_client.get("/~alice/site/1", query_string={"cursor": encode_cursor([1])})
    assert beyond.status_code == 200 and not _comments(beyond.get_data(as_text=True))
