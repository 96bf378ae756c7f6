"""Paste: the manifest, the pages and their form, the API with its scopes, the event."""

from __future__ import annotations

import importlib.resources
import json
from pathlib import Path

import pytest
from paste import logic
from paste.models import Base, Format, Paste, Visibility
from sqlalchemy import select

from srcore import migrate
from srcore.manifest import load_manifest
from srcore.webhooks.models import OutboxRow, Subscription

VERSIONS = Path(str(importlib.resources.files("paste"))) / "migrations" / "versions"


def pastes(app):
    with app.extensions["srcore"].db.transaction() as session:
        return list(session.scalars(select(Paste).order_by(Paste.id)))


def events(app):
    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id))
        return [(r.event, r.resource, json.loads(r.payload)) for r in rows]


def add(app, owner, text="hello", **values):
    with app.extensions["srcore"].db.transaction() as session:
        paste = Paste(owner_id=owner.id, short_id=logic.new_short_id(), text=text, **values)
        session.add(paste)
    return paste


@pytest.fixture
def auth(make_token, user):
    def headers(scopes="paste/pastes:RW", who=None):
        return {"Authorization": f"Bearer {make_token(scopes, user=who or user)}"}

    return headers


# -- the package ---------------------------------------------------------------------------


def test_manifest():
    manifest = load_manifest("paste")
    assert manifest.id == "paste"
    assert [s.name for s in manifest.scopes] == ["pastes"]
    assert [(e.name, e.scope) for e in manifest.events] == [
        ("paste:created", "pastes"),
        ("paste:updated", "pastes"),
        ("paste:deleted", "pastes"),
    ]


def test_migrations_match_the_models(app, srcore_database):
    target = migrate.MigrationTarget(
        service_id="paste",
        database_url=srcore_database.url,
        metadata=Base.metadata,
        versions_dir=VERSIONS,
    )
    assert migrate.pending_changes(target) == []
    assert migrate.current(target) == migrate.heads(target)


