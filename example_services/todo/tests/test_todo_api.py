"""The JSON API: shapes, writes, validation errors, scopes and cursor pagination."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import event
from todo.models import Comment, Ticket, TicketStatus, Tracker, Visibility

from srcore import sqltrace


def errors(response) -> list[dict[str, str]]:
    body = response.get_json()
    assert set(body) == {"errors"}
    return body["errors"]


def test_tracker_crud(client, auth, make, user):
    headers = auth("todo/trackers:RW")
    response = client.post(
        "/api/trackers",
        json={"name": "api-made", "description": "Made *here*", "visibility": "unlisted"},
        headers=headers,
    )
    assert response.status_code == 201
    body = response.get_json()
    assert response.headers["Location"] == "/api/trackers/api-made"
    assert body["name"] == "api-made"
    assert body["visibility"] == "unlisted"
    assert body["owner"] == {"id": user.id, "username": "alice"}
    assert datetime.fromisoformat(body["created"]).tzinfo is not None

    got = client.get("/api/trackers/api-made", headers=headers).get_json()
    assert got == body

    response = client.patch(
        "/api/trackers/api-made", json={"visibility": "private"}, headers=headers
    )
    assert response.status_code == 200
    patched = response.get_json()
    assert patched["visibility"] == "private"
    assert patched["description"] == "Made *here*"
    assert patched["name"] == "api-made"

    response = client.patch(
        "/api/trackers/api-made", json={"name": "renamed", "description": None}, headers=headers
    )
    assert response.get_json()["name"] == "renamed"
    assert response.get_json()["description"] is None
    assert client.get("/api/trackers/api-made", headers=headers).status_code == 404

    response = client.delete("/api/trackers/renamed", headers=headers)
    assert response.status_code == 204
    assert make.count(Tracker) == 0
    assert client.delete("/api/trackers/renamed", headers=headers).status_code == 404


def test_tracker_list_shape(client, auth, make, user, bob):
    make.tracker(user, "one")
    make.tracker(user, "two", visibility=Visibility.private)
    make.tracker(bob, "bobs")
    body = client.get("/api/trackers", headers=auth("todo/trackers:RO")).get_json()
    assert [t["name"] for t in body["results"]] == ["two", "one"]
    assert body["next"] is None


def test_tracker_validation_errors(client, auth, tracker, make):
    headers = auth("todo/trackers:RW")
    response = client.post("/api/trackers", json={"name": "Bad Name"}, headers=headers)
    assert response.status_code == 400
    assert errors(response)[0]["field"] == "name"
    response = client.post(
        "/api/trackers", json={"name": 5, "visibility": "everyone"}, headers=headers
    )
    assert response.status_code == 400
    assert {e["field"] for e in errors(response)} == {"name", "visibility"}
    response = client.post("/api/trackers", json={}, headers=headers)
    assert errors(response) == [{"field": "name", "reason": "Name is required."}]
    response = client.post("/api/trackers", json={"name": "bugs"}, headers=headers)
    assert response.status_code == 409
    assert errors(response)[0]["field"] == "name"
    response = client.post(
        "/api/trackers", data="{not json", content_type="application/json", headers=headers
    )
    assert response.status_code == 400
    assert "field" not in errors(response)[0]
    response = client.patch("/api/trackers/bugs", json={"visibility": None}, headers=headers)
    assert response.status_code == 400
    assert errors(response)[0]["field"] == "visibility"
    assert make.count(Tracker) == 1
    assert make.get(Tracker, tracker.id).visibility == Visibility.public


def test_ticket_flow(client, auth, tracker, user):
    headers = auth("todo/tickets:RW")
    response = client.post(
        "/api/trackers/bugs/tickets",
        json={"title": "From the API", "description": "Details"},
        headers=headers,
    )
    assert response.status_code == 201
    ticket = response.get_json()
    assert response.headers["Location"] == "/api/trackers/bugs/tickets/1"
    assert ticket["number"] == 1
    assert ticket["status"] == "open"
    assert ticket["resolution"] is None
    assert ticket["tracker"] == {
        "id": tracker.id,
        "name": "bugs",
        "owner": {"id": user.id, "username": "alice"},
    }
    assert ticket["submitter"] == {"id": user.id, "username": "alice"}
    assert client.get("/api/trackers/bugs/tickets/1", headers=headers).get_json() == ticket

    second = client.post("/api/trackers/bugs/tickets", json={"title": "Two"}, headers=headers)
    assert second.get_json()["number"] == 2

    response = client.patch(
        "/api/trackers/bugs/tickets/1", json={"status": "resolved"}, headers=headers
    )
    assert response.get_json()["status"] == "resolved"
    assert response.get_json()["resolution"] == "fixed"
    response = client.patch(
        "/api/trackers/bugs/tickets/1", json={"resolution": "duplicate"}, headers=headers
    )
    assert response.get_json()["resolution"] == "duplicate"
    response = client.patch(
        "/api/trackers/bugs/tickets/1",
        json={"status": "open", "title": "Reopened"},
        headers=headers,
    )
    assert response.get_json()["status"] == "open"
    assert response.get_json()["resolution"] is None
    assert response.get_json()["title"] == "Reopened"

    listing = client.get("/api/trackers/bugs/tickets", headers=headers).get_json()
    assert [t["number"] for t in listing["results"]] == [2, 1]
    listing = client.get("/api/trackers/bugs/tickets?status=open", headers=headers).get_json()
    assert [t["number"] for t in listing["results"]] == [2, 1]
    listing = client.get("/api/trackers/bugs/tickets?status=resolved", headers=headers)
    assert listing.get_json() == {"results": [], "next": None}
    assert client.get("/api/trackers/bugs/tickets?status=x", headers=headers).status_code == 400


def test_ticket_validation_errors(client, auth, tracker, ticket, make):
    headers = auth("todo/tickets:RW")
    response = client.post("/api/trackers/bugs/tickets", json={"title": ""}, headers=headers)
    assert response.status_code == 400
    assert errors(response) == [{"field": "title", "reason": "Title is required."}]
    response = client.post(
        "/api/trackers/bugs/tickets", json={"title": "x", "description": ["no"]}, headers=headers
    )
    assert errors(response)[0]["field"] == "description"
    response = client.patch(
        "/api/trackers/bugs/tickets/1", json={"resolution": "fixed"}, headers=headers
    )
    assert response.status_code == 400
    assert errors(response)[0]["reason"] == "Only a resolved ticket has a resolution."
    response = client.patch(
        "/api/trackers/bugs/tickets/1", json={"status": "closed", "title": None}, headers=headers
    )
    assert {e["field"] for e in errors(response)} == {"status", "title"}
    assert make.count(Ticket) == 1
    assert make.get(Ticket, ticket.id).status == TicketStatus.open


def test_comments(client, auth, tracker, ticket, bob, make):
    headers = auth("todo/tickets:RW")
    make.comment(ticket, bob, "First!")
    response = client.post(
        "/api/trackers/bugs/tickets/1/comments", json={"text": "Second"}, headers=headers
    )
    assert response.status_code == 201
    assert response.get_json()["author"]["username"] == "alice"
    listing = client.get("/api/trackers/bugs/tickets/1/comments", headers=headers).get_json()
    assert [(c["author"]["username"], c["text"]) for c in listing["results"]] == [
        ("bob", "First!"),
        ("alice", "Second"),
    ]
    response = client.post(
        "/api/trackers/bugs/tickets/1/comments", json={"text": " "}, headers=headers
    )
    assert response.status_code == 400
    assert errors(response)[0]["field"] == "text"
    assert client.get("/api/trackers/bugs/tickets/2/comments", headers=headers).status_code == 404
    assert make.count(Comment) == 2


def test_not_found_is_json(client, auth, tracker):
    headers = auth()
    for path in (
        "/api/trackers/nope",
        "/api/trackers/bugs/tickets/1",
        "/api/trackers/bugs/tickets/0",
        "/api/trackers/bugs/tickets/99999999999",
        "/api/trackers/nope/tickets",
    ):
        response = client.get(path, headers=headers)
        assert response.status_code == 404, path
        assert errors(response)[0]["reason"]
    # A NUL in the address is refused before routing, with the same JSON body.
    response = client.get("/api/trackers/b%00gs", headers=headers)
    assert response.status_code == 400
    assert errors(response)[0]["reason"]


# -- scopes --------------------------------------------------------------------------------


def test_no_token_is_401(client, tracker):
    response = client.get("/api/trackers")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert errors(response)


def test_session_cookie_does_not_authenticate_the_api(user_client, tracker):
    assert user_client.get("/api/trackers").status_code == 401


@pytest.mark.parametrize(
    ("method", "path", "body", "needs"),
    [
        ("get", "/api/trackers", None, "todo/trackers:RO"),
        ("post", "/api/trackers", {"name": "new"}, "todo/trackers:RW"),
        ("get", "/api/trackers/bugs", None, "todo/trackers:RO"),
        ("patch", "/api/trackers/bugs", {"name": "new"}, "todo/trackers:RW"),
        ("delete", "/api/trackers/bugs", None, "todo/trackers:RW"),
        ("get", "/api/trackers/bugs/tickets", None, "todo/tickets:RO"),
        ("post", "/api/trackers/bugs/tickets", {"title": "t"}, "todo/tickets:RW"),
        ("get", "/api/trackers/bugs/tickets/1", None, "todo/tickets:RO"),
        ("patch", "/api/trackers/bugs/tickets/1", {"title": "t"}, "todo/tickets:RW"),
        ("get", "/api/trackers/bugs/tickets/1/comments", None, "todo/tickets:RO"),
        ("post", "/api/trackers/bugs/tickets/1/comments", {"text": "t"}, "todo/tickets:RW"),
    ],
)
def test_scopes(client, auth, tracker, ticket, make, method, path, body, needs):
    family = needs.split(":")[0]
    other = "todo/tickets" if family == "todo/trackers" else "todo/trackers"
    refused = [f"{other}:RW", "meta/profile:RW", "paste/pastes:RW"]
    if needs.endswith(":RW"):
        refused.append(f"{family}:RO")
    before = (make.count(Tracker), make.count(Ticket), make.count(Comment))
    call = getattr(client, method)
    for scopes in refused:
        response = call(path, json=body, headers=auth(scopes))
        assert response.status_code == 403, (scopes, response.status_code)
        assert "insufficient_scope" in response.headers["WWW-Authenticate"]
        assert errors(response)
    assert (make.count(Tracker), make.count(Ticket), make.count(Comment)) == before
    response = call(path, json=body, headers=auth(needs))
    assert response.status_code in (200, 201, 204), response.get_json()
    if needs.endswith(":RO"):
        # RW implies RO
        assert call(path, headers=auth(f"{family}:RW")).status_code == 200


def test_token_for_another_audience_is_refused(client, make_token, user, tracker):
    token = make_token("todo/trackers:RW", user=user, aud="paste")
    response = client.get("/api/trackers", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401


def test_client_token_without_user_is_403(client, make_token, tracker):
    token = make_token("todo/trackers:RW")
    response = client.get("/api/trackers", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403
    assert errors(response)


# -- pagination ----------------------------------------------------------------------------


def test_cursor_pagination_is_stable_under_inserts(client, auth, make, tracker, user):
    for i in range(5):
        make.ticket(tracker, user, f"t{i + 1}")
    headers = auth("todo/tickets:RO")
    first = client.get("/api/trackers/bugs/tickets?limit=2", headers=headers).get_json()
    assert [t["number"] for t in first["results"]] == [5, 4]
    assert first["next"]
    for i in range(3):  # newer tickets arrive while the client pages
        make.ticket(tracker, user, f"new{i}")
    second = client.get(
        f"/api/trackers/bugs/tickets?limit=2&cursor={first['next']}", headers=headers
    ).get_json()
    assert [t["number"] for t in second["results"]] == [3, 2]
    third = client.get(
        f"/api/trackers/bugs/tickets?limit=2&cursor={second['next']}", headers=headers
    ).get_json()
    assert [t["number"] for t in third["results"]] == [1]
    assert third["next"] is None


def test_tracker_listing_pages_through_everything(client, auth, make, user):
    names = {f"t{i:02d}" for i in range(7)}
    for name in sorted(names):
        make.tracker(user, name)
    headers = auth("todo/trackers:RO")
    seen: list[str] = []
    url = "/api/trackers?limit=3"
    while url:
        body = client.get(url, headers=headers).get_json()
        seen.extend(t["name"] for t in body["results"])
        url = f"/api/trackers?limit=3&cursor={body['next']}" if body["next"] else ""
    assert len(seen) == len(names) and set(seen) == names


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "limit=abc",
        "limit=-1",
        "limit=99999999999999999999999",
        "cursor=nope",
        "cursor=W10",  # [] : wrong length
        "cursor=WyJ4Il0",  # ["x"] : wrong type
        "cursor=WzEuNV0",  # [1.5]
        "cursor=" + "A" * 2000,
        "cursor=%00",
    ],
)
def test_bad_cursor_or_limit_is_400(client, auth, tracker, ticket, query):
    for path in (
        "/api/trackers",
        "/api/trackers/bugs/tickets",
        "/api/trackers/bugs/tickets/1/comments",
    ):
        response = client.get(f"{path}?{query}", headers=auth())
        assert response.status_code == 400, (path, query)
        assert errors(response)[0]["reason"]


def test_get_ticket_is_one_query_and_no_write(app, client, auth, tracker, ticket):
    headers = auth("todo/tickets:RO")
    statements: list[str] = []
    engine = app.extensions["srcore"].db.engine

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    client.get("/api/trackers/bugs/tickets/1", headers=headers)  # warm the token cache
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.get("/api/trackers/bugs/tickets/1", headers=headers)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 200
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    writes = [s for s in statements if not s.lstrip().upper().startswith("SELECT")]
    # the ticket with its tracker, owner and submitter; the token check costs no query
    assert len(selects) == 1, statements
    assert writes == []


def test_get_ticket_is_one_round_trip(app, client, auth, tracker, ticket, user):
    """With a bearer token, reading a ticket sends the database its query and nothing
    else: on PostgreSQL one round trip (no BEGIN, no ROLLBACK), counted on the wire."""
    headers = auth("todo/tickets:RO")
    client.get("/api/trackers/bugs/tickets/1", headers=headers)  # warm the token cache
    with sqltrace.watch(app.extensions["srcore"].db.engine) as wire:
        response = client.get("/api/trackers/bugs/tickets/1", headers=headers)
    assert response.status_code == 200
    assert response.get_json()["submitter"]["username"] == user.username
    assert len(wire.sent) == 1, wire.sent
    if wire.backend == "postgresql":
        assert wire.round_trips == 1


def test_failed_api_write_leaves_nothing(app, client, auth, tracker, ticket, monkeypatch):
    """A write request is one transaction: when it fails after its changes were sent to
    the database, none of them stays."""
    from todo import events as todo_events

    def fail(*args, **kwargs):
        from srcore.db import session

        session.flush()
        raise RuntimeError("the event could not be recorded")

    monkeypatch.setattr(todo_events, "ticket_changed", fail)
    app.config["PROPAGATE_EXCEPTIONS"] = False
    headers = auth("todo/tickets:RW")
    response = client.patch(
        "/api/trackers/bugs/tickets/1", json={"title": "Renamed"}, headers=headers
    )
    assert response.status_code == 500
    got = client.get("/api/trackers/bugs/tickets/1", headers=headers).get_json()
    assert got["title"] == "It crashes"
