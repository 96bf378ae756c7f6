"""What ``profile:updated`` really carries matches the JSON Schema of meta's event catalog
(``GET /api/webhooks/events``); internal events are not in the catalog."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from sqlalchemy import select

from srcore.webhooks.models import OutboxRow


def test_the_emitted_profile_matches_its_catalog_schema(
    app: Any, client: Any, accounts: Any
) -> None:
    from meta import oauth
    from meta.models import User

    alice = accounts.make("alice", bio="Hello.")
    with app.app_context(), app.extensions["srcore"].db.transaction() as session:
        oauth.on_profile_change(session.get(User, alice.id))
    catalog = {e["name"]: e for e in client.get("/api/webhooks/events").get_json()["results"]}
    assert "revocation:issued" not in catalog and "user:suspended" not in catalog
    with app.extensions["srcore"].db.transaction() as session:
        rows = session.scalars(select(OutboxRow).where(OutboxRow.event == "profile:updated"))
        [payload] = [json.loads(row.payload) for row in rows]
    schema = catalog["profile:updated"]["schema"]
    jsonschema.validate(payload, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**payload, "user_type": "root"}, schema)
