"""Every list todo shows, to a user (or an attacker) with thousands of rows: a page holds a
page's worth, its next link reaches the rest once each, and nobody else's private rows
show on any page.

Rows are written straight to the database, a bounded number in one statement each.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, update
from todo.models import Comment, Ticket, TicketStatus, Tracker, User, Visibility
from todo.views import COMMENTS_PER_PAGE, Settings

from srcore.db import utcnow
from srcore.pagination import MAX_LIMIT
from srcore.settings import settings

TRACKERS = 1_000
TICKETS = 2_000
COMMENTS = 2_000
_VISIBILITIES = [Visibility.public, Visibility.unlisted, Visibility.private]
_NEXT = re.compile(r'<a class="page-link page-next" href="([^"]+)" rel="next">')
_OLDER = re.compile(r'<a class="page-link page-older" href="([^"]+)" rel="next">')


def _db(app: Any) -> Any:
    return app.extensions["srcore"].db


def _per_page(app: Any) -> Settings:
    with app.app_context():
        return settings(Settings)


def _trackers(app: Any, owner: User, count: int, prefix: str) -> list[str]:
    """*count* trackers of *owner* in every visibility, many changed at the same moment;
    their names, the most recently changed first (as the front page lists them)."""
    start = utcnow() - timedelta(days=1)
    rows = [
        {
            "owner_id": owner.id,
            "name": f"{prefix}{i:05d}",
            "visibility": _VISIBILITIES[i % 3],
            # Seven at each instant: the list's order falls back on the id.
            "updated": start + timedelta(seconds=i // 7),
        }
        for i in range(count)
    ]
    with _db(app).transaction() as session:
        session.execute(insert(Tracker), rows)
    return [row["name"] for row in reversed(rows)]


def _section(page: str, section_id: str) -> str:
    start = page.index(f'id="{section_id}"')
    return page[start : page.index("</section>", start)]


def _walk(
    client: Any, url: str, read: Callable[[str], tuple[list[str], str | None]]
) -> Iterator[list[str]]:
    """Each page's items, following its next link until a page has none."""
    seen_urls = set()
    while url is not None:
        assert url not in seen_urls, f"{url} links to itself"
        seen_urls.add(url)
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        items, url = read(response.get_data(as_text=True))
        yield items


def _link(pattern: re.Pattern[str], page: str) -> str | None:
    found = pattern.search(page)
    return html.unescape(found.group(1)) if found else None


