"""What todo's README promises, held to the service as an outsider meets it: a person in
a browser, an API client with a token of some scopes, a second user, a suspended
account, an operator setting the config keys. On SQLite and PostgreSQL.

A browser sends every line break of a textarea as CRLF (the HTML standard's form
encoding), whatever the person typed: the forms here are posted that way.
"""

from __future__ import annotations

import importlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from todo.models import Comment, Ticket, Tracker

from srcore.db import UserType
from srcore.testing import TEST_ISSUER, create_user, log_in_client
from srcore.webhooks.models import OutboxRow

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def as_browser_sends(text: str) -> str:
    """*text* as a browser's form carries a textarea's value: each line break a CRLF."""
    return text.replace("\n", "\r\n")


def state(app: Any) -> list[tuple[Any, ...]]:
    """Every tracker, ticket and comment as stored, and every event."""
    with app.extensions["srcore"].db.transaction() as session:
        rows: list[tuple[Any, ...]] = [
            (t.id, t.owner_id, t.name, t.description, t.visibility)
            for t in session.scalars(select(Tracker).order_by(Tracker.id))
        ]
        rows += [
            (t.id, t.number, t.title, t.description, t.status, t.resolution)
            for t in session.scalars(select(Ticket).order_by(Ticket.id))
        ]
        rows += [(c.id, c.text) for c in session.scalars(select(Comment).order_by(Comment.id))]
        rows += [(r.event, r.resource) for r in session.scalars(select(OutboxRow))]
    return rows


def events(app: Any) -> list[str]:
    with app.extensions["srcore"].db.transaction() as session:
        return [r.event for r in session.scalars(select(OutboxRow).order_by(OutboxRow.id))]


def post_form(client: Any, path: str, data: dict[str, str], page: str) -> Any:
    match = _CSRF.search(client.get(page).get_data(as_text=True))
    assert match, f"no CSRF token on {page}"
    return client.post(path, data={**data, "csrf_token": match.group(1)})


def with_config(app: Any, signing_key: Any, tmp_path: Path, lines: str) -> Any:
    """Todo again on *app*'s migrated database, with *lines* added to its section."""
    from joserfc.jwk import KeySet

    from srcore.auth.tokens import StaticKeySource, TokenVerifier
    from srcore.outbound.targets import set_resolver

    st = app.extensions["srcore"]
    text = Path(st.config.path).read_text(encoding="utf-8")
    path = tmp_path / "config.ini"
    path.write_text(text.replace("[todo]\n", "[todo]\n" + lines, 1), encoding="utf-8")
    verifier = TokenVerifier(
        keys=StaticKeySource(KeySet([signing_key])), issuer=TEST_ISSUER, audience="todo"
    )
    built = importlib.import_module("todo").create_app(config=path, token_verifier=verifier)
    built.config["TESTING"] = True
    set_resolver(built, lambda host, port, timeout: None)
    return built


# -- forms as a browser sends them ---------------------------------------------------------------


def test_saving_forms_unchanged_changes_nothing_and_sends_nothing(
    app: Any, client: Any, user_client: Any, auth: Any, tracker: Tracker, ticket: Ticket
) -> None:
    """A tracker and a ticket whose descriptions were written through the API, their
    settings and edit pages saved as they are: each was stored again with CRLF line
    breaks and sent a tracker:updated and a ticket:updated ("a ticket's title,
    description or status changed") for a change nobody made."""
    headers = auth()
    described = client.patch(
        "/api/trackers/bugs", json={"description": "Line one.\n\nLine two."}, headers=headers
    )
    assert described.status_code == 200
    before = state(app)
    settings = "/~alice/bugs/settings"
    fields = {
        "name": "bugs",
        "description": as_browser_sends("Line one.\n\nLine two."),
        "visibility": "public",
    }
    assert post_form(user_client, settings, fields, page=settings).status_code == 302
    edit = "/~alice/bugs/1/edit"
    page = user_client.get(edit).get_data(as_text=True)
    was = re.search(r'name="was" value="([^"]*)"', page)
    ticket_fields = {
        "title": "It crashes",
        "description": as_browser_sends("Steps:\n\n1. *open* it"),
        **({"was": was.group(1)} if was else {}),
    }
    assert post_form(user_client, edit, ticket_fields, page=edit).status_code == 302
    assert state(app) == before
    shown = client.get("/api/trackers/bugs/tickets/1", headers=headers).get_json()
    assert shown["description"] == "Steps:\n\n1. *open* it"