def test_short_ids_are_random_and_url_safe():
    ids = {logic.new_short_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(logic.SHORT_ID.fullmatch(i) for i in ids)


# -- pages ---------------------------------------------------------------------------------


def test_front_page_lists_public_pastes_only(client, app, user):
    add(app, user, title="Shown to all")
    add(app, user, title="Secret link", visibility=Visibility.unlisted)
    page = client.get("/").get_data(as_text=True)
    assert "Shown to all" in page
    assert "Secret link" not in page
    assert client.get("/?page=nope").status_code == 400


def test_creating_a_paste_needs_a_logged_in_user(app, client):
    # Sent to meta to log in (302); the test network has no meta, so it answers 503.
    assert client.get("/new").status_code in (302, 503)
    assert client.get("/mine").status_code in (302, 503)
    assert pastes(app) == []


def test_new_paste_redirects_to_its_link(app, user_client, user, csrf_token):
    response = user_client.post(
        "/new",
        data={
            "title": "Notes",
            "text": "# Hello\n\n*there*",
            "format": "markdown",
            "visibility": "unlisted",
            "csrf_token": csrf_token(user_client, "/new"),
        },
    )
    assert response.status_code == 302
    (paste,) = pastes(app)
    assert response.headers["Location"] == f"/p/{paste.short_id}"
    assert (paste.title, paste.format, paste.visibility) == (
        "Notes",
        Format.markdown,
        Visibility.unlisted,
    )
    page = user_client.get(f"/p/{paste.short_id}").get_data(as_text=True)
    assert "<em>there</em>" in page
    assert "Paste created. Share its link." in page
    mine = user_client.get("/mine").get_data(as_text=True)
    assert f"/p/{paste.short_id}" in mine


def test_form_shows_the_errors_with_status_400(app, user_client, csrf_token):
    token = csrf_token(user_client, "/new")
    for data in (
        {"text": ""},
        {"text": "   \n  "},
        {"text": "ok", "format": "html"},
        {"text": "ok", "visibility": "private"},
        {"text": "ok", "title": "x" * 257},
    ):
        response = user_client.post("/new", data={**data, "csrf_token": token})
        assert response.status_code == 400, data
        assert 'aria-invalid="true"' in response.get_data(as_text=True)
    assert pastes(app) == []
    assert events(app) == []


def test_form_needs_the_csrf_token(app, user_client):
    assert user_client.post("/new", data={"text": "Sneaky"}).status_code == 400
    assert pastes(app) == []


def test_plain_text_is_shown_as_it_is(app, client, user):
    paste = add(app, user, text="<script>alert(1)</script>\n  indented *not em*")
    page = client.get(f"/p/{paste.short_id}").get_data(as_text=True)
    assert '<span class="line">&lt;script&gt;alert(1)&lt;/script&gt;\n</span>' in page
    assert '<span class="line">  indented *not em*\n</span>' in page
    assert "<script>alert" not in page


def test_markdown_is_rendered_and_sanitized(app, client, user):
    paste = add(app, user, text="**bold** <script>alert(1)</script>", format=Format.markdown)
    page = client.get(f"/p/{paste.short_id}").get_data(as_text=True)
    assert "<strong>bold</strong>" in page
    assert "<script>alert" not in page


def test_unlisted_paste_is_reachable_by_its_link_and_raw(app, client, user):
    paste = add(app, user, text="line\n", visibility=Visibility.unlisted)
    assert client.get(f"/p/{paste.short_id}").status_code == 200
    raw = client.get(f"/p/{paste.short_id}/raw")
    assert raw.status_code == 200
    assert raw.mimetype == "text/plain"
    assert raw.get_data(as_text=True) == "line\n"


@pytest.mark.parametrize("short_id", ["abcdefghjk", "nope", "ABCDEFGHJK", "a" * 300])
def test_unknown_or_malformed_ids_are_404(client, app, short_id):
    assert client.get(f"/p/{short_id}").status_code == 404
    assert client.get(f"/p/{short_id}/raw").status_code == 404


# -- API -----------------------------------------------------------------------------------


def test_api_creates_lists_and_gets_pastes(client, app, user, auth):
    created = client.post(
        "/api/pastes",
        json={"text": "print(1)", "title": "Code", "visibility": "unlisted"},
        headers=auth(),
    )
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert (body["title"], body["format"], body["visibility"]) == ("Code", "plain", "unlisted")
    assert body["url"].endswith(f"/p/{body['id']}")
    assert created.headers["Location"] == f"/api/pastes/{body['id']}"
    listed = client.get("/api/pastes", headers=auth("paste/pastes:RO")).get_json()
    assert [p["id"] for p in listed["results"]] == [body["id"]]
    assert listed["next"] is None
    got = client.get(f"/api/pastes/{body['id']}", headers=auth("paste/pastes:RO"))
    assert got.get_json()["text"] == "print(1)"


def test_api_lists_only_the_callers_pastes_and_pages_with_a_cursor(client, app, user, auth):
    from srcore.testing import create_user

    bob = create_user(app, "bob")
    add(app, bob, title="bob's")
    for i in range(3):
        add(app, user, title=f"mine {i}")
    first = client.get("/api/pastes?limit=2", headers=auth()).get_json()
    assert [p["title"] for p in first["results"]] == ["mine 2", "mine 1"]
    rest = client.get(f"/api/pastes?limit=2&cursor={first['next']}", headers=auth()).get_json()
    assert [p["title"] for p in rest["results"]] == ["mine 0"]
    assert client.get("/api/pastes?cursor=junk", headers=auth()).status_code == 400


def test_api_rejects_invalid_input_with_the_standard_body(client, auth):
    response = client.post("/api/pastes", json={"text": "", "format": "pdf"}, headers=auth())
    assert response.status_code == 400
    fields = {e["field"] for e in response.get_json()["errors"]}
    assert fields == {"text", "format"}


def test_api_needs_a_token_with_the_scope(client, app, user, auth):
    assert client.get("/api/pastes").status_code == 401
    assert client.get("/api/pastes", headers=auth("paste/pastes:RO")).status_code == 200
    response = client.post("/api/pastes", json={"text": "x"}, headers=auth("paste/pastes:RO"))
    assert response.status_code == 403
    assert client.get("/api/pastes", headers=auth("todo/tickets:RW")).status_code == 403
    assert pastes(app) == []


def test_api_get_of_an_unknown_paste_is_404(client, auth):
    assert client.get("/api/pastes/abcdefghjk", headers=auth("paste/pastes:RO")).status_code == 404
    assert client.get("/api/pastes/x", headers=auth("paste/pastes:RO")).status_code == 404


# -- webhooks ------------------------------------------------------------------------------


def test_creating_a_paste_writes_its_event_in_the_same_transaction(app, client, user, auth):
    body = client.post("/api/pastes", json={"text": "announced"}, headers=auth()).get_json()
    ((event, resource, payload),) = events(app)
    assert (event, resource) == ("paste:created", f"paste:{body['id']}")
    assert payload["text"] == "announced"
    assert payload["owner"]["id"] == user.id


def test_a_failed_paste_emits_nothing(app, client, auth):
    client.post("/api/pastes", json={"text": ""}, headers=auth())
    assert events(app) == []


def _subscribe(app, owner_id, resource=None):
    from srcore.signatures import generate_secret

    with app.extensions["srcore"].db.transaction() as session:
        sub = Subscription(
            owner_id=owner_id,
            owner_client=None if owner_id else "builds",
            url="https://hooks.invalid/x",
            events="paste:created",
            scopes="paste/pastes:RO",
            secret=generate_secret(),
            resource=resource,
        )
        session.add(sub)
        session.flush()
        return sub.id


def test_unlisted_pastes_events_reach_their_owner_only(app, client, user, auth):
    from srcore.testing import create_user, deliver_pending

    bob = create_user(app, "bob")
    mine, bobs, service = _subscribe(app, user.id), _subscribe(app, bob.id), _subscribe(app, None)
    for visibility in ("unlisted", "public"):
        body = {"text": visibility, "visibility": visibility}
        assert client.post("/api/pastes", json=body, headers=auth()).status_code == 201
    got = deliver_pending(app)
    assert got[mine] == ["paste:created", "paste:created"]
    assert got[bobs] == got[service] == ["paste:created"]  # the public one only


@pytest.mark.parametrize(
    ("visibility", "subscriber", "receives"),
    [("public", 2, True), ("public", None, True), ("unlisted", 1, True), ("unlisted", 2, False)],
)
def test_a_subscription_may_follow_a_public_paste_or_ones_own(
    app, user, visibility, subscriber, receives
):
    from srcore.testing import create_user

    bob = create_user(app, "bob")
    paste = add(app, user, visibility=Visibility(visibility))
    owner = {1: user.id, 2: bob.id, None: None}[subscriber]
    subscription = Subscription(owner_id=owner, url="https://h.example", events="")
    probe = OutboxRow(event="paste:created", resource=f"paste:{paste.short_id}")
    missing = OutboxRow(event="paste:created", resource="paste:nothere12")
    with app.app_context():  # a probe, not yet in any session: read through the request's
        assert logic.can_receive(subscription, probe) is receives
        assert not logic.can_receive(subscription, missing)


def test_current_breadcrumb_is_marked_and_not_a_link(app, client, user):
    paste = add(app, user, text="hello")
    page = client.get(f"/p/{paste.short_id}").get_data(as_text=True)
    assert f'/ <span aria-current="page">{paste.short_id}</span>' in page