def test_own_trackers_on_the_front_page_come_a_page_at_a_time(app, user_client, user, bob):
    per_page = _per_page(app).trackers_per_page
    expected = _trackers(app, user, TRACKERS, "a")
    bobs = _trackers(app, bob, 60, "x")

    def read(page: str) -> tuple[list[str], str | None]:
        section = _section(page, "your-trackers")
        assert "~bob/" not in section
        return re.findall(r'href="/~alice/([a-z0-9]+)"', section), _link(_NEXT, section)

    pages = list(_walk(user_client, "/", read))
    assert all(0 < len(items) <= per_page for items in pages)
    assert len(pages) == -(-TRACKERS // per_page)
    assert [name for items in pages for name in items] == expected
    # The first page offers no way back; a later one a link to the newest.
    first = user_client.get("/").get_data(as_text=True)
    assert "Newest" not in _section(first, "your-trackers")
    # ?limit= is the API's: a page's size is the site's.
    many = user_client.get(f"/?limit={MAX_LIMIT}").get_data(as_text=True)
    assert len(re.findall(r'href="/~alice/', _section(many, "your-trackers"))) == per_page
    # bob's private and unlisted trackers are on none of the public pages either.
    public = [*_walk(user_client, "/", _public_reader)]
    listed = {name for items in public for name in items}
    assert all(0 < len(items) <= per_page for items in public)
    assert len(listed) == sum(len(items) for items in public)
    hidden = {f"~bob/{name}" for i, name in enumerate(reversed(bobs)) if i % 3}
    assert listed.isdisjoint(hidden)
    assert f"~bob/{bobs[-1]}" in listed  # b00000: public


def _public_reader(page: str) -> tuple[list[str], str | None]:
    section = _section(page, "public-trackers")
    nav = page[page.index("</section>", page.index('id="public-trackers"')) :]
    return re.findall(r'href="/(~[a-z]+/[a-z0-9]+)"', section), _link(_NEXT, nav)


def test_the_older_link_keeps_the_public_page(app, user_client, user, bob):
    per_page = _per_page(app).trackers_per_page
    _trackers(app, user, per_page + 1, "a")
    _trackers(app, bob, 3 * per_page + 3, "x")
    page = user_client.get("/?page=2").get_data(as_text=True)
    older = _link(_NEXT, _section(page, "your-trackers"))
    assert older is not None and "page=2" in older
    later = user_client.get(older).get_data(as_text=True)
    assert 'aria-current="page">2<' in later
    assert user_client.get("/?cursor=forged").status_code == 400


def _tickets(app: Any, tracker: Tracker, submitter: User, count: int) -> None:
    rows = [
        {
            "tracker_id": tracker.id,
            "number": n,
            "title": f"Ticket {n}",
            "submitter_id": submitter.id,
            "status": TicketStatus.open if n % 2 else TicketStatus.resolved,
        }
        for n in range(1, count + 1)
    ]
    with _db(app).transaction() as session:
        session.execute(insert(Ticket), rows)
        stmt = update(Tracker).where(Tracker.id == tracker.id).values(ticket_count=count)
        session.execute(stmt)


def test_a_trackers_tickets_come_a_page_at_a_time(app, client, make, user, bob):
    per_page = _per_page(app).tickets_per_page
    tracker = make.tracker(user, "big")
    _tickets(app, tracker, bob, TICKETS)
    secret = make.tracker(bob, "big", visibility=Visibility.private)
    _tickets(app, secret, bob, 10)

    def read(page: str) -> tuple[list[str], str | None]:
        section = _section(page, "tickets")
        assert "/~bob/" not in section
        numbers = re.findall(r'href="/~alice/big/(\d+)"', section)
        nav = page[page.index("</section>", page.index('id="tickets"')) :]
        return numbers, _link(_NEXT, nav)

    pages = list(_walk(client, "/~alice/big?status=all", read))
    assert all(0 < len(items) <= per_page for items in pages)
    assert [int(n) for items in pages for n in items] == list(range(TICKETS, 0, -1))
    opened = [int(n) for items in _walk(client, "/~alice/big", read) for n in items]
    assert opened == list(range(TICKETS - 1, 0, -2))
    assert client.get("/~bob/big").status_code == 404


def _comments(app: Any, ticket: Ticket, authors: list[User], count: int) -> None:
    rows = [
        {"ticket_id": ticket.id, "author_id": authors[i % 2].id, "text": f"Comment {i}"}
        for i in range(1, count + 1)
    ]
    with _db(app).transaction() as session:
        session.execute(insert(Comment), rows)


def _comment_numbers(page: str) -> list[int]:
    section = _section(page, "comments")
    return [int(n) for n in re.findall(r"<p>Comment (\d+)</p>", section)]


def test_a_tickets_page_shows_its_newest_comments_and_links_to_older_ones(
    app, client, make, user, bob, tracker, ticket
):
    _comments(app, ticket, [user, bob], COMMENTS)
    first = client.get("/~alice/bugs/1").get_data(as_text=True)
    newest = _comment_numbers(first)
    assert newest == list(range(COMMENTS - COMMENTS_PER_PAGE + 1, COMMENTS + 1))
    assert "Newest comments" not in first

    def read(page: str) -> tuple[list[str], str | None]:
        return [str(n) for n in _comment_numbers(page)], _link(_OLDER, _section(page, "comments"))

    pages = list(_walk(client, "/~alice/bugs/1", read))
    assert all(0 < len(items) <= COMMENTS_PER_PAGE for items in pages)
    # Each page reads oldest first; the pages go back in time.
    read_in_order = [int(n) for items in reversed(pages) for n in items]
    assert read_in_order == list(range(1, COMMENTS + 1))
    last = client.get(_link(_OLDER, _section(first, "comments")) or "").get_data(as_text=True)
    assert 'href="/~alice/bugs/1#comments" rel="prev">Newest comments' in last
    assert client.get("/~alice/bugs/1?cursor=forged").status_code == 400


def test_a_comment_lands_on_the_first_page(app, user_client, csrf, make, user, tracker, ticket):
    _comments(app, ticket, [user, user], COMMENTS_PER_PAGE * 3)
    response = csrf.post(
        user_client, "/~alice/bugs/1/comment", {"text": "Comment 999999"}, page="/~alice/bugs/1"
    )
    assert response.headers["Location"] == "/~alice/bugs/1#comments"
    assert _comment_numbers(user_client.get("/~alice/bugs/1").get_data(as_text=True))[-1] == 999999
    # A comment refused is its page again: the newest comments with the form.
    refused = csrf.post(
        user_client, "/~alice/bugs/1/comment?cursor=x", {"text": " "}, page="/~alice/bugs/1"
    )
    assert refused.status_code == 400
    numbers = _comment_numbers(refused.get_data(as_text=True))
    assert len(numbers) == COMMENTS_PER_PAGE and numbers[-1] == 999999


def _api_walk(client: Any, url: str, headers: dict[str, str], limit: int) -> list[list[Any]]:
    pages = []
    cursor = None
    while True:
        query = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        response = client.get(url, query_string=query, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        pages.append(body["results"])
        cursor = body["next"]
        if cursor is None:
            return pages


def test_the_api_lists_come_a_page_at_a_time(app, client, auth, make, user, bob, tracker, ticket):
    _trackers(app, user, TRACKERS, "a")
    _trackers(app, bob, 30, "x")
    _tickets(app, make.tracker(user, "big"), bob, TICKETS)
    _comments(app, ticket, [user, bob], COMMENTS)
    headers = auth()
    for url, size, key in [
        ("/api/trackers", TRACKERS + 2, "id"),
        ("/api/trackers/big/tickets", TICKETS, "number"),
        ("/api/trackers/bugs/tickets/1/comments", COMMENTS, "id"),
    ]:
        unasked = client.get(url, headers=headers).get_json()
        assert len(unasked["results"]) == 25 and unasked["next"]
        assert (
            client.get(url, query_string={"limit": MAX_LIMIT + 1}, headers=headers).status_code
            == 400
        )
        pages = _api_walk(client, url, headers, MAX_LIMIT)
        assert all(0 < len(items) <= MAX_LIMIT for items in pages)
        keys = [item[key] for items in pages for item in items]
        assert len(keys) == size == len(set(keys)), url
        assert keys == sorted(keys, reverse="comments" not in url), url
    names = {t["name"] for items in _api_walk(client, "/api/trackers", headers, 100) for t in items}
    assert not any(name.startswith("x") for name in names)  # bob's, public or not, are his
