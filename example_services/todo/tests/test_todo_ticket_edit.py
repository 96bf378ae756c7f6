"""Editing a ticket's title and description through its page: by the ticket's submitter
or the tracker's owner, with the CSRF token, the reasons beside the fields when invalid."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from todo.models import Ticket

from srcore.webhooks.models import OutboxRow


def text(response: Any) -> str:
    return str(response.get_data(as_text=True))


def stored(app: Any, ticket: Ticket) -> Ticket:
    with app.extensions["srcore"].db.transaction() as session:
        found = session.get(Ticket, ticket.id)
        assert found is not None
        session.expunge(found)
        return found


def test_the_submitter_edits_title_and_description(app, user_client, csrf, ticket):
    page = text(user_client.get("/~alice/bugs/1"))
    assert 'href="/~alice/bugs/1/edit"' in page
    form = text(user_client.get("/~alice/bugs/1/edit"))
    assert 'value="It crashes"' in form  # the current title and description are filled in
    assert "Steps:\n\n1. *open* it</textarea>" in form
    response = csrf.post(
        user_client,
        "/~alice/bugs/1/edit",
        {"title": "It crashes on start", "description": "Run `start`."},
        page="/~alice/bugs/1/edit",
    )
    assert response.status_code == 302
    assert response.headers["Location"] == "/~alice/bugs/1"
    after = text(user_client.get("/~alice/bugs/1"))
    assert "Ticket #1 saved." in after
    assert "It crashes on start" in after and "<code>start</code>" in after
    edited = stored(app, ticket)
    assert (edited.title, edited.description) == ("It crashes on start", "Run `start`.")
    with app.extensions["srcore"].db.transaction() as session:
        events = session.scalars(select(OutboxRow.event)).all()
    assert events.count("ticket:updated") == 1


def test_the_tracker_owner_edits_a_ticket_someone_else_submitted(
    app, user_client, csrf, make, tracker, bob
):
    bobs = make.ticket(tracker, bob, "Bob's report")
    response = csrf.post(
        user_client, "/~alice/bugs/1/edit", {"title": "Bob's report, retitled"}, page="/create"
    )
    assert response.status_code == 302
    assert stored(app, bobs).title == "Bob's report, retitled"


def test_an_invalid_edit_shows_the_form_again_with_the_reason(app, user_client, csrf, ticket):
    response = csrf.post(user_client, "/~alice/bugs/1/edit", {"title": "  ", "description": ""})
    assert response.status_code == 400
    page = text(response)
    assert 'aria-invalid="true"' in page and "required" in page
    assert stored(app, ticket).title == "It crashes"


def test_nobody_else_may_edit(app, bob_client, csrf, ticket):
    assert bob_client.get("/~alice/bugs/1/edit").status_code == 403
    assert 'href="/~alice/bugs/1/edit"' not in text(bob_client.get("/~alice/bugs/1"))
    response = csrf.post(bob_client, "/~alice/bugs/1/edit", {"title": "Mine now"})
    assert response.status_code == 403
    assert stored(app, ticket).title == "It crashes"


def test_editing_needs_a_login_and_the_csrf_token(app, client, user_client, ticket):
    # Without a login backend configured (no [meta] here) the login is unavailable: 503.
    assert client.get("/~alice/bugs/1/edit").status_code in (302, 401, 503)
    assert client.post("/~alice/bugs/1/edit", data={"title": "x"}).status_code in (400, 401, 503)
    assert user_client.post("/~alice/bugs/1/edit", data={"title": "x"}).status_code == 400
    assert stored(app, ticket).title == "It crashes"
