"""Links come from the configured origin, never from the request's Host header: a request
with a forged Host must not plant its host in an API body, a page, or the webhook payload
every subscriber receives."""

from __future__ import annotations

import json

from sqlalchemy import select

from srcore.webhooks.models import OutboxRow

FORGED = {"Host": "evil.invalid"}


def _origin(app):
    return str(app.extensions["srcore"].section["origin"]).rstrip("/")


def test_api_body_and_webhook_payload_use_the_configured_origin(client, app, make_token, user):
    headers = {"Authorization": f"Bearer {make_token('paste/pastes:RW', user=user)}", **FORGED}
    created = client.post("/api/pastes", json={"text": "hi"}, headers=headers)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["url"] == f"{_origin(app)}/p/{body['id']}"
    assert "evil.invalid" not in created.get_data(as_text=True)
    assert "evil.invalid" not in created.headers.get("Location", "")
    with app.extensions["srcore"].db.transaction() as session:
        payloads = [json.loads(r.payload) for r in session.scalars(select(OutboxRow))]
    assert [p["url"] for p in payloads] == [body["url"]]
    got = client.get(
        f"/api/pastes/{body['id']}",
        headers={"Authorization": headers["Authorization"], **FORGED},
    )
    assert got.get_json()["url"] == body["url"]


def test_pages_carry_no_forged_host(client, app, make_token, user):
    headers = {"Authorization": f"Bearer {make_token('paste/pastes:RW', user=user)}"}
    body = client.post("/api/pastes", json={"text": "hi"}, headers=headers).get_json()
    for path in ("/", f"/p/{body['id']}", "/p/unknownid1"):
        page = client.get(path, headers=FORGED)
        assert "evil.invalid" not in page.get_data(as_text=True), path
        assert "evil.invalid" not in page.headers.get("Location", ""), path
