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


def _was(form: str) -> str:
    import re

    match = re.search(r'name="was" value="([0-9a-f]+)"', form)
    assert match, "the edit form carries the version it shows"
    return match.group(1)


def test_an_edit_from_an_old_form_does_not_overwrite_a_later_one_unseen(
    app, user_client, csrf, ticket
):
    """Two tabs open the edit form; the first saves. The second's save used to replace
    that edit silently. It now comes back with its text, saying the ticket changed; sent
    again, it replaces the other edit knowingly."""
    old_form = text(user_client.get("/~alice/bugs/1/edit"))
    was = _was(old_form)
    first = csrf.post(
        user_client,
        "/~alice/bugs/1/edit",
        {"title": "Crashes at start", "description": "First tab", "was": was},
        page="/~alice/bugs/1/edit",
    )
    assert first.status_code == 302
    second = csrf.post(
        user_client,
        "/~alice/bugs/1/edit",
        {"title": "Crash on launch", "description": "Second tab, written at length", "was": was},
        page="/~alice/bugs/1/edit",
    )
    page = text(second)
    assert second.status_code == 400
    assert "Someone changed this ticket since you opened this form" in page
    assert "Crashes at start" in page  # its title now
    assert "Second tab, written at length</textarea>" in page  # nothing typed is lost
    assert (stored(app, ticket).title, stored(app, ticket).description) == (
        "Crashes at start",
        "First tab",
    )
    again = csrf.post(
        user_client,
        "/~alice/bugs/1/edit",
        {"title": "Crash on launch", "description": "Second tab", "was": _was(page)},
        page="/~alice/bugs/1/edit",
    )
    assert again.status_code == 302
    assert stored(app, ticket).title == "Crash on launch"


def test_an_edit_form_without_a_version_still_saves(app, user_client, csrf, ticket):
    """Scripts and forms from before the version field keep working as they did."""
    response = csrf.post(
        user_client, "/~alice/bugs/1/edit", {"title": "No version"}, page="/~alice/bugs/1/edit"
    )
    assert response.status_code == 302
    assert stored(app, ticket).title == "No version"
