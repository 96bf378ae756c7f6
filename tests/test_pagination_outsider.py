"""Pagination as an outsider drives it, through todo's and paste's listings and the
webhook API: forged, truncated and tampered cursors, base64 garbage, cursors of another
listing or another user, odd limits and pages, rows deleted between two pages.

Each is a clear 400 naming the field, or a sane page of the caller's own rows: never a
500, never a row of someone else's.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest

from srcore.outbound.targets import set_resolver
from srcore.testing import create_user, log_in_client
from srcore.webhooks.models import WebhookBase

SCOPES = {
    "todo": "todo/trackers:RW todo/tickets:RW",
    "paste": "paste/pastes:RW",
}
EVENTS = {"todo": ["tracker:created"], "paste": ["paste:created"]}


@pytest.fixture(scope="module", params=["todo", "paste"])
def srcore_service(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


#: Cursors no listing made: garbage, wrong shapes, wrong types, out-of-range numbers.
FORGED = [
    "x",
    "!!!!",
    "====",
    "%00",
    "é",
    "+/+/",
    "a b",
    b64(b"[1"),
    b64(b"[]"),
    b64(b"[1,2]"),
    b64(b'["1"]'),
    b64(b"[1.5]"),
    b64(b"[1e400]"),
    b64(b"[NaN]"),
    b64(b"[true]"),
    b64(b"[null]"),
    b64(b"[[1]]"),
    b64(b'{"id":1}'),
    b64(b"1"),
    b64(b"[9223372036854775808]"),
    b64(b"[-9223372036854775809]"),
    b64(b"[" + b"9" * 500 + b"]"),
    b64(b"\xff\xfe[1]"),
    b64(b'["\\ud800"]'),
    b64(b"[" * 700),
]
#: Longer than any cursor a listing makes: refused before decoding.
OVERLONG = ["A" * 1025, b64(b"[" * 1000)]
LIMITS = ["0", "-1", "1e9", "abc", "1000000000", "5.0", "0x10", "\u0661", "9" * 40, "1_0"]


def _clean_tables(app: Any) -> None:
    with app.extensions["srcore"].db.transaction() as session:
        for table in reversed(WebhookBase.metadata.sorted_tables):
            session.execute(table.delete())


@pytest.fixture
def world(app: Any, client: Any, make_token: Any, srcore_service: str) -> Any:
    """alice and bob, each with seven rows of the service's main listing and a webhook."""
    set_resolver(app, lambda host, port, timeout: None)
    alice, bob = create_user(app, "alice"), create_user(app, "bob")
    heads = {
        name: {"Authorization": f"Bearer {make_token(SCOPES[srcore_service], user=who)}"}
        for name, who in (("alice", alice), ("bob", bob))
    }
    made: dict[str, list[Any]] = {"alice": [], "bob": []}
    for i in range(7):
        for name in ("alice", "bob"):
            if srcore_service == "todo":
                body: dict[str, Any] = {"name": f"{name}{i}"}
                answer = client.post("/api/trackers", json=body, headers=heads[name])
            else:
                body = {"text": f"{name} paste {i}", "visibility": "unlisted"}
                answer = client.post("/api/pastes", json=body, headers=heads[name])
            assert answer.status_code == 201, answer.get_data(as_text=True)
            made[name].append(answer.get_json())
    hooks = {}
    for name in ("alice", "bob"):
        sub = {"url": f"https://{name}.example.invalid/hook", "events": EVENTS[srcore_service]}
        answer = client.post("/api/webhooks", json=sub, headers=heads[name])
        assert answer.status_code == 201, answer.get_data(as_text=True)
        hooks[name] = answer.get_json()["id"]
    if srcore_service == "todo":
        ticket = {"title": "It breaks"}
        opened = client.post("/api/trackers/alice0/tickets", json=ticket, headers=heads["alice"])
        assert opened.status_code == 201, opened.get_data(as_text=True)
    yield {
        "service": srcore_service,
        "users": (alice, bob),
        "heads": heads,
        "made": made,
        "hooks": hooks,
    }
    _clean_tables(app)