def test_a_line_break_typed_in_a_browser_counts_as_one_character(
    app: Any, client: Any, user_client: Any, auth: Any, tracker: Tracker, ticket: Ticket
) -> None:
    """A comment or a description of 16384 characters is accepted from the form as from
    the API, however many line breaks it has; one more is refused by both."""
    limit = "ab\n" * (16384 // 3) + "x" * (16384 % 3)
    assert len(limit) == 16384
    page = "/~alice/bugs/1"
    said = post_form(user_client, "/~alice/bugs/1/comment", {"text": as_browser_sends(limit)}, page)
    assert said.status_code == 302, said.get_data(as_text=True)[:300]
    comments = client.get("/api/trackers/bugs/tickets/1/comments", headers=auth()).get_json()
    assert [c["text"] for c in comments["results"]] == [limit]
    submitted = post_form(
        user_client,
        "/~alice/bugs/new",
        {"title": "Long", "description": as_browser_sends(limit)},
        "/~alice/bugs/new",
    )
    assert submitted.status_code == 302, submitted.get_data(as_text=True)[:300]
    before = state(app)
    longer = post_form(
        user_client, "/~alice/bugs/1/comment", {"text": as_browser_sends(limit + "y")}, page
    )
    assert longer.status_code == 400
    assert "Must be at most 16384 characters." in longer.get_data(as_text=True)
    refused = client.post(
        "/api/trackers/bugs/tickets/1/comments", json={"text": limit + "y"}, headers=auth()
    )
    assert refused.status_code == 400
    assert state(app) == before


# -- limits, at and one past -----------------------------------------------------------------


LIMITS = [
    ("/api/trackers", {"name": "a" * 64}, {"name": "a" * 65}, "name"),
    (
        "/api/trackers",
        {"name": "d1", "description": "d" * 16384},
        {"name": "d2", "description": "d" * 16385},
        "description",
    ),
    ("/api/trackers/bugs/tickets", {"title": "t" * 256}, {"title": "t" * 257}, "title"),
    (
        "/api/trackers/bugs/tickets",
        {"title": "t", "description": "d" * 16384},
        {"title": "t", "description": "d" * 16385},
        "description",
    ),
    ("/api/trackers/bugs/tickets/1/comments", {"text": "c" * 16384}, {"text": "c" * 16385}, "text"),
]


@pytest.mark.parametrize(("path", "fits", "past", "field"), LIMITS)
def test_each_limit_takes_its_length_and_refuses_one_more(
    app: Any,
    client: Any,
    auth: Any,
    tracker: Tracker,
    ticket: Ticket,
    path: str,
    fits: dict[str, str],
    past: dict[str, str],
    field: str,
) -> None:
    assert client.post(path, json=fits, headers=auth()).status_code == 201
    before = state(app)
    refused = client.post(path, json=past, headers=auth())
    assert refused.status_code == 400
    (error,) = refused.get_json()["errors"]
    assert error["field"] == field and "at most" in error["reason"]
    assert state(app) == before


def test_tickets_per_page_is_the_length_of_a_trackers_page(
    app: Any, make: Any, user: Any, tracker: Tracker, srcore_signing_key: Any, tmp_path: Path
) -> None:
    for n in range(1, 4):
        make.ticket(tracker, user, f"Ticket number {n}x")
    todo = with_config(app, srcore_signing_key, tmp_path, "tickets-per-page = 2\n")
    try:
        client = todo.test_client()
        first = client.get("/~alice/bugs").get_data(as_text=True)
        second = client.get("/~alice/bugs?page=2").get_data(as_text=True)
        assert "number 3x" in first and "number 2x" in first and "number 1x" not in first
        assert "number 1x" in second and "number 2x" not in second
    finally:
        todo.extensions["srcore"].db.dispose()


@pytest.mark.parametrize(
    "path", ["/api/trackers", "/api/trackers/bugs/tickets", "/api/trackers/bugs/tickets/1/comments"]
)
def test_every_list_takes_a_limit_of_1_to_100(
    client: Any, auth: Any, tracker: Tracker, ticket: Ticket, path: str
) -> None:
    for limit in ("1", "100"):
        listed = client.get(f"{path}?limit={limit}", headers=auth())
        assert listed.status_code == 200
        assert set(listed.get_json()) == {"results", "next"}
    for limit in ("0", "101", "-1", "1e2"):
        refused = client.get(f"{path}?limit={limit}", headers=auth())
        assert refused.status_code == 400
        assert refused.get_json()["errors"][0]["field"] == "limit"


# -- hostile bytes ------------------------------------------------------------------------------


HOSTILE = [
    ("/api/trackers", '{"name": "ok\\u0000"}', "name"),
    ("/api/trackers", '{"name": "ok", "description": "a\\u0000b"}', "description"),
    ("/api/trackers", '{"name": "ok", "visibility": "public\\u0000"}', "visibility"),
    ("/api/trackers", '{"name": "ok\\u202e"}', "name"),
    ("/api/trackers", '{"name": "\\ud800"}', None),
    ("/api/trackers/bugs/tickets", '{"title": "invoice\\u202efdp.exe"}', "title"),
    ("/api/trackers/bugs/tickets", '{"title": "a\\u0000"}', "title"),
    ("/api/trackers/bugs/tickets", '{"title": "ok", "description": "\\udc00"}', None),
    ("/api/trackers/bugs/tickets/1/comments", '{"text": "a\\u0000"}', "text"),
    ("/api/trackers/bugs/tickets/1/comments", '{"text": "a\\ud83d"}', None),
    ("/api/trackers/bugs/tickets/1/comments", '{"\\ud800": 1, "text": "x"}', None),
]


@pytest.mark.parametrize(("path", "body", "field"), HOSTILE)
def test_hostile_bytes_in_any_field_are_a_400_naming_it(
    app: Any, client: Any, auth: Any, tracker: Tracker, ticket: Ticket, path: str, body: str, field
) -> None:
    before = state(app)
    response = client.post(
        path, data=body.encode(), content_type="application/json", headers=auth()
    )
    assert response.status_code == 400, response.get_data()
    (error,) = response.get_json()["errors"]
    assert error.get("field") == field, error
    assert state(app) == before


def test_written_text_keeps_its_bidirectional_marks(
    client: Any, auth: Any, tracker: Tracker, ticket: Ticket
) -> None:
    text = "\u05e9\u05dc\u05d5\u05dd \u202eevil\u202c \u200f"
    said = client.post("/api/trackers/bugs/tickets/1/comments", json={"text": text}, headers=auth())
    assert said.status_code == 201
    assert said.get_json()["text"] == text


def test_ten_megabyte_bodies_are_a_400_and_larger_ones_a_413(
    app: Any, client: Any, user_client: Any, auth: Any, tracker: Tracker, ticket: Ticket
) -> None:
    before = state(app)
    ten = json.dumps({"title": "x", "description": "d" * 10_000_000})
    api = client.post(
        "/api/trackers/bugs/tickets", data=ten, content_type="application/json", headers=auth()
    )
    assert api.status_code == 400
    assert api.get_json()["errors"][0]["field"] == "description"
    page = post_form(
        user_client, "/~alice/bugs/1/comment", {"text": "c" * 10_000_000}, "/~alice/bugs/1"
    )
    assert page.status_code == 400
    past = b'{"text": "' + b"c" * (17 * 1024 * 1024) + b'"}'
    too_large = client.post(
        "/api/trackers/bugs/tickets/1/comments",
        data=past,
        content_type="application/json",
        headers=auth(),
    )
    assert too_large.status_code == 413
    assert state(app) == before


# -- who sees and changes what -----------------------------------------------------------------


API_ROUTES = [
    ("GET", "/api/trackers/bugs"),
    ("PATCH", "/api/trackers/bugs"),
    ("DELETE", "/api/trackers/bugs"),
    ("GET", "/api/trackers/bugs/tickets"),
    ("POST", "/api/trackers/bugs/tickets"),
    ("GET", "/api/trackers/bugs/tickets/1"),
    ("PATCH", "/api/trackers/bugs/tickets/1"),
    ("GET", "/api/trackers/bugs/tickets/1/comments"),
    ("POST", "/api/trackers/bugs/tickets/1/comments"),
]
BODY = {"title": "bob was here", "text": "bob was here", "status": "resolved"}


def test_a_second_users_token_finds_none_of_alices_trackers(
    app: Any, client: Any, auth: Any, bob: Any, tracker: Tracker, ticket: Ticket
) -> None:
    """ "The trackers are the token user's own": alice's public tracker is a 404 to bob's
    token on every route, as one that does not exist, and his list holds only his."""
    before = state(app)
    for method, path in API_ROUTES:
        answer = client.open(path, method=method, json=BODY, headers=auth(who=bob))
        assert answer.status_code == 404, (method, path, answer.status_code)
        missing = client.open(
            path.replace("bugs", "nothing"), method=method, json=BODY, headers=auth(who=bob)
        )
        assert answer.get_json() == missing.get_json(), (method, path)
    assert client.get("/api/trackers", headers=auth(who=bob)).get_json() == {
        "results": [],
        "next": None,
    }
    assert state(app) == before


def test_missing_tokens_and_scopes_and_inactive_accounts_change_nothing(
    app: Any, client: Any, auth: Any, tracker: Tracker, ticket: Ticket
) -> None:
    before = state(app)
    suspended = create_user(app, "sus", user_type=UserType.suspended)
    for method, path in [*API_ROUTES, ("GET", "/api/trackers"), ("POST", "/api/trackers")]:
        kind = "tickets" if "/tickets" in path else "trackers"
        assert client.open(path, method=method, json=BODY).status_code == 401, (method, path)
        other = auth("todo/trackers:RW" if kind == "tickets" else "todo/tickets:RW")
        assert client.open(path, method=method, json=BODY, headers=other).status_code == 403
        if method != "GET":
            read_only = auth(f"todo/{kind}:RO")
            answer = client.open(path, method=method, json=BODY, headers=read_only)
            assert answer.status_code == 403, (method, path)
        answer = client.open(path, method=method, json=BODY, headers=auth(who=suspended))
        assert answer.status_code == 403, (method, path, answer.status_code)
    browser = log_in_client(app.test_client(), suspended)
    for path in ("/create", "/~alice/bugs/new", "/~alice/bugs/1/edit"):
        assert browser.get(path).status_code == 403, path
    assert state(app) == before


POST_ROUTES = [
    "/create",
    "/~alice/bugs/new",
    "/~alice/bugs/settings",
    "/~alice/bugs/delete",
    "/~alice/bugs/1/edit",
    "/~alice/bugs/1/comment",
    "/~alice/bugs/1/status",
    "/api/trackers",
    "/api/trackers/bugs/tickets",
    "/api/trackers/bugs/tickets/1/comments",
]


def test_head_and_options_on_every_post_route_change_nothing(
    app: Any, user_client: Any, auth: Any, tracker: Tracker, ticket: Ticket
) -> None:
    before = state(app)
    form = {"name": "forged", "title": "forged", "text": "forged", "confirm": "bugs"}
    for path in POST_ROUTES:
        for method in ("HEAD", "OPTIONS"):
            answer = user_client.open(
                f"{path}?status=resolved&text=forged", method=method, data=form, headers=auth()
            )
            assert answer.status_code in (200, 405), (method, path, answer.status_code)
            assert answer.get_data() == b"", (method, path)
            if method == "OPTIONS":
                assert "POST" in answer.headers["Allow"], path
    assert state(app) == before


def test_bob_reaches_alices_tickets_only_as_the_readme_says(
    app: Any, make: Any, user: Any, bob: Any, bob_client: Any
) -> None:
    """Bob comments on her public and unlisted trackers; he neither edits, resolves nor
    reaches the settings of her ticket (403 where he can see the tracker), and her private
    tracker is a 404 at every address, as a tracker that does not exist."""
    from todo.models import Visibility

    for visibility in (Visibility.public, Visibility.unlisted, Visibility.private):
        tracker = make.tracker(user, visibility.value, visibility=visibility)
        make.ticket(tracker, user)
    before = state(app)
    for name, seen in (("public", True), ("unlisted", True), ("private", False)):
        base = f"/~alice/{name}"
        for path in (base, f"{base}/1", f"{base}/new"):
            assert bob_client.get(path).status_code == (200 if seen else 404), path
        refused = 403 if seen else 404
        for path, data in (
            (f"{base}/1/edit", {"title": "bob's"}),
            (f"{base}/1/status", {"status": "resolved"}),
            (f"{base}/settings", {"name": "bobs"}),
            (f"{base}/delete", {"confirm": name}),
        ):
            answer = post_form(bob_client, path, data, page="/create")
            assert answer.status_code == refused, (path, answer.status_code)
        comment = post_form(bob_client, f"{base}/1/comment", {"text": "hi"}, page="/create")
        assert comment.status_code == (302 if seen else 404), name
    after = state(app)
    added = [row for row in after if row not in before]
    assert [row for row in added if len(row) == 2 and row[1] == "hi"] == added[:2]
    assert len([row for row in added if row[0] == "comment:created"]) == 2
