"""What ``paste:created`` really carries matches the JSON Schema of paste's event catalog
(``GET /api/webhooks/events``)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select

from srcore.webhooks.models import OutboxRow


@pytest.mark.parametrize("visibility", ["public", "unlisted"])
def test_the_emitted_payload_matches_its_catalog_schema(
    app: Any, client: Any, make_token: Any, user: Any, visibility: str
) -> None:
    headers = {"Authorization": f"Bearer {make_token('paste/pastes:RW', user=user)}"}
    body = {"text": "# hi", "format": "markdown", "visibility": visibility}
    assert client.post("/api/pastes", json=body, headers=headers).status_code == 201
    catalog = {e["name"]: e for e in client.get("/api/webhooks/events").get_json()["results"]}
    with app.extensions["srcore"].db.transaction() as session:
        [row] = session.scalars(select(OutboxRow)).all()
        event, payload = row.event, json.loads(row.payload)
    assert event == "paste:created"
    jsonschema.validate(payload, catalog[event]["schema"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "visibility": "secret"}, catalog[event]["schema"])
