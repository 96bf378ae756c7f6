"""An edit form sent without some of its fields (another client, a page from an older
version) changes only those it has: a private tracker is not made public, a description
is not wiped. A field sent empty is still cleared."""

from __future__ import annotations

from todo.models import Ticket, Tracker, Visibility


def test_tracker_settings_without_visibility_keep_a_private_tracker_private(
    user_client, csrf, make, user, bob_client
):
    private = make.tracker(user, "secret", visibility=Visibility.private)
    page = "/~alice/secret/settings"
    response = csrf.post(user_client, page, {"name": "secret"}, page=page)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    kept = make.get(Tracker, private.id)
    assert kept.visibility == Visibility.private
    assert kept.description == "Things that are *broken*."
    assert bob_client.get("/~alice/secret").status_code == 404
    # Sent empty, the description is cleared.
    csrf.post(user_client, page, {"name": "secret", "description": ""}, page=page)
    assert make.get(Tracker, private.id).description is None


def test_a_ticket_edit_without_a_description_keeps_it(user_client, csrf, make, ticket):
    page = "/~alice/bugs/1/edit"
    response = csrf.post(user_client, page, {"title": "It crashes twice"}, page=page)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    kept = make.get(Ticket, ticket.id)
    assert (kept.title, kept.description) == ("It crashes twice", "Steps:\n\n1. *open* it")
