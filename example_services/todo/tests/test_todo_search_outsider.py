"""Searching tickets as an outsider: a second user, hostile query bytes, odd parameters.

Every answer is a 2xx with the right tickets or a 4xx naming ``search`` (never a 500), a
tracker someone cannot see stays a 404 whatever the search says, and a title or a query
comes back escaped.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import delete, update
from todo.models import Ticket, Tracker, Visibility

from srcore.search import MAX_TEXT_LENGTH

#: Queries in other search languages' syntax, quoting puzzles, and bytes a database or a
#: browser treats specially; each is either a plain search or a 400 naming the term.
HOSTILE = [
    '"',
    '""',
    '" "',
    'a"b',
    '"a"b',
    "NEAR(crash start)",
    "crash*",
    "^crash",
    "title:crash",
    "(crash OR typo)",
    "crash AND NOT typo",
    "-crash",
    "--",
    "\\",
    '"\\"',
    "%",
    "_",
    "/",
    "//",
    "';--",
    "' OR '1'='1",
    "\u202ecrash",
    "\U0001f600",
    "\ufeff",
    "\u200b",
    "a" * 1000,
    "a " * 20,
    "a " * 21,
    "x:" * 400,
    "!!crash",
    '!"',
    "!",
    ":crash",
    "crash:",
    "status:open:x",
    'status:"',
    "submitter:" + "x" * 990,
    "\u0130stanbul",
    "status:\u0130",
    "\t\n\r",
    "\u3000crash\u3000start",
    "a\u00a0b",
    "\u2028",
    "r\u00e9sum\u00e9",
    "\x00",
    "\x1b[31m",
    "\x7f",
]


def titles(response: Any) -> list[str]:
    page = response.get_data(as_text=True)
    # A title is isolated in <bdi>, so its text cannot reorder what is around it.
    return re.findall(r'class="item-title" href="[^"]*">(?:<bdi>)?([^<]*)(?:</bdi>)?</a>', page)


def _tickets(make: Any, tracker: Tracker, user: Any) -> None:
    make.ticket(tracker, user, "Crash on start", description="segfault in main()")
    make.ticket(tracker, user, "Typo in README", description="100% wrong")


def test_hostile_queries_on_the_page_are_a_page_or_a_400(client, make, tracker, user):
    _tickets(make, tracker, user)
    for query in HOSTILE:
        response = client.get("/~alice/bugs", query_string={"search": query})
        assert response.status_code in (200, 400), (query, response.status_code)
        if response.status_code == 400:
            page = response.get_data(as_text=True)
            assert "Traceback" not in page
            assert 'id="search-error"' in page or "control characters" in page, query


def test_hostile_queries_in_the_api_are_a_list_or_a_400_on_search(
    client, make, tracker, user, auth
):
    _tickets(make, tracker, user)
    headers = auth()
    for query in HOSTILE:
        response = client.get(
            "/api/trackers/bugs/tickets", query_string={"search": query}, headers=headers
        )
        assert response.status_code in (200, 400), (query, response.status_code)
        body = response.get_json()
        if response.status_code == 200:
            assert set(body) == {"results", "next"}
        else:
            [error] = body["errors"]
            assert error.get("field", "search") == "search", (query, error)
            assert error["reason"], query
            assert len(error["reason"]) < 300, (query, error)


def test_a_long_self_similar_word_is_refused_with_a_reason(client, make, tracker, user, auth):
    make.ticket(tracker, user, "Long", description="a" * 16_000)
    headers = auth()
    fits = "a" * MAX_TEXT_LENGTH
    response = client.get(
        "/api/trackers/bugs/tickets", query_string={"search": fits}, headers=headers
    )
    assert [t["title"] for t in response.get_json()["results"]] == ["Long"]
    too_long = "a" * (MAX_TEXT_LENGTH - 1) + "b " + "a" * 50
    response = client.get(
        "/api/trackers/bugs/tickets", query_string={"search": too_long}, headers=headers
    )
    assert response.status_code == 400
    [error] = response.get_json()["errors"]
    assert error["field"] == "search"
    assert f"use at most {MAX_TEXT_LENGTH}," in error["reason"]
    page = client.get("/~alice/bugs", query_string={"search": too_long})
    assert page.status_code == 400
    assert f"use at most {MAX_TEXT_LENGTH}," in page.get_data(as_text=True)
    assert titles(page) == []


def test_odd_parameters(client, make, tracker, user, auth):
    _tickets(make, tracker, user)
    twice = client.get("/~alice/bugs?search=crash&search=typo")
    assert twice.status_code == 400
    assert "more than once" in twice.get_data(as_text=True)
    assert titles(twice) == []
    # a PHP-style array is some other parameter: the list is unsearched
    assert client.get("/~alice/bugs?search[]=crash").status_code == 200
    headers = auth()
    for query_string, field in [
        ("search=crash&search=typo", "search"),
        ("limit=100000000000000000000", "limit"),
        ("limit=-1", "limit"),
        ("cursor=-1", "cursor"),
        ("cursor=" + "A" * 1100, "cursor"),
        ("cursor=%00", None),
    ]:
        response = client.get(f"/api/trackers/bugs/tickets?{query_string}", headers=headers)
        assert response.status_code == 400, query_string[:60]
        [error] = response.get_json()["errors"]
        assert error.get("field") == field, (query_string[:60], error)


def test_a_private_tracker_is_a_404_whatever_the_search(app, client, bob_client, make, user):
    secret = make.tracker(user, "secret", visibility=Visibility.private)
    make.ticket(secret, user, "Leaked password", description="hunter2")
    for who in (client, bob_client):
        for query in ("", "hunter2", "submitter:alice", '"unclosed', "colour:red", "!"):
            for path in ("/~alice/secret", "/~alice/no-such-tracker"):
                response = who.get(path, query_string={"search": query})
                assert response.status_code == 404, (path, query)
                page = response.get_data(as_text=True)
                assert "Leaked password" not in page
                assert "search-error" not in page  # a bad query says nothing either


def test_search_follows_visibility_and_deletion(app, client, bob_client, make, user, auth):
    shared = make.tracker(user, "shared", visibility=Visibility.unlisted)
    make.ticket(shared, user, "Rotate the keys", description="hunter2")
    assert titles(bob_client.get("/~alice/shared", query_string={"search": "hunter2"})) == [
        "Rotate the keys"
    ]
    db = app.extensions["srcore"].db
    with db.transaction() as session:
        session.execute(
            update(Tracker).where(Tracker.id == shared.id).values(visibility=Visibility.private)
        )
    for query in ("hunter2", "rotate", ""):
        response = bob_client.get("/~alice/shared", query_string={"search": query})
        assert response.status_code == 404
    # a deleted ticket is found by nobody, its owner included
    with db.transaction() as session:
        session.execute(delete(Ticket).where(Ticket.tracker_id == shared.id))
    response = client.get(
        "/api/trackers/shared/tickets", query_string={"search": "hunter2"}, headers=auth()
    )
    assert response.status_code == 200
    assert response.get_json() == {"results": [], "next": None}


def test_another_users_token_finds_nothing_of_alices(app, client, make, user, bob, auth):
    _tickets(make, make.tracker(user, "mine"), user)
    bob_headers = auth(who=bob)
    for query in ("crash", "submitter:alice", "", "!nothing"):
        response = client.get(
            "/api/trackers/mine/tickets", query_string={"search": query}, headers=bob_headers
        )
        assert response.status_code == 404, query
        assert "Crash" not in response.get_data(as_text=True)


def test_a_cursor_from_alices_listing_shows_bob_only_his_own(app, client, make, user, bob, auth):
    alices = make.tracker(user, "bugs2")
    for i in range(3):
        make.ticket(alices, user, f"alice crash {i}")
    bobs = make.tracker(bob, "bugs2")
    make.ticket(bobs, bob, "bob crash")
    first = client.get(
        "/api/trackers/bugs2/tickets",
        query_string={"search": "crash", "limit": 1},
        headers=auth(),
    ).get_json()
    assert first["next"]
    stolen = client.get(
        "/api/trackers/bugs2/tickets",
        query_string={"search": "crash", "cursor": first["next"]},
        headers=auth(who=bob),
    )
    assert stolen.status_code in (200, 400)
    if stolen.status_code == 200:
        assert {t["title"] for t in stolen.get_json()["results"]} <= {"bob crash"}


def test_titles_and_queries_come_back_escaped(client, make, tracker, user):
    make.ticket(tracker, user, "<script>alert(1)</script> crash", description="<img src=x>")
    for query in ("crash", "<script>", '"<img src=x>"', '<b onmouseover=alert(1)>"x'):
        response = client.get("/~alice/bugs", query_string={"search": query})
        page = response.get_data(as_text=True)
        assert "<script>alert(1)" not in page
        assert "<img src=x>" not in page
        assert "<b onmouseover" not in page
    found = client.get("/~alice/bugs", query_string={"search": "<script>"})
    assert "&lt;script&gt;alert(1)&lt;/script&gt; crash" in found.get_data(as_text=True)
