"""A service made with ``srcore new-service`` drops what a deleted account kept in it: the
generated package registers an ``on_account_deleted`` hook deleting the account's items,
and its README says so and where to change it. Checked from outside, with a test the
service's author would add, driving srcore's deletion path (what meta's ``delete`` event
runs) on SQLite and PostgreSQL through the generated conftest."""

from __future__ import annotations

import re
from pathlib import Path

from srcore.scaffold.generate import create_service
from tests.conftest import run_probe

#: Alice's and bob's items, then alice's account deleted at meta: hers are gone, his stay.
PROBE = """\
from srcore.auth.deletion import apply_deletions
from srcore.testing import create_user


def test_probe(app, client, user, make_token):
    bob = create_user(app, "bob")
    tokens = {
        who.id: {"Authorization": f"Bearer {make_token('shelf/items:RW', user=who)}"}
        for who in (user, bob)
    }
    made = {}
    for who in (user, bob):
        answer = client.post("/api/items", json={"title": who.username}, headers=tokens[who.id])
        assert answer.status_code == 201, answer.get_data(as_text=True)
        made[who.id] = answer.get_json()["id"]
    assert apply_deletions(app, [user.id]) == []
    as_bob = tokens[bob.id]
    assert client.get(f"/api/items/{made[user.id]}", headers=as_bob).status_code == 404
    assert [i["title"] for i in client.get("/api/items", headers=as_bob).get_json()["results"]] == [
        "bob"
    ]
    newcomer = create_user(app, "alice")
    fresh = {"Authorization": f"Bearer {make_token('shelf/items:RO', user=newcomer)}"}
    assert client.get("/api/items", headers=fresh).get_json()["results"] == []
    from shelf.models import Item
    from sqlalchemy import select

    with app.extensions["srcore"].db.transaction() as session:
        assert list(session.scalars(select(Item.title))) == ["bob"]
"""


def test_a_generated_service_drops_a_deleted_accounts_items(tmp_path: Path) -> None:
    service = create_service("shelf", tmp_path, installed=[]).path
    readme = (service / "README.md").read_text(encoding="utf-8")
    assert "## Deleted accounts" in readme and "on_account_deleted" in readme
    result = run_probe(service, PROBE)
    # Both runs of the probe (SQLite and PostgreSQL) passed, none skipped.
    assert re.search(r"^2 passed\b", result.stdout, re.M), result.stdout[-2000:]
