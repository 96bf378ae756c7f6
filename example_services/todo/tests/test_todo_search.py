"""Searching a tracker's tickets: the tracker page's search box and the API's ``?search=``."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from todo.models import Resolution, TicketStatus


def titles(response: Any) -> list[str]:
    page = response.get_data(as_text=True)
    # A title is isolated in <bdi>, so its text cannot reorder what is around it.
    return re.findall(r'class="item-title" href="[^"]*">(?:<bdi>)?([^<]*)(?:</bdi>)?</a>', page)


@pytest.fixture
def tickets(make, tracker, user, bob) -> None:
    make.ticket(tracker, user, "Crash on start", description="segfault in main()")
    make.ticket(tracker, bob, "Typo in README", description="100% wrong")
    make.ticket(
        tracker,
        bob,
        "Crash when saving",
        status=TicketStatus.resolved,
        resolution=Resolution.fixed,
    )
    make.ticket(tracker, user, "snake_case names", description=None)


def test_page_search_words_keys_and_negation(client, tickets):
    search = lambda q: titles(client.get("/~alice/bugs", query_string={"search": q}))  # noqa: E731
    assert search("crash") == ["Crash when saving", "Crash on start"]
    assert search("crash status:open") == ["Crash on start"]
    assert search("crash !status:open") == ["Crash when saving"]
    assert search("SEGFAULT") == ["Crash on start"]
    assert search('"100%"') == ["Typo in README"]
    assert search("snake_case") == ["snake_case names"]
    assert search("submitter:BOB") == ["Crash when saving", "Typo in README"]
    assert search("!submitter:bob status:open") == ["snake_case names", "Crash on start"]
    assert search("resolution:fixed") == ["Crash when saving"]
    assert search("nothing-like-this") == []
    # no search: the open tickets, as before
    assert titles(client.get("/~alice/bugs")) == [
        "snake_case names",
        "Typo in README",
        "Crash on start",
    ]


def test_page_search_keeps_the_query_in_the_box_and_links(client, make, tracker, user):
    for i in range(27):
        make.ticket(tracker, user, f"crash {i:02d}")
    response = client.get("/~alice/bugs", query_string={"search": 'crash "0"'})
    page = response.get_data(as_text=True)
    assert 'name="search"' in page
    assert 'value="crash &#34;0&#34;"' in page or 'value="crash &quot;0&quot;"' in page
    assert "search=crash+%220%22" in page  # the status tabs keep the search
    response = client.get("/~alice/bugs", query_string={"search": "crash", "page": 2})
    assert titles(response) == ["crash 01", "crash 00"]


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("status:nope", "In status:nope: use one of open, resolved."),
        ("colour:red", "Unknown key &#39;colour&#39; in colour:red"),
        ('"unclosed', "is never closed"),
        ("status:", "has no value"),
        (" ".join(["w"] * 21), "too many terms"),
    ],
)
def test_page_bad_search_shows_the_message(client, tickets, query, says):
    response = client.get("/~alice/bugs", query_string={"search": query})
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert says in page
    assert 'aria-invalid="true"' in page
    assert titles(response) == []


def test_page_search_too_long_is_a_400(client, tickets):
    response = client.get("/~alice/bugs", query_string={"search": "x" * 1001})
    assert response.status_code == 400


def test_page_search_of_a_private_tracker_is_still_hidden(client, make, bob):
    from todo.models import Visibility

    make.tracker(bob, "secret", visibility=Visibility.private)
    assert client.get("/~bob/secret", query_string={"search": "status:nope"}).status_code == 404


def test_api_search(client, auth, tickets):
    headers = auth("todo/tickets:RO")

    def numbers(query: str, **extra: str) -> list[int]:
        response = client.get(
            "/api/trackers/bugs/tickets", query_string={"search": query, **extra}, headers=headers
        )
        assert response.status_code == 200, response.get_json()
        return [t["number"] for t in response.get_json()["results"]]

    assert numbers("crash") == [3, 1]
    assert numbers("crash !status:resolved") == [1]
    assert numbers("crash", status="resolved") == [3]
    assert numbers("submitter:bob") == [3, 2]
    assert numbers("") == [4, 3, 2, 1]
    page = client.get(
        "/api/trackers/bugs/tickets",
        query_string={"search": "submitter:bob", "limit": 1},
        headers=headers,
    ).get_json()
    assert [t["number"] for t in page["results"]] == [3]
    rest = client.get(
        "/api/trackers/bugs/tickets",
        query_string={"search": "submitter:bob", "cursor": page["next"]},
        headers=headers,
    ).get_json()
    assert [t["number"] for t in rest["results"]] == [2]


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("status:nope", "In status:nope: use one of open, resolved."),
        ("size:big", "Unknown key 'size' in size:big; known keys: status, resolution, submitter."),
        ('"unclosed', 'The quote in "unclosed is never closed; add the closing quote.'),
    ],
)
def test_api_bad_search_is_a_400(client, auth, tickets, query, reason):
    response = client.get(
        "/api/trackers/bugs/tickets", query_string={"search": query}, headers=auth()
    )
    assert response.status_code == 400
    assert response.get_json() == {"errors": [{"field": "search", "reason": reason}]}


_hostile = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x00"), max_size=80)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.one_of(
        _hostile,
        st.builds(
            "{}{}:{}".format,
            st.sampled_from(["", "!"]),
            st.sampled_from(["status", "resolution", "submitter"]),
            _hostile,
        ),
    )
)
def test_any_search_is_a_page_or_a_400(client, auth, tickets, query):
    headers = auth("todo/tickets:RO")
    page = client.get("/~alice/bugs", query_string={"search": query})
    api = client.get("/api/trackers/bugs/tickets", query_string={"search": query}, headers=headers)
    assert page.status_code in (200, 400)
    assert api.status_code == page.status_code
    if api.status_code == 400:  # the search's own error, or the request's control characters
        assert api.get_json()["errors"][0].get("field", "search") == "search"
