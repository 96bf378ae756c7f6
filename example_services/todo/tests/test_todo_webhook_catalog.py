"""What todo's events really carry matches the JSON Schema its catalog publishes
(``GET /api/webhooks/events``), for every event it declares."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select

from srcore.webhooks.models import OutboxRow


def test_every_emitted_payload_matches_its_catalog_schema(app, client, auth):
    headers = auth()
    assert client.post("/api/trackers", json={"name": "bugs"}, headers=headers).status_code == 201
    client.patch("/api/trackers/bugs", json={"description": "new"}, headers=headers)
    client.post("/api/trackers/bugs/tickets", json={"title": "Hi"}, headers=headers)
    client.patch(
        "/api/trackers/bugs/tickets/1",
        json={"status": "resolved", "resolution": "fixed"},
        headers=headers,
    )
    client.post("/api/trackers/bugs/tickets/1/comments", json={"text": "Done."}, headers=headers)
    assert client.delete("/api/trackers/bugs", headers=headers).status_code == 204

    catalog = {e["name"]: e for e in client.get("/api/webhooks/events").get_json()["results"]}
    seen: set[str] = set()
    for event, payload in emitted(app):
        jsonschema.validate(payload, catalog[event]["schema"])
        seen.add(event)
    declared = {e.name for e in app.extensions["srcore"].manifest.user_events}
    assert seen == declared
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "id": str(payload["id"])}, catalog[event]["schema"])


def emitted(app: Any) -> list[tuple[str, Any]]:
    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(select(OutboxRow).order_by(OutboxRow.id)).all()
        return [(row.event, json.loads(row.payload)) for row in rows]