def _listings(world: Any) -> list[str]:
    """The cursor-paged API listings of alice's."""
    hook = world["hooks"]["alice"]
    common = ["/api/webhooks", f"/api/webhooks/{hook}/deliveries"]
    if world["service"] == "todo":
        return [
            "/api/trackers",
            "/api/trackers/alice0/tickets",
            "/api/trackers/alice0/tickets?status=open&search=breaks",
            "/api/trackers/alice0/tickets/1/comments",
            *common,
        ]
    return ["/api/pastes", "/api/pastes?search=paste", *common]


def _get(client: Any, path: str, headers: Any, **query: str) -> Any:
    joiner = "&" if "?" in path else "?"
    return client.get(path + (joiner + urlencode(query) if query else ""), headers=headers)


def _refused(answer: Any, field: str) -> None:
    assert answer.status_code == 400, (answer.status_code, answer.get_data(as_text=True)[:300])
    assert answer.is_json
    errors = answer.get_json()["errors"]
    assert [e.get("field") for e in errors] == [field], errors


def test_forged_and_overlong_cursors_are_400s(client: Any, world: Any) -> None:
    alice = world["heads"]["alice"]
    for path in _listings(world):
        assert _get(client, path, alice).status_code == 200, path
        for cursor in FORGED + OVERLONG:
            _refused(_get(client, path, alice, cursor=cursor), "cursor")
    # Past the main listing's 32-bit key (a delivery log's is 64-bit): no row is there, and
    # PostgreSQL would fail the comparison, so the cursor is refused.
    for cursor in (b64(b"[2147483648]"), b64(b"[-2147483649]")):
        _refused(_get(client, _main(world), alice, cursor=cursor), "cursor")
    for path in _listings(world):
        # Past what an address may hold: refused before anything reads it.
        too_long = _get(client, path, alice, cursor="A" * 5000)
        assert too_long.status_code == 414
        assert too_long.is_json


def test_odd_limits_are_400s_and_repeats_are_refused(client: Any, world: Any) -> None:
    alice = world["heads"]["alice"]
    for path in _listings(world):
        for limit in LIMITS:
            _refused(_get(client, path, alice, limit=limit), "limit")
        joiner = "&" if "?" in path else "?"
        _refused(client.get(f"{path}{joiner}limit=1&limit=2", headers=alice), "limit")
        _refused(client.get(f"{path}{joiner}cursor=WzFd&cursor=WzJd", headers=alice), "cursor")
        # An empty value is no value: the first page.
        assert _get(client, path, alice, limit="", cursor="").status_code == 200


def _walk(
    client: Any,
    path: str,
    headers: Any,
    limit: int,
    between: Callable[[list[Any]], None] | None = None,
) -> list[Any]:
    """The ids of a whole listing, page by page; *between* is called with those seen so
    far before each next page is asked for."""
    seen: list[Any] = []
    cursor = None
    for _ in range(50):
        query = {"limit": str(limit)} | ({"cursor": cursor} if cursor else {})
        answer = _get(client, path, headers, **query)
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body = answer.get_json()
        seen += [item["id"] for item in body["results"]]
        cursor = body["next"]
        if cursor is None:
            return seen
        if between is not None:
            between(seen)
    raise AssertionError("the walk did not end")


def _main(world: Any) -> str:
    return "/api/trackers" if world["service"] == "todo" else "/api/pastes"


def _ids(world: Any, name: str) -> set[Any]:
    return {item["id"] for item in world["made"][name]}


def test_a_walk_sees_each_own_row_once(client: Any, world: Any) -> None:
    seen = _walk(client, _main(world), world["heads"]["alice"], 2)
    assert len(seen) == len(set(seen))
    assert set(seen) == _ids(world, "alice")
    # Newest first: the reverse of the order they were made in.
    assert seen == [item["id"] for item in reversed(world["made"]["alice"])]


def test_another_users_cursor_pages_only_ones_own_rows(client: Any, world: Any) -> None:
    """A cursor names a position, not rows: bob's, or a hand-made one before everything,
    gives alice her own rows after that position and nothing of bob's."""
    path, alice, bob = _main(world), world["heads"]["alice"], world["heads"]["bob"]
    bobs = _get(client, path, bob, limit="2").get_json()
    assert bobs["next"]
    for cursor in (bobs["next"], b64(b"[2147483647]"), b64(b"[0]"), b64(b"[-2147483648]")):
        answer = _get(client, path, alice, cursor=cursor, limit="100")
        assert answer.status_code == 200
        ids = {item["id"] for item in answer.get_json()["results"]}
        assert ids <= _ids(world, "alice"), cursor
        assert not ids & _ids(world, "bob")


