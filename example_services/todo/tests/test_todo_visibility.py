"""Who sees what: public, unlisted and private trackers, on the pages and through the API."""

from __future__ import annotations

import pytest
from todo.models import Comment, Ticket, Visibility


@pytest.fixture
def private(make, user):
    tracker = make.tracker(user, "secret", visibility=Visibility.private)
    make.ticket(tracker, user, "private ticket")
    return tracker


@pytest.fixture
def unlisted(make, user):
    tracker = make.tracker(user, "quiet", visibility=Visibility.unlisted)
    make.ticket(tracker, user, "quiet ticket")
    return tracker


PAGES = ["", "/1", "/new", "/settings", "/delete"]


@pytest.mark.usefixtures("private")
def test_private_tracker_is_a_404_for_everyone_else(client, bob_client, user_client, csrf, make):
    for suffix in PAGES:
        assert bob_client.get(f"/~alice/secret{suffix}").status_code == 404, suffix
        assert client.get(f"/~alice/secret{suffix}").status_code in (404, 503), suffix
        assert user_client.get(f"/~alice/secret{suffix}").status_code == 200, suffix
    token = csrf.token(bob_client)
    for suffix, body in [
        ("/new", {"title": "sneaky"}),
        ("/1/comment", {"text": "sneaky"}),
        ("/1/status", {"status": "resolved"}),
        ("/settings", {"name": "mine-now"}),
        ("/delete", {"confirm": "secret"}),
    ]:
        response = bob_client.post(f"/~alice/secret{suffix}", data={**body, "csrf_token": token})
        assert response.status_code == 404, suffix
    assert make.count(Ticket) == 1
    assert make.count(Comment) == 0
    assert "secret" not in bob_client.get("/").get_data(as_text=True)
    assert "~alice/secret" in user_client.get("/").get_data(as_text=True)


@pytest.mark.usefixtures("unlisted")
def test_unlisted_tracker_is_reachable_by_address_but_not_listed(client, bob_client, csrf, make):
    assert "quiet" not in client.get("/").get_data(as_text=True)
    assert "quiet" not in bob_client.get("/").get_data(as_text=True)
    assert "quiet ticket" in client.get("/~alice/quiet").get_data(as_text=True)
    assert client.get("/~alice/quiet/1").status_code == 200
    page = "/~alice/quiet/new"
    response = csrf.post(bob_client, page, {"title": "from bob"}, page=page)
    assert response.status_code == 302
    assert make.count(Ticket) == 2
    assert bob_client.get("/~alice/quiet/settings").status_code == 403


def test_public_tracker_is_open_to_read_and_submit(client, bob_client, csrf, tracker, ticket):
    assert client.get("/~alice/bugs").status_code == 200
    assert client.get("/~alice/bugs/1").status_code == 200
    page = client.get("/~alice/bugs/1").get_data(as_text=True)
    assert "comment-form" not in page and "Log in</a> to comment" in page
    response = csrf.post(bob_client, "/~alice/bugs/1/comment", {"text": "hi"})
    assert response.status_code == 302


@pytest.mark.usefixtures("private", "unlisted")
def test_api_only_reaches_the_callers_own_trackers(client, auth, bob, tracker):
    headers = auth(who=bob)
    assert client.get("/api/trackers", headers=headers).get_json() == {
        "results": [],
        "next": None,
    }
    for name in ("bugs", "secret", "quiet"):
        assert client.get(f"/api/trackers/{name}", headers=headers).status_code == 404
        assert client.get(f"/api/trackers/{name}/tickets/1", headers=headers).status_code == 404
        response = client.post(
            f"/api/trackers/{name}/tickets", json={"title": "x"}, headers=headers
        )
        assert response.status_code == 404
    alices = client.get("/api/trackers", headers=auth()).get_json()["results"]
    assert {t["name"] for t in alices} == {"bugs", "secret", "quiet"}


def test_suspended_user_cannot_use_the_pages(app, make, tracker):
    from srcore.db import UserType
    from srcore.testing import create_user, log_in_client

    carol = create_user(app, "carol", user_type=UserType.suspended)
    client = log_in_client(app.test_client(), carol)
    assert client.get("/create").status_code == 403
    assert client.get("/~alice/bugs/new").status_code == 403
