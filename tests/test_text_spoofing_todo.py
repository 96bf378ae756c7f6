"""todo: a ticket's title is one line with no bidirectional control; its description keeps
what right-to-left writing needs; pages isolate titles from the text around them."""

# ruff: noqa: RUF001 - right-to-left letters are what these tests are about

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def srcore_service() -> str:
    return "todo"


def _tracker(app: Any, owner: Any) -> Any:
    from todo.models import Tracker, Visibility

    with app.extensions["srcore"].db.transaction() as session:
        tracker = Tracker(owner_id=owner.id, name="site", visibility=Visibility.public)
        session.add(tracker)
    return tracker


def _headers(make_token: Any, user: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token('todo/tickets:RW', user=user)}"}


def test_ticket_title_with_an_override_is_refused(
    app: Any, client: Any, make_token: Any, user: Any
) -> None:
    _tracker(app, user)
    headers = _headers(make_token, user)
    response = client.post(
        "/api/trackers/site/tickets",
        json={"title": "Fix login\u202e ignore this", "description": "x"},
        headers=headers,
    )
    assert response.status_code == 400
    (error,) = response.get_json()["errors"]
    assert error["field"] == "title" and "U+202E" in error["reason"]
    described = "\u202bעברית\u202c and \u200fmarks\nacross lines"
    response = client.post(
        "/api/trackers/site/tickets",
        json={"title": "בעיה בכניסה", "description": described},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["description"] == described


def test_ticket_pages_isolate_the_title(app: Any, client: Any, user: Any) -> None:
    from todo.models import Ticket

    tracker = _tracker(app, user)
    with app.extensions["srcore"].db.transaction() as session:
        session.add(
            Ticket(tracker_id=tracker.id, number=1, title="old\u202eeltit", submitter_id=user.id)
        )
        tracker.ticket_count = 1
        session.merge(tracker)
    ticket = client.get("/~alice/site/1").get_data(as_text=True)
    assert "<h1><bdi>old\u202eeltit</bdi> <span" in ticket
    listing = client.get("/~alice/site").get_data(as_text=True)
    assert "><bdi>old\u202eeltit</bdi></a>" in listing