def test_another_listings_cursor_stays_in_this_listing(client: Any, world: Any) -> None:
    alice = world["heads"]["alice"]
    hooks = _get(client, "/api/webhooks", alice, limit="1").get_json()
    assert hooks["next"] is None  # one webhook: make a cursor of the main listing instead
    main = _get(client, _main(world), alice, limit="1").get_json()
    for path in _listings(world):
        answer = _get(client, path, alice, cursor=main["next"])
        assert answer.status_code == 200, path
        for item in answer.get_json()["results"]:
            if path == _main(world):
                assert item["id"] in _ids(world, "alice")
            if path == "/api/webhooks":
                assert item["id"] == world["hooks"]["alice"]


def test_a_tampered_cursor_is_refused_or_a_page_of_ones_own(client: Any, world: Any) -> None:
    path, alice = _main(world), world["heads"]["alice"]
    cursor = _get(client, path, alice, limit="3").get_json()["next"]
    variants = {cursor[:-1], cursor[1:], cursor + "A", cursor + "=", cursor[::-1], cursor.upper()}
    variants |= {cursor[:i] + c + cursor[i + 1 :] for i in range(len(cursor)) for c in "A_-0"}
    for variant in sorted(variants):
        answer = _get(client, path, alice, cursor=variant)
        assert answer.status_code in (200, 400), (variant, answer.status_code)
        if answer.status_code == 400:
            _refused(answer, "cursor")
        else:
            ids = {item["id"] for item in answer.get_json()["results"]}
            assert ids <= _ids(world, "alice"), variant


def _delete(app: Any, world: Any, item: Any) -> None:
    """Delete one of the main listing's rows behind the client's back."""
    from sqlalchemy import delete

    if world["service"] == "todo":
        from todo.models import Tracker

        stmt = delete(Tracker).where(Tracker.id == item["id"])
    else:
        from paste.models import Paste

        stmt = delete(Paste).where(Paste.short_id == item["id"])
    with app.extensions["srcore"].db.transaction() as session:
        assert session.execute(stmt).rowcount == 1


def test_rows_deleted_between_pages_neither_repeat_nor_hide_others(
    app: Any, client: Any, world: Any
) -> None:
    """Between two pages the row the cursor names (the last one seen) and the first one
    not yet seen are deleted: the walk goes on after the cursor's position regardless."""
    path, alice = _main(world), world["heads"]["alice"]
    newest_first = list(reversed(world["made"]["alice"]))
    deleted: set[Any] = set()

    def delete_around(seen: list[Any]) -> None:
        at = next(i for i, item in enumerate(newest_first) if item["id"] == seen[-1])
        for item in newest_first[at : at + 2]:
            if item["id"] not in deleted:
                _delete(app, world, item)
                deleted.add(item["id"])

    seen = _walk(client, path, alice, 2, between=delete_around)
    assert len(seen) == len(set(seen))
    assert set(seen) <= _ids(world, "alice")
    # Every row never deleted was seen; the deleted ones are the only gaps.
    assert _ids(world, "alice") - deleted <= set(seen)
    assert deleted


PAGES = ["0", "-1", "abc", "1e9", "9" * 30, "1000001", "1.5", "\u0662"]


def test_numbered_pages_refuse_odd_numbers_and_end_empty(app: Any, client: Any, world: Any) -> None:
    alice = world["users"][0]
    signed_in = log_in_client(app.test_client(), alice)
    pages = ["/"] + (["/~alice/alice0"] if world["service"] == "todo" else ["/mine"])
    for path in pages:
        viewer = signed_in if path != "/" else client
        assert viewer.get(path).status_code == 200, path
        for page in PAGES:
            answer = viewer.get(path, query_string={"page": page})
            assert answer.status_code == 400, (path, page, answer.status_code)
        answer = viewer.get(f"{path}?page=1&page=2")
        assert answer.status_code == 400, path
        beyond = viewer.get(path, query_string={"page": "1000000"})
        assert beyond.status_code == 200, path
        text = beyond.get_data(as_text=True)
        assert not any(f"bob{i}" in text for i in range(7)), path
        assert "It breaks" not in text and "paste 1" not in text, path
