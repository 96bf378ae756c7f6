"""A forged Host header changes no link todo sends: API bodies and headers, pages,
webhook payloads."""

from __future__ import annotations

from sqlalchemy import select

from srcore.webhooks.models import OutboxRow

FORGED = {"Host": "evil.invalid", "X-Forwarded-Host": "evil.invalid"}


def test_forged_host_reaches_no_api_body_page_or_payload(client, app, auth, user, csrf):
    headers = {**auth("todo/trackers:RW todo/tickets:RW"), **FORGED}
    responses = [
        client.post("/api/trackers", json={"name": "bugs"}, headers=headers),
        client.post("/api/trackers/bugs/tickets", json={"title": "One"}, headers=headers),
        client.get("/api/trackers/bugs/tickets/1", headers=headers),
        client.get("/", headers=FORGED),
        client.get("/~alice/bugs", headers=FORGED),
        client.get("/~alice/bugs/1", headers=FORGED),
        client.get("/~alice/bugs/", headers=FORGED),
    ]
    assert [r.status_code for r in responses[:3]] == [201, 201, 200]
    for response in responses:
        assert "evil.invalid" not in response.get_data(as_text=True), response.request.path
        assert "evil.invalid" not in response.headers.get("Location", "")
    with app.extensions["srcore"].db.transaction() as session:
        payloads = [r.payload for r in session.scalars(select(OutboxRow))]
    assert payloads and not any("evil.invalid" in p for p in payloads)
