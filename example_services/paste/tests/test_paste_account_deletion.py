"""An account deleted at meta takes its pastes with it (paste's ``on_account_deleted``
hook), driven through srcore's own deletion path (:func:`srcore.auth.deletion.apply_deletions`,
what a ``delete`` event from meta runs): her public and unlisted pastes are gone from the
pages and the API, subscribers hear ``paste:deleted`` as for a deletion by hand, another
person's pastes stay, and someone who takes the freed name finds nothing of hers. A paste
she was making over a real socket as the deletion came does not outlive it either."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import requests
from paste import logic
from paste.models import Paste
from sqlalchemy import select

from srcore.auth.deletion import apply_deletions
from srcore.manifest import load_manifest
from srcore.testing import create_user, deliver_pending, log_in_client
from srcore.webhooks.models import OutboxRow, Subscription

HOOK = "https://hooks.example.org/paste"
EVENTS = [event.name for event in load_manifest("paste").events]


def bearer(make_token: Any, who: Any, scopes: str = "paste/pastes:RW") -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(scopes, user=who)}"}


def new_paste(client: Any, headers: dict[str, str], title: str, visibility: str) -> str:
    body = {"title": title, "text": f"the text of {title}", "visibility": visibility}
    response = client.post("/api/pastes", json=body, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    short_id: str = response.get_json()["id"]
    return short_id


def subscribe(client: Any, headers: dict[str, str], events: list[str]) -> int:
    response = client.post("/api/webhooks", json={"url": HOOK, "events": events}, headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    sub_id: int = response.get_json()["id"]
    return sub_id


def rows(app: Any, stmt: Any) -> list[Any]:
    with app.extensions["srcore"].db.transaction() as session:
        return list(session.execute(stmt).all())


def test_a_deleted_accounts_pastes_go_with_it(
    app: Any, client: Any, user: Any, make_token: Any
) -> None:
    alice, bob = user, create_user(app, "bob")
    as_alice, as_bob = bearer(make_token, alice), bearer(make_token, bob)
    public = new_paste(client, as_alice, "alices public paste", "public")
    unlisted = new_paste(client, as_alice, "alices unlisted paste", "unlisted")
    bobs = new_paste(client, as_bob, "bobs own paste", "public")
    alices_hook = subscribe(client, as_alice, EVENTS)
    bobs_hook = subscribe(client, as_bob, ["paste:deleted"])
    before = deliver_pending(app)
    outbox_before = len(rows(app, select(OutboxRow.id)))
    old_alice = log_in_client(app.test_client(), alice)
    assert old_alice.get(f"/p/{unlisted}").status_code == 200

    assert apply_deletions(app, [alice.id]) == []

    # Subscribers hear of both, as of a deletion by hand: bob of her public paste only,
    # her own subscription is gone with her account (its delivery log too).
    assert alices_hook in before
    got = deliver_pending(app)
    assert got == {bobs_hook: ["paste:deleted"]}, got
    recorded = rows(
        app,
        select(OutboxRow.event, OutboxRow.resource, OutboxRow.visibility, OutboxRow.payload)
        .order_by(OutboxRow.id)
        .offset(outbox_before),
    )
    assert [(e, r, v) for e, r, v, _ in recorded] == [
        ("paste:deleted", f"paste:{public}", "public"),
        ("paste:deleted", f"paste:{unlisted}", "unlisted"),
    ]
    assert [json.loads(p)["id"] for *_, p in recorded] == [public, unlisted]
    owners = rows(app, select(Subscription.owner_id).order_by(Subscription.id))
    assert owners == [(bob.id,)], owners

    # Gone for everyone: pages, raw text, the API, the lists, a search by her name.
    stranger, bob_client = app.test_client(), log_in_client(app.test_client(), bob)
    for who in (stranger, bob_client, old_alice):
        for short_id in (public, unlisted):
            for path in (f"/p/{short_id}", f"/p/{short_id}/raw"):
                assert who.get(path).status_code == 404, path
        for path in ("/", "/?search=owner:alice", f"/?search=owner:~{alice.id}"):
            page = who.get(path).get_data(as_text=True)
            assert "alices" not in page, path
        assert "bobs own paste" in who.get("/").get_data(as_text=True)
        assert who.get(f"/p/{bobs}").status_code == 200
    for short_id in (public, unlisted):
        answer = client.get(f"/api/pastes/{short_id}", headers=as_bob)
        assert answer.status_code == 404, answer.get_data(as_text=True)
    assert client.get(f"/api/pastes/{bobs}", headers=as_bob).status_code == 200
    listed = client.get("/api/pastes", headers=as_bob).get_json()["results"]
    assert [p["id"] for p in listed] == [bobs]
    assert "alices" not in bob_client.get("/mine").get_data(as_text=True)
    left = rows(app, select(Paste.short_id).order_by(Paste.id))
    assert left == [(bobs,)], left

    # Someone else takes the freed name: none of the old account's pastes are theirs.
    carol = create_user(app, "alice")
    as_carol = bearer(make_token, carol)
    mine = log_in_client(app.test_client(), carol).get("/mine")
    assert mine.status_code == 200 and "alices" not in mine.get_data(as_text=True)
    answer = client.get("/api/pastes", headers=as_carol)
    assert answer.status_code == 200 and answer.get_json()["results"] == []
    for short_id in (public, unlisted):
        assert client.get(f"/api/pastes/{short_id}", headers=as_carol).status_code == 404

    # The same deletion heard again (pushed, then pulled) changes nothing more.
    assert apply_deletions(app, [alice.id]) == []
    assert len(rows(app, select(OutboxRow.id))) == outbox_before + 2
    assert rows(app, select(Paste.short_id)) == [(bobs,)]


def test_a_paste_made_while_its_owner_is_deleted_does_not_outlive_the_deletion(
    app: Any, app_url: str, user: Any, make_token: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Her POST /api/pastes was past its token and user checks when the deletion came;
    held there while it is applied, then let go: no paste of hers may be left."""
    checked, go = threading.Event(), threading.Event()
    read_paste = logic.read_paste

    def held(*args: Any, **kwargs: Any) -> Any:
        checked.set()  # the token and the user were accepted; the write comes next
        assert go.wait(timeout=30)
        return read_paste(*args, **kwargs)

    monkeypatch.setattr(logic, "read_paste", held)
    answers: list[requests.Response] = []

    def create() -> None:
        answers.append(
            requests.post(
                f"{app_url}/api/pastes",
                headers=bearer(make_token, user),
                json={"text": "made as she left", "visibility": "unlisted"},
                timeout=60,
            )
        )

    writer = threading.Thread(target=create, daemon=True)
    writer.start()
    try:
        assert checked.wait(timeout=30)
        assert apply_deletions(app, [user.id]) == []
    finally:
        go.set()
        writer.join(timeout=60)
    assert not writer.is_alive() and len(answers) == 1
    assert answers[0].status_code == 403, (answers[0].status_code, answers[0].text[:200])
    assert rows(app, select(Paste.id)) == []
    assert rows(app, select(OutboxRow.id)) == []
